//! A private RabbitMQ node for tests that need broker settings the shared
//! node on :5672 must not have, such as the HTTP auth backend pointed at an
//! olive admin listener.
//!
//! ```ignore
//! let auth = AuthHttp::under(&format!("http://{}/rabbit/auth", admin_addr));
//! let Some(node) = RabbitNode::start(Some(&auth)).await else { return }; // skipped
//! let url = node.amqp_url("alice", "secret");
//! ```
//!
//! The node is the machine's own RabbitMQ (the scripts in
//! `/usr/lib/rabbitmq/bin`, or `$OLIVE_TEST_RABBITMQ_BIN`) run as the current
//! user with everything of its own: node name `olive-test-PID-N@localhost`,
//! loopback AMQP and distribution ports, data, logs, config, enabled-plugins
//! file and Erlang cookie in a temporary directory, and an empty
//! `rabbitmq-env.conf` so `/etc/rabbitmq` is not read. It registers with the
//! running epmd like any node; the shared node is not touched. Only the
//! plugins listed in its own enabled-plugins file start, so no management
//! listener competes for 15672. Debian's `/usr/sbin` wrappers are not used:
//! run as root they `su` to the `rabbitmq` user, who cannot write here.
//!
//! Start-up takes about 4–7 s on two busy cores (Erlang boot and RabbitMQ's boot
//! steps); the node is ready when its AMQP port accepts, which RabbitMQ opens
//! as its last boot step. Drop stops it with `rabbitmqctl stop`, waits for the
//! VM to halt (about 2 s in all) and then kills its process group.
//!
//! # What the HTTP auth backend sends (RabbitMQ 3.10.8)
//!
//! `auth_http.http_method = post` is set, so each check is a `POST` with
//! `content-type: application/x-www-form-urlencoded`; the answer is a 200
//! whose body is `allow` (for `user_path`, optionally followed by tags:
//! `allow management`) or `deny`. Observed bodies, in order, for a client
//! that logs in, declares a topic exchange, publishes, and binds a queue
//! (what `tests/rabbit_auth_harness.rs` does and checks):
//!
//! ```text
//! user_path      username=alice&password=secret
//! vhost_path     username=alice&vhost=%2F&ip=127.0.0.1&tags=
//! resource_path  username=alice&vhost=%2F&resource=exchange&name=olive.test&permission=configure&tags=
//! resource_path  username=alice&vhost=%2F&resource=exchange&name=olive.test&permission=write&tags=
//! topic_path     username=alice&vhost=%2F&resource=topic&name=olive.test&permission=write&tags=
//!                &routing_key=olive.demo.x&variable_map.username=alice&variable_map.vhost=%2F
//! resource_path  username=alice&vhost=%2F&resource=queue&name=amq.gen-...&permission=configure&tags=
//! resource_path  username=alice&vhost=%2F&resource=queue&name=amq.gen-...&permission=write&tags=
//! resource_path  username=alice&vhost=%2F&resource=exchange&name=olive.test&permission=read&tags=
//! topic_path     username=alice&vhost=%2F&resource=topic&name=olive.test&permission=read&tags=
//!                &routing_key=olive.demo.%23&variable_map.username=alice&variable_map.vhost=%2F
//! ```
//!
//! `resource` is `exchange` or `queue`; `permission` is `configure`, `write`
//! or `read`; `tags` is the user's tags, what `user_path` answered after
//! `allow`. A `topic` check is made only for topic exchanges: on publish
//! (`write`, the message's routing key; a `deny` closes the channel with
//! 403 ACCESS_REFUSED) and on binding a queue (`read`, the binding key).
//! `variable_map.*` are the values RabbitMQ would substitute into
//! `{username}`/`{vhost}` patterns. With `auth_backends.1 = internal` first,
//! a login the internal backend accepts (`guest`/`guest`) never reaches the
//! HTTP backend; every other login does. Nothing is cached unless
//! `rabbitmq_auth_backend_cache` is enabled: every check is a request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a node may take to accept AMQP connections. Measured: 4–7 s
/// on two busy cores; this leaves room for a loaded CI machine.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(45);

