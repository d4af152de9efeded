//! The `olive` command line: `serve`, `check`, `token` and `dev-cert`, and
//! the live clients `tail` and `post` (one module each, sharing [`client`]).

pub mod client;
pub mod post;
pub mod tail;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::auth::grants::RawGrants;
use crate::auth::token::Mint;
use crate::config::Config;
use crate::edge::{self, Server};

#[derive(Debug, Parser)]
#[command(
    name = "olive",
    version,
    about = "The live-update edge for Django sites",
    after_help = "Usage errors exit 1. `olive tail --help` and `olive post --help` list the exit codes of the live clients."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve {
        #[arg(long, short, default_value = "config/olive.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file (like `nginx -t`): exit 0, or print
    /// every error with its field and exit 1.
    Check {
        #[arg(long, short, default_value = "config/olive.toml")]
        config: PathBuf,
    },
    /// Print a token signed with the configured key (the first
    /// [[auth.key]], or --kid), for tests and operators.
    Token {
        #[arg(long, short, default_value = "config/olive.toml")]
        config: PathBuf,
        /// The subject: the Django user id.
        #[arg(long)]
        user: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// The RabbitMQ user name the token logs in as.
        #[arg(long)]
        amqp_user: Option<String>,
        /// Key pattern the token may subscribe to (repeatable).
        #[arg(long = "subscribe", value_name = "PATTERN")]
        subscribe: Vec<String>,
        /// Key pattern the token may publish on (repeatable).
        #[arg(long = "publish", value_name = "PATTERN")]
        publish: Vec<String>,
        /// Key pattern the token may see presence of (repeatable).
        #[arg(long = "presence", value_name = "PATTERN")]
        presence: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 600)]
        ttl: u64,
        /// Sign with this key instead of the first.
        #[arg(long)]
        kid: Option<String>,
        /// PEM private key, for RS256, ES256 and EdDSA keys (olive's config
        /// holds only their public halves).
        #[arg(long)]
        private_key: Option<PathBuf>,
    },
    /// Write a self-signed certificate for local development.
    DevCert {
        #[arg(long, default_value = "certs/dev-cert.pem")]
        cert: PathBuf,
        #[arg(long, default_value = "certs/dev-key.pem")]
        key: PathBuf,
        /// Names the certificate is valid for (default: localhost, 127.0.0.1, ::1).
        #[arg(long = "name")]
        names: Vec<String>,
    },
    /// Print the live messages on keys or patterns as they arrive.
    #[command(after_help = client::EXIT_CODES)]
    Tail(tail::Args),
    /// Publish one message on a key and print its id once olive acked it.
    #[command(after_help = client::EXIT_CODES)]
    Post(post::Args),
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            let config = load(&config)?;
            crate::ops::log::init(config.server.log_format, &config.server.log_level);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(async {
                let server = Server::bind(config).await?;
                tokio::spawn(std::sync::Arc::new(server.reloader()).on_sighup());
                let shutdown = tokio_util::sync::CancellationToken::new();
                let trigger = shutdown.clone();
                tokio::spawn(async move {
                    edge::termination_signal().await;
                    trigger.cancel();
                });
                server.run(shutdown).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Token {
            config,
            user,
            name,
            amqp_user,
            subscribe,
            publish,
            presence,
            ttl,
            kid,
            private_key,
        } => {
            let config = load(&config)?;
            let pem = match &private_key {
                Some(path) => {
                    Some(std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?)
                }
                None => None,
            };
            let grants = RawGrants { subscribe, publish, presence };
            let mint = Mint { user, name, amqp_user, grants, ttl: std::time::Duration::from_secs(ttl) };
            let token = crate::auth::token::mint(&config.auth, kid.as_deref(), pem.as_deref(), &mint)?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::DevCert { cert, key, names } => {
            edge::tls::write_self_signed(&cert, &key, &names)?;
            println!("wrote {} and {}", cert.display(), key.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Tail(args) => Ok(client::block_on(tail::run(args))),
        Command::Post(args) => Ok(client::block_on(post::run(args))),
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}
