//! olive: the live-update edge for Django sites.
//!
//! One process at the public edge: TLS termination, a reverse proxy to
//! Django, static files and websocket tunnels. The modules follow the parts
//! of the design: [`config`] (what to do), [`auth`] (who may do what), [`router`] (which route serves a
//! request), [`edge`] (listeners, TLS, the per-request entry point and
//! shutdown), [`proxy`] (upstreams and tunnels), [`static_files`],
//! [`compress`], [`live`] (the live hub), [`ops`] (logs) and [`cli`].
#![forbid(unsafe_code)]

pub mod auth;
pub mod body;
pub mod broker;
pub mod cli;
pub mod compress;
pub mod config;
pub mod edge;
pub mod limit;
pub mod live;
pub mod ops;
pub mod proxy;
pub mod router;
pub mod static_files;
