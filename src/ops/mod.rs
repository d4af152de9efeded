//! Operations: logging set-up, the access log, health and readiness.

pub mod access;
pub mod health;
pub mod log;
