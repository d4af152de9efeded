//! Operations: logging set-up and the access log.

pub mod access;
pub mod log;
