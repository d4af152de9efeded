//! Operations: logging set-up, the access log, health and readiness,
//! metrics, the live status page, and configuration reload (SIGHUP).

pub mod access;
pub mod health;
pub mod log;
pub mod metrics;
pub mod reload;
pub mod status;