/// How long Drop waits for `rabbitmqctl stop` before killing the node.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How long Drop waits, after `rabbitmqctl stop` returns, for the VM to
/// exit before killing what is left.
const HALT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where `rabbitmq_auth_backend_http` sends its four checks.
#[derive(Debug, Clone)]
pub struct AuthHttp {
    pub user: String,
    pub vhost: String,
    pub resource: String,
    pub topic: String,
}

impl AuthHttp {
    /// `{base}/user`, `{base}/vhost`, `{base}/resource`, `{base}/topic`.
    pub fn under(base: &str) -> AuthHttp {
        let base = base.trim_end_matches('/');
        AuthHttp {
            user: format!("{base}/user"),
            vhost: format!("{base}/vhost"),
            resource: format!("{base}/resource"),
            topic: format!("{base}/topic"),
        }
    }
}

/// A running private RabbitMQ node, stopped on drop.
pub struct RabbitNode {
    /// `olive-test-PID-N@localhost`.
    pub name: String,
    pub amqp_port: u16,
    pub dist_port: u16,
    /// How long the node took to accept AMQP connections.
    pub startup: Duration,
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Child,
}

impl RabbitNode {
    /// Starts a node (with the HTTP auth backend after the internal one if
    /// `auth_http` is given) and waits until it accepts AMQP connections.
    /// `None` when RabbitMQ is not installed: the test is skipped, except
    /// under `CI=true`, where this panics. A node that is installed but
    /// fails to start always panics, with its log.
    pub async fn start(auth_http: Option<&AuthHttp>) -> Option<RabbitNode> {
        let bin = rabbitmq_bin()?;
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name =
            format!("olive-test-{}-{}@localhost", std::process::id(), COUNT.fetch_add(1, Ordering::SeqCst));
        let amqp_port = free_port(u16::MAX);
        // The CLI dials from dist port + 10000..=10010, which must stay
        // a valid port.
        let dist_port = free_port(55_000);
        let dir = tempfile::Builder::new().prefix("olive-rabbit").tempdir().unwrap();
        write_files(dir.path(), auth_http);

        let log = std::fs::File::create(dir.path().join("server.out")).unwrap();
        let mut cmd = Command::new(bin.join("rabbitmq-server"));
        node_env(&mut cmd, dir.path(), &name, dist_port);
        cmd.env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", amqp_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.path().join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.path().join("log"))
            .env("RABBITMQ_CONFIG_FILE", dir.path().join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.path().join("enabled_plugins"))
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-kernel inet_dist_use_interface {127,0,0,1}")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Its own process group, so Drop can take down the script, the
        // Erlang VM and its helpers together.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);

        let started = Instant::now();
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut node = RabbitNode { name, amqp_port, dist_port, startup: Duration::ZERO, bin, dir, child };
        let addr = SocketAddr::from(([127, 0, 0, 1], amqp_port));
        loop {
            if let Some(status) = node.child.try_wait().unwrap() {
                panic!("RabbitMQ node {} exited during start-up ({status}):\n{}", node.name, node.log_tail());
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                panic!(
                    "RabbitMQ node {} did not accept AMQP on {addr} within {STARTUP_TIMEOUT:?}:\n{}",
                    node.name,
                    node.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node.startup = started.elapsed();
        Some(node)
    }

    /// `amqp://user:password@127.0.0.1:PORT/%2f` (no escaping: keep test
    /// credentials URL-safe).
    pub fn amqp_url(&self, user: &str, password: &str) -> String {
        format!("amqp://{user}:{password}@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// Runs `rabbitmqctl -n NODE args...` with this node's cookie.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_command(args).output().unwrap()
    }

    fn ctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin.join("rabbitmqctl"));
        node_env(&mut cmd, self.dir.path(), &self.name, self.dist_port);
        cmd.arg("-n").arg(&self.name).args(args).stdin(Stdio::null());
        cmd
    }

    /// The last lines of the start-up output and the node's log.
    pub fn log_tail(&self) -> String {
        let tail = |path: PathBuf| {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            format!("== {}\n{}\n", path.display(), lines[lines.len().saturating_sub(40)..].join("\n"))
        };
        let node_log = self.dir.path().join("log").join(format!("{}.log", self.name));
        tail(self.dir.path().join("server.out")) + &tail(node_log)
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        if let Ok(mut stop) = self.ctl_command(&["stop"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn()
        {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while stop.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = stop.kill();
            let _ = stop.wait();
            // `stop` returns as the VM begins to halt; let it finish.
            let deadline = Instant::now() + HALT_TIMEOUT;
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Whatever is left of the node's own process group (the group id is
        // the pid of the process this harness spawned).
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.child.wait();
    }
}

/// The directory holding `rabbitmq-server` and `rabbitmqctl`; `None` (skip)
/// or a panic under `CI=true` when there is none.
fn rabbitmq_bin() -> Option<PathBuf> {
    let candidates = match std::env::var_os("OLIVE_TEST_RABBITMQ_BIN") {
        Some(dir) if !dir.is_empty() => vec![PathBuf::from(dir)],
        _ => vec![PathBuf::from("/usr/lib/rabbitmq/bin")],
    };
    if let Some(dir) = candidates.into_iter().find(|d| d.join("rabbitmq-server").is_file()) {
        return Some(dir);
    }
    let why = "no rabbitmq-server in $OLIVE_TEST_RABBITMQ_BIN or /usr/lib/rabbitmq/bin";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true: a private RabbitMQ node is required: {why}");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}; set CI=true to fail instead");
    None
}

/// A port that was free a moment ago on every address, below `max`.
///
/// Probed on 0.0.0.0, not 127.0.0.1: RabbitMQ's start-up check of the
/// distribution port binds it on all addresses, and on this machine a port
/// free on loopback was taken elsewhere about 70% of the time (the node then
/// exits with `dist_port_already_used ... not_erlang`). Nothing listens; the
/// socket is closed at once.
fn free_port(max: u16) -> u16 {
    loop {
        let port = std::net::TcpListener::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port();
        if port < max {
            return port;
        }
    }
}

/// What both the server and the CLI need to find and talk to the node.
fn node_env(cmd: &mut Command, dir: &Path, name: &str, dist_port: u16) {
    // Erlang reads the cookie from $HOME/.erlang.cookie, and writes any
    // erl_crash.dump into the working directory: both stay in the node's dir.
    cmd.current_dir(dir)
        .env("HOME", dir)
        .env("ERL_CRASH_DUMP", dir.join("erl_crash.dump"))
        .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
        .env("RABBITMQ_NODENAME", name)
        .env("RABBITMQ_DIST_PORT", dist_port.to_string());
}

fn write_files(dir: &Path, auth_http: Option<&AuthHttp>) {
    use std::os::unix::fs::PermissionsExt;
    let cookie = dir.join(".erlang.cookie");
    let secret: String = std::iter::repeat_with(fastrand::uppercase).take(20).collect();
    std::fs::write(&cookie, secret).unwrap();
    // Erlang refuses a cookie file others can read.
    std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400)).unwrap();
    std::fs::write(dir.join("rabbitmq-env.conf"), "").unwrap();

    let mut conf = String::from("log.console = false\nlog.file.level = info\n");
    let plugins = match auth_http {
        None => "[].\n",
        Some(auth) => {
            conf += &format!(
                "auth_backends.1 = internal\n\
                 auth_backends.2 = http\n\
                 auth_http.http_method = post\n\
                 auth_http.user_path = {}\n\
                 auth_http.vhost_path = {}\n\
                 auth_http.resource_path = {}\n\
                 auth_http.topic_path = {}\n",
                auth.user, auth.vhost, auth.resource, auth.topic
            );
            "[rabbitmq_auth_backend_http].\n"
        }
    };
    std::fs::write(dir.join("rabbitmq.conf"), conf).unwrap();
    std::fs::write(dir.join("enabled_plugins"), plugins).unwrap();
}
