//! SIGHUP: reload the configuration file and the certificates it names,
//! without dropping a connection.
//!
//! A reload reads the file olive started from, validates it as
//! `olive check` does, loads every certificate pair, and only when all of
//! that succeeded swaps in the new certificates (for new handshakes) and
//! the new [`Site`] (routes, upstreams, `[router]`, `server.access_log`,
//! `server.trusted_proxies`) for new requests. Open connections,
//! websockets, SSE streams and tunnels are not touched. A file that fails
//! is refused whole: the error is logged, `olive_config_reloads_total
//! {result="error"}` counts it, and the running configuration stays.
//!
//! Everything else is read once at start-up (sockets are bound, the
//! broker connected, worker threads started, limits built into every
//! connection), so a change there is logged as needing a restart and
//! keeps its old value; the rest of the file is still applied.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::config::{Config, ConfigError, FieldError};
use crate::edge::App;
use crate::edge::site::Site;
use crate::edge::tls::{Certificates, TlsError};

/// Top-level tables a reload applies; `[server]` is split by key
/// ([`RELOADABLE_SERVER_KEYS`]). A change anywhere else needs a restart.
pub const RELOADABLE: &[&str] = &["route", "upstream", "certificate", "router"];

/// The `[server]` keys a reload applies.
pub const RELOADABLE_SERVER_KEYS: &[&str] = &["access_log", "trusted_proxies"];

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    #[error("loading TLS certificates: {0}")]
    Tls(#[from] TlsError),
}

/// What a reload applied.
#[derive(Debug)]
pub struct Reloaded {
    pub routes: usize,
    pub upstreams: usize,
    /// Settings that changed but keep their old value until a restart
    /// (`listener`, `live`, `server.workers`, ...).
    pub needs_restart: Vec<String>,
}

/// Reloads a running server's configuration ([`Reloader::reload`], or
/// on every SIGHUP with [`Reloader::on_sighup`]).
pub struct Reloader {
    app: Arc<App>,
    /// `None` when no listener speaks TLS.
    certificates: Option<Arc<Certificates>>,
    /// The file as last applied, to tell what changed.
    applied: Mutex<toml::Table>,
}

impl Reloader {
    pub fn new(app: Arc<App>, certificates: Option<Arc<Certificates>>) -> Reloader {
        let applied = read_table(&app.config.source);
        Reloader { app, certificates, applied: Mutex::new(applied) }
    }

    /// Reloads the file olive started from; on error nothing changed.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let path = &self.app.config.source;
        // Read once: what is applied and what is compared for restart-only
        // changes are the same text.
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_file: path.clone(),
            errors: vec![FieldError { field: "(file)".into(), message: e.to_string() }],
        })?;
        let new = Config::parse(&text, path)?;
        if let Some(certificates) = &self.certificates {
            certificates.replace(&new.certificates)?;
        }
        let previous = self.app.site();
        let site =
            Site::new(&self.app.config, &new, Some(&previous), &self.app.metrics.requests, self.app.workers);
        self.app.replace_site(site);
        let table = text.parse().unwrap_or_default();
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let needs_restart = restart_only_changes(&applied, &table);
        *applied = table;
        Ok(Reloaded { routes: new.routes.len(), upstreams: new.upstreams.len(), needs_restart })
    }

    /// Reloads, logs the outcome and counts it.
    pub fn reload_and_log(&self) {
        let source = self.app.config.source.display().to_string();
        match self.reload() {
            Ok(done) => {
                self.app.metrics.reloaded(true);
                tracing::info!(file = %source, routes = done.routes, upstreams = done.upstreams, "configuration reloaded");
                if !done.needs_restart.is_empty() {
                    tracing::warn!(
                        settings = %done.needs_restart.join(", "),
                        "these settings changed but need a restart; they keep their old values"
                    );
                }
            }
            Err(e) => {
                self.app.metrics.reloaded(false);
                tracing::error!(file = %source, error = %e, "configuration reload refused; the running configuration stays");
            }
        }
    }

    /// Reloads on every SIGHUP, until the process ends.
    pub async fn on_sighup(self: Arc<Self>) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install the SIGHUP handler: reload needs a restart");
                return;
            }
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            let reloader = self.clone();
            // File reads and key parsing: off the runtime's threads.
            let _ = tokio::task::spawn_blocking(move || reloader.reload_and_log()).await;
        }
    }
}

/// The file as a TOML table, or an empty one if it cannot be read (it
/// was just validated, so that is a race with an editor at worst).
fn read_table(path: &Path) -> toml::Table {
    std::fs::read_to_string(path).ok().and_then(|text| text.parse().ok()).unwrap_or_default()
}

/// The settings outside [`RELOADABLE`] that differ between two files:
/// top-level table names, and `server.KEY` for `[server]`.
pub fn restart_only_changes(old: &toml::Table, new: &toml::Table) -> Vec<String> {
    let mut changed = Vec::new();
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        if RELOADABLE.contains(&name.as_str()) {
            continue;
        }
        if name == "server" {
            let empty = toml::Table::new();
            let table = |t: &toml::Table| {
                t.get("server").and_then(|v| v.as_table()).cloned().unwrap_or_else(|| empty.clone())
            };
            let (old, new) = (table(old), table(new));
            let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                if !RELOADABLE_SERVER_KEYS.contains(&key.as_str()) && old.get(key) != new.get(key) {
                    changed.push(format!("server.{key}"));
                }
            }
        } else if old.get(name) != new.get(name) {
            changed.push(name.clone());
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_needs_a_restart() {
        let table = |s: &str| s.parse::<toml::Table>().unwrap();
        let old = table(
            "[server]\nworkers = 2\naccess_log = true\n[[listener]]\nname = \"a\"\n[[route]]\npath = \"/\"\n[live]\nbroker = \"memory\"\n",
        );
        for (new, want) in [
            // Routes, access_log and certificates are applied.
            (
                "[server]\nworkers = 2\naccess_log = false\n[[listener]]\nname = \"a\"\n[[route]]\npath = \"/x\"\n[[certificate]]\ncert = \"c\"\n[live]\nbroker = \"memory\"\n",
                vec![],
            ),
            // Workers, a listener and the broker are not.
            (
                "[server]\nworkers = 4\n[[listener]]\nname = \"b\"\n[live]\nbroker = \"amqp\"\n",
                vec!["listener", "live", "server.workers"],
            ),
            // A table that appears or goes away counts.
            (
                "[server]\nworkers = 2\n[[listener]]\nname = \"a\"\n[live]\nbroker = \"memory\"\n[limits]\nmax_connections = 9\n",
                vec!["limits"],
            ),
            ("[[listener]]\nname = \"a\"\n[live]\nbroker = \"memory\"\n", vec!["server.workers"]),
        ] {
            assert_eq!(restart_only_changes(&old, &table(new)), want, "{new}");
        }
    }
}
