//! Operations: logging set-up, the access log, health and readiness,
//! metrics, and configuration reload (SIGHUP).

pub mod access;
pub mod health;
pub mod log;
pub mod metrics;
pub mod reload;
