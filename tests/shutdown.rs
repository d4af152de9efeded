//! Graceful shutdown: in-flight requests finish, new connections are
//! refused, the drain is bounded by `server.drain_timeout`, and tunnels
//! close; and a real process under load, SIGTERMed, finishes every
//! request it had accepted (`tests/deploy.rs` covers the same with a new
//! process taking over the port).

mod common;

use std::time::{Duration, Instant};

use common::{Olive, Upstream, WsEcho, client, proxy_config, text};
use futures_util::StreamExt;

/// Waits until connecting to `addr` is refused (the listening socket has
/// closed), for up to a second.
async fn until_refused(addr: std::net::SocketAddr) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return started.elapsed(),
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    panic!("{addr} still accepts connections a second after shutdown began");
}

#[tokio::test]
async fn in_flight_requests_finish_and_new_connections_are_refused() {
    let up = Upstream::start(|seen| async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        text(200, &format!("slow {}", seen.uri.path()))
    })
    .await;
    let olive = Olive::start(&proxy_config(up.addr, "drain_timeout = \"5s\"")).await;
    let addr = olive.addr("http");
    let url = olive.url("http", "/report");
    let in_flight = tokio::spawn(async move { client().get(url).send().await });
    // Let the request reach the upstream before the drain starts.
    for _ in 0..100 {
        if !up.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(up.requests().len(), 1);

    olive.begin_shutdown();
    until_refused(addr).await;
    assert!(!in_flight.is_finished(), "the in-flight request ended before its upstream answered");

    let resp = tokio::time::timeout(Duration::from_secs(3), in_flight).await.unwrap().unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "slow /report");
    tokio::time::timeout(Duration::from_secs(2), olive.stop()).await.expect("the drain did not finish");
}

#[tokio::test]
async fn an_idle_server_stops_at_once() {
    let up = Upstream::echo().await;
    let olive = Olive::start(&proxy_config(up.addr, "")).await;
    assert_eq!(client().get(olive.url("http", "/")).send().await.unwrap().status(), 200);
    let started = Instant::now();
    // The kept-alive client connection above is idle: it does not hold the drain.
    tokio::time::timeout(Duration::from_secs(2), olive.stop()).await.expect("the drain did not finish");
    assert!(started.elapsed() < Duration::from_secs(1), "stopping took {:?}", started.elapsed());
}

#[tokio::test]
async fn the_drain_ends_at_the_drain_timeout() {
    let up = Upstream::start(|_| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        text(200, "never")
    })
    .await;
    let olive = Olive::start(&proxy_config(up.addr, "drain_timeout = \"300ms\"")).await;
    let url = olive.url("http", "/stuck");
    let in_flight = tokio::spawn(async move { client().get(url).send().await });
    for _ in 0..100 {
        if !up.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(up.requests().len(), 1);

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), olive.stop()).await.expect("the drain outlived its timeout");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250), "the drain gave up after {took:?}");
    assert!(took < Duration::from_secs(2), "the drain took {took:?}");

    // What was still open when the timeout passed is dropped, not left
    // running behind a server that has returned.
    let outcome = tokio::time::timeout(Duration::from_secs(2), in_flight)
        .await
        .expect("the stuck request's connection outlived the drain timeout")
        .unwrap();
    assert!(outcome.is_err(), "{outcome:?}");
}

#[tokio::test]
async fn open_tunnels_close_when_shutdown_begins() {
    let up = WsEcho::start().await;
    let config = format!(
        r#"
[server]
access_log = false
drain_timeout = "5s"

[[listener]]
name = "http"
kind = "http"
bind = "127.0.0.1:0"

[[upstream]]
name = "channels"
addresses = ["{}"]

[[route]]
path = "/ws/"
tunnel.upstream = "channels"
"#,
        up.addr
    );
    let olive = Olive::start(&config).await;
    let tcp = tokio::net::TcpStream::connect(olive.addr("http")).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("ws://x/ws/live", tcp).await.unwrap();

    let started = Instant::now();
    olive.begin_shutdown();
    let end = tokio::time::timeout(Duration::from_secs(2), ws.next()).await.expect("the tunnel stayed open");
    assert!(matches!(end, None | Some(Err(_))), "{end:?}");
    tokio::time::timeout(Duration::from_secs(2), olive.stop()).await.expect("the drain did not finish");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    for _ in 0..100 {
        if up.ended.load(std::sync::atomic::Ordering::SeqCst) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the upstream side of the tunnel stayed open");
}

/// SIGTERM to a real `olive serve` under load: every request olive had
/// accepted before the signal completes (issue 7, "faults without loss").
/// Forty GETs are waiting on a slow upstream, and four POSTs are half
/// way through sending their bodies, which go on arriving after the
/// signal; all of them get their whole answer, new connections are
/// refused, and olive exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_every_accepted_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const GETS: usize = 40;
    const POSTS: usize = 4;
    const BODY: usize = 20_000;
    let up = Upstream::start(|seen| async move {
        tokio::time::sleep(Duration::from_millis(300 + fastrand::u64(..700))).await;
        text(200, &format!("{} {}", seen.uri.path(), seen.body.len()))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut olive = common::process::OliveProcess::start(
        dir.path(),
        &proxy_config(
            up.addr,
            "drain_timeout = \"10s\"\n[rate_limits]\nhttp_per_ip = 0\nconnects_per_ip = 0",
        ),
    )
    .await;
    let addr = olive.addr("http");

    let http = client();
    let gets: Vec<_> =
        (0..GETS).map(|i| tokio::spawn(http.get(format!("http://{addr}/get/{i}")).send())).collect();
    let mut posts = Vec::new();
    for i in 0..POSTS {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!("POST /post/{i} HTTP/1.1\r\nhost: x\r\ncontent-length: {BODY}\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(&[b'p'; BODY / 2]).await.unwrap();
        posts.push(tcp);
    }
    for _ in 0..200 {
        if up.requests().len() == GETS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.requests().len(), GETS, "the GETs are in flight before the signal");

    olive.signal("TERM").await;
    until_refused(addr).await;
    // The rest of the bodies, after the signal.
    let posts: Vec<_> = posts
        .into_iter()
        .map(|mut tcp| {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                tcp.write_all(&[b'p'; BODY - BODY / 2]).await.unwrap();
                let mut answer = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
                String::from_utf8_lossy(&answer).into_owned()
            })
        })
        .collect();

    for (i, get) in gets.into_iter().enumerate() {
        let resp = get.await.unwrap().unwrap_or_else(|e| panic!("GET {i} failed: {e:?}"));
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), format!("/get/{i} 0"));
    }
    for (i, post) in posts.into_iter().enumerate() {
        let answer = post.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "POST {i}: {answer:?}");
        assert!(answer.ends_with(&format!("/post/{i} {BODY}")), "POST {i}: {answer:?}");
    }
    let status = olive.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "olive exits 0 after its drain: {status:?}");
}
