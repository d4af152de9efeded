//! Operations: logging set-up, the access log, health and readiness,
//! metrics.

pub mod access;
pub mod health;
pub mod log;
pub mod metrics;
