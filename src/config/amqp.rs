//! The validated `[live.amqp]` settings: the RabbitMQ URL resolved from
//! wherever the file said it lives, and the topology and timing knobs
//! checked against AMQP's limits.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use lapin::uri::{AMQPScheme, AMQPUri};

use super::Validator;
use super::file::{self, LiveAmqp};

/// AMQP names (exchanges, queues) are short strings: at most 255 bytes.
const MAX_NAME_BYTES: usize = 255;
/// Room the queue name needs after the prefix (`.` and a random suffix).
const QUEUE_SUFFIX_BYTES: usize = 17;

/// What the AMQP broker needs to run.
#[derive(Clone)]
pub struct Amqp {
    /// `amqp://user:password@host:port/vhost`; a secret.
    pub url: String,
    /// The durable topic exchange shared by every node.
    pub exchange: String,
    /// Each node's queue is `{queue_prefix}.{node id}` (random per start).
    pub queue_prefix: String,
    /// Shown by `rabbitmqctl list_connections client_properties`.
    pub connection_name: String,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub connect_timeout: Duration,
    pub confirm_timeout: Duration,
    /// RabbitMQ deletes a node's queue after it had no consumer this long
    /// (`x-expires`).
    pub queue_expires: Duration,
    /// Unacked deliveries RabbitMQ sends the node at most (`basic.qos`).
    pub prefetch: u16,
}

impl Amqp {
    /// The defaults of `[live.amqp]` with this URL (tests, embedding).
    pub fn new(url: impl Into<String>) -> Amqp {
        let d = LiveAmqp::default();
        Amqp {
            url: url.into(),
            exchange: d.exchange,
            queue_prefix: d.queue_prefix,
            connection_name: "olive".into(),
            reconnect_min: d.reconnect_min,
            reconnect_max: d.reconnect_max,
            connect_timeout: d.connect_timeout,
            confirm_timeout: d.confirm_timeout,
            queue_expires: d.queue_expires,
            prefetch: d.prefetch,
        }
    }
}

/// By hand, so that the password in `url` never reaches a log line.
impl fmt::Debug for Amqp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Amqp")
            .field("url", &"<redacted>")
            .field("exchange", &self.exchange)
            .field("queue_prefix", &self.queue_prefix)
            .field("connection_name", &self.connection_name)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("connect_timeout", &self.connect_timeout)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("queue_expires", &self.queue_expires)
            .field("prefetch", &self.prefetch)
            .finish()
    }
}

impl Validator<'_> {
    pub(super) fn amqp(&mut self, a: &LiveAmqp) -> Amqp {
        const F: &str = "live.amqp";
        let url = self.amqp_url(a);
        if a.exchange.is_empty() || a.exchange.len() > MAX_NAME_BYTES {
            self.error(format!("{F}.exchange"), format!("must be 1 to {MAX_NAME_BYTES} bytes"));
        } else if a.exchange.starts_with("amq.") {
            // RabbitMQ reserves the prefix and refuses to declare such names.
            self.error(format!("{F}.exchange"), "names starting with \"amq.\" are reserved");
        }
        let max_prefix = MAX_NAME_BYTES - QUEUE_SUFFIX_BYTES;
        if a.queue_prefix.is_empty() || a.queue_prefix.len() > max_prefix {
            self.error(format!("{F}.queue_prefix"), format!("must be 1 to {max_prefix} bytes"));
        } else if a.queue_prefix.starts_with("amq.") {
            self.error(format!("{F}.queue_prefix"), "names starting with \"amq.\" are reserved");
        }
        if a.reconnect_min.is_zero() {
            self.error(format!("{F}.reconnect_min"), "must be greater than 0");
        }
        if a.reconnect_min > a.reconnect_max {
            self.error(format!("{F}.reconnect_max"), "must not be less than live.amqp.reconnect_min");
        }
        for (field, value) in [("connect_timeout", a.connect_timeout), ("confirm_timeout", a.confirm_timeout)]
        {
            if value.is_zero() {
                self.error(format!("{F}.{field}"), "must be greater than 0");
            }
        }
        // The queue must outlast a reconnect, or what was routed to it
        // meanwhile is lost; x-expires is whole milliseconds, at least 1.
        if a.queue_expires <= a.reconnect_max + a.connect_timeout {
            self.error(
                format!("{F}.queue_expires"),
                "must be longer than live.amqp.reconnect_max plus live.amqp.connect_timeout",
            );
        }
        if a.prefetch == 0 {
            self.error(format!("{F}.prefetch"), "must be greater than 0");
        }
        Amqp {
            url: url.unwrap_or_default(),
            exchange: a.exchange.clone(),
            queue_prefix: a.queue_prefix.clone(),
            connection_name: "olive".into(),
            reconnect_min: a.reconnect_min,
            reconnect_max: a.reconnect_max,
            connect_timeout: a.connect_timeout,
            confirm_timeout: a.confirm_timeout,
            queue_expires: a.queue_expires,
            prefetch: a.prefetch,
        }
    }

    /// The URL from exactly one of `url`, `url_env`, `url_file` (or the
    /// default), checked to be an AMQP URL this build can connect to.
    /// Messages never repeat the URL: it holds a password.
    fn amqp_url(&mut self, a: &LiveAmqp) -> Option<String> {
        let given = [a.url.is_some(), a.url_env.is_some(), a.url_file.is_some()];
        if given.iter().filter(|&&g| g).count() > 1 {
            self.error("live.amqp.url", "set at most one of url, url_env, url_file");
            return None;
        }
        let (field, url) = if let Some(url) = &a.url {
            ("live.amqp.url", url.clone())
        } else if let Some(name) = &a.url_env {
            match (self.env)(name) {
                Some(url) => ("live.amqp.url_env", url),
                None => {
                    self.error("live.amqp.url_env", format!("environment variable {name:?} is not set"));
                    return None;
                }
            }
        } else if let Some(path) = &a.url_file {
            let path: PathBuf = self.path(path.clone());
            match std::fs::read_to_string(&path) {
                // A trailing newline from `echo url > file` is not part of it.
                Ok(text) => ("live.amqp.url_file", text.trim().to_owned()),
                Err(e) => {
                    self.error("live.amqp.url_file", format!("{}: {e}", path.display()));
                    return None;
                }
            }
        } else {
            ("live.amqp.url", file::DEFAULT_AMQP_URL.to_owned())
        };
        match url.parse::<AMQPUri>() {
            Ok(uri) if uri.scheme == AMQPScheme::AMQPS => {
                self.error(field, "amqps:// needs TLS, which this build of olive does not include for AMQP");
                None
            }
            Ok(_) => Some(url),
            Err(_) => {
                self.error(field, "not an amqp://user:password@host:port/vhost URL");
                None
            }
        }
    }
}
