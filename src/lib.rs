//! olive: the live-update edge for Django sites.
//!
//! One process at the public edge: TLS termination, a reverse proxy to
//! Django, static files and websocket tunnels. The modules follow the parts
//! of the design: [`config`] (what to do), [`router`] (which route serves a
//! request), [`edge`] (listeners, TLS, the per-request entry point and
//! shutdown), [`proxy`] (upstreams), [`static_files`], and [`ops`] (logs).
#![forbid(unsafe_code)]

pub mod body;
pub mod config;
pub mod static_files;
