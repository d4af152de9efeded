//! A tiny, fast HTTP/1.1 upstream for the proxy benchmark (`bench/proxy.sh`).
//!
//! Every request gets `200 OK` with a small fixed `text/plain` body, over
//! keep-alive connections. It does as little as possible so that the numbers
//! measure the proxy in front of it, not the upstream.
//!
//! ```text
//! cargo run --release --example bench_upstream -- --bind 127.0.0.1:18000 [--body-bytes 13]
//! ```
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const DEFAULT_BIND: &str = "127.0.0.1:8000";
const DEFAULT_BODY: &[u8] = b"hello, world\n";

struct Args {
    bind: SocketAddr,
    body: Bytes,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut bind: SocketAddr = DEFAULT_BIND.parse()?;
    let mut body = Bytes::from_static(DEFAULT_BODY);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bind" => {
                let value = args.next().context("--bind needs an address")?;
                bind = value.parse().with_context(|| format!("--bind {value}"))?;
            }
            "--body-bytes" => {
                let value = args.next().context("--body-bytes needs a number")?;
                let n: usize = value.parse().with_context(|| format!("--body-bytes {value}"))?;
                // Repeat the default text so that any size is still readable.
                body = DEFAULT_BODY.iter().copied().cycle().take(n).collect::<Vec<u8>>().into();
            }
            "-h" | "--help" => {
                println!("usage: bench_upstream [--bind ADDR] [--body-bytes N]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(Args { bind, body })
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.bind).await.with_context(|| format!("bind {}", args.bind))?;
    eprintln!("bench_upstream listening on {} ({} byte body)", args.bind, args.body.len());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Running out of file descriptors is transient: keep serving.
                eprintln!("accept: {err}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let body = args.body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req: Request<Incoming>| {
                let response = Response::builder()
                    .header(header::CONTENT_TYPE, "text/plain")
                    .body(Full::new(body.clone()))
                    .expect("static response parts are valid");
                async move { Ok::<_, Infallible>(response) }
            });
            // Client resets are normal at the end of a wrk run: not worth a line.
            let _ =
                http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
