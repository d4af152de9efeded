//! The reverse proxy against real upstreams on loopback.

mod common;

use std::time::{Duration, Instant};

use common::{Olive, Upstream, client, proxy_config, raw, text};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn keep_alive_connections_are_reused() {
    let up = Upstream::echo().await;
    let olive = Olive::start(&proxy_config(up.addr, "")).await;
    let http = client();
    for i in 0..50 {
        let resp = http.get(olive.url("http", &format!("/n/{i}"))).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), format!("/n/{i}"));
    }
    assert!(up.connection_count() <= 2, "upstream saw {} connections for 50 requests", up.connection_count());
}

/// An upstream that closes every connection a moment after its first
/// answer, as gunicorn does at its keep-alive timeout: olive's pooled
/// connection goes stale while idle, and the next request, GET or POST,
/// goes out once on a new connection.
#[tokio::test]
async fn pooled_connections_closed_by_the_upstream_are_replaced() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
        }
    });
    let olive = Olive::start(&proxy_config(addr, "")).await;
    let http = client();
    for i in 0..6 {
        let req =
            if i % 2 == 0 { http.get(olive.url("http", "/")) } else { http.post(olive.url("http", "/")) };
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(resp.text().await.unwrap(), "ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 6);
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_forwarding_set() {
    let up = Upstream::echo().await;
    let olive = Olive::start(&proxy_config(up.addr, "")).await;
    let resp = client()
        .get(olive.url("http", "/path?q=1"))
        .header("connection", "x-secret")
        .header("x-secret", "hop")
        .header("te", "trailers")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "for=6.6.6.6")
        .header("x-request-id", "spoofed")
        .header("host", "www.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let seen = &up.requests()[0];
    assert_eq!(seen.uri, "/path?q=1");
    assert_eq!(seen.version, http::Version::HTTP_11);
    let h = &seen.headers;
    assert!(h.get("x-secret").is_none() && h.get("te").is_none());
    assert_eq!(h["host"], "www.example.com", "Host is preserved");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "www.example.com");
    assert_eq!(h["forwarded"], "for=127.0.0.1;proto=http;host=www.example.com");
    assert_eq!(h["x-request-id"].to_str().unwrap(), request_id);
    assert_ne!(request_id, "spoofed");
}

#[tokio::test]
async fn trusted_proxies_extend_forwarding_headers() {
    let up = Upstream::echo().await;
    let olive = Olive::start(&proxy_config(up.addr, "trusted_proxies = [\"127.0.0.0/8\"]")).await;
    let resp = client()
        .get(olive.url("http", "/"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("x-request-id", "from-the-balancer")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "from-the-balancer");
    let h = &up.requests()[0].headers;
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn upstream_down_is_502_within_a_second() {
    // Bind then drop: a port where nothing listens.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let olive = Olive::start(&proxy_config(dead, "")).await;
    let started = Instant::now();
    let resp = client().get(olive.url("http", "/")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert!(resp.text().await.unwrap().contains("502 Bad Gateway"));
}

#[tokio::test]
async fn slow_upstream_is_504_at_the_header_timeout() {
    let up = Upstream::start(|_| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        text(200, "too late")
    })
    .await;
    let config =
        proxy_config(up.addr, "").replace("connect_timeout = \"500ms\"", "header_timeout = \"300ms\"");
    let olive = Olive::start(&config).await;
    let started = Instant::now();
    let resp = client().get(olive.url("http", "/")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(2), "took {took:?}");
}

#[tokio::test]
async fn connect_failures_are_retried_on_another_address() {
    let up = Upstream::echo().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = proxy_config(up.addr, "").replace(
        &format!("addresses = [\"{}\"]", up.addr),
        &format!("addresses = [\"{dead}\", \"{}\"]", up.addr),
    );
    let olive = Olive::start(&config).await;
    let http = client();
    for _ in 0..6 {
        let resp = http.get(olive.url("http", "/")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(up.requests().len(), 6);
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let up = Upstream::echo().await;
    let olive =
        Olive::start(&proxy_config(up.addr, "\n[limits]\nmax_body_bytes = 1000\nbody_buffer_bytes = 500\n"))
            .await;
    let http = client();
    // Declared too large: refused before reading.
    let resp = http.post(olive.url("http", "/")).body(vec![b'x'; 1001]).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    // The unread body is still on the wire: the connection is not reused.
    assert_eq!(resp.headers()["connection"], "close");
    // Chunked, found too large while streaming.
    let chunks = futures_util::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 100])));
    let resp = http.post(olive.url("http", "/")).body(reqwest::Body::wrap_stream(chunks)).send().await;
    match resp {
        Ok(resp) => assert!(resp.status() == 413 || resp.status() == 502, "{}", resp.status()),
        Err(e) => panic!("{e}"),
    }
    // Within the limit: passes, streamed past the buffer size.
    let resp = http.post(olive.url("http", "/")).body(vec![b'z'; 900]).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = up.requests();
    assert!(seen.iter().all(|s| s.body.len() <= 1000));
    assert_eq!(seen.last().unwrap().body.len(), 900);
}

#[tokio::test]
async fn refuse_mode_rejects_bodies_larger_than_the_buffer() {
    let up = Upstream::echo().await;
    let limits = "\n[limits]\nmax_body_bytes = 10000\nbody_buffer_bytes = 100\noversize_body = \"refuse\"\n";
    let olive = Olive::start(&proxy_config(up.addr, limits)).await;
    let resp = client().post(olive.url("http", "/")).body(vec![b'x'; 101]).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn large_chunked_body_is_spooled_and_sent_with_its_length() {
    let up = Upstream::echo().await;
    let olive = Olive::start(&proxy_config(up.addr, "")).await;
    // 4 MiB in 64 KiB chunks: above the 1 MiB buffer, under the 10 MiB limit.
    let chunks = futures_util::stream::iter((0..64u8).map(|i| Ok::<_, std::io::Error>(vec![i; 64 * 1024])));
    let resp = client()
        .put(olive.url("http", "/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = &up.requests()[0];
    // Spooled and sent with its length: WSGI cannot read chunked bodies.
    assert_eq!(seen.headers["content-length"], (64 * 64 * 1024).to_string());
    assert!(seen.headers.get("transfer-encoding").is_none());
    let body = &seen.body;
    assert_eq!(body.len(), 64 * 64 * 1024);
    assert!(body.chunks(64 * 1024).enumerate().all(|(i, c)| c.iter().all(|&b| b == i as u8)));
}

#[tokio::test]
async fn a_slow_client_body_reaches_the_upstream_only_when_complete() {
    let up = Upstream::echo().await;
    let olive = Olive::start(&proxy_config(up.addr, "")).await;
    let mut stream = tokio::net::TcpStream::connect(olive.addr("http")).await.unwrap();
    stream
        .write_all(b"POST /comments/post/ HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(up.requests().is_empty(), "the upstream saw a request before its body was complete");
    stream.write_all(b"world").await.unwrap();
    for _ in 0..50 {
        if !up.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(up.requests()[0].body, "helloworld");
}

#[tokio::test]
async fn malformed_and_oversized_request_heads() {
    let up = Upstream::echo().await;
    let olive =
        Olive::start(&proxy_config(up.addr, "\n[limits]\nmax_header_bytes = 8192\nmax_headers = 20\n")).await;
    let addr = olive.addr("http");
    let wait = Duration::from_secs(2);

    let garbage = raw(addr, b"GARBAGE\x01 / HTTP/1.1\r\n\r\n", wait).await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");

    let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
    let resp = raw(addr, big.as_bytes(), wait).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");

    let many: String = (0..25).map(|i| format!("X-H{i}: v\r\n")).collect();
    let resp = raw(addr, format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(), wait).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn slow_request_heads_are_cut_off_at_the_header_timeout() {
    let up = Upstream::echo().await;
    let olive = Olive::start(&proxy_config(up.addr, "\n[limits]\nheader_read_timeout = \"300ms\"\n")).await;
    let started = Instant::now();
    let resp =
        raw(olive.addr("http"), b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ", Duration::from_secs(3)).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "connection held {took:?}");
    assert!(resp.is_empty() || resp.starts_with("HTTP/1.1 408"), "{resp}");
}

#[tokio::test]
async fn text_responses_are_compressed_when_the_client_accepts_it() {
    let page = "<p>comment</p>\n".repeat(200);
    let body = page.clone();
    let up = Upstream::start(move |_| {
        let body = body.clone();
        async move {
            let mut resp = text(200, &body);
            resp.headers_mut().insert("content-type", "text/html; charset=utf-8".parse().unwrap());
            resp
        }
    })
    .await;
    let olive =
        Olive::start(&proxy_config(up.addr, "").replace("proxy.compress = false", "proxy.compress = true"))
            .await;
    let url = olive.url("http", "/");
    let resp = client().get(&url).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    assert_eq!(resp.headers()["vary"], "accept-encoding");
    let compressed = resp.bytes().await.unwrap();
    assert!(compressed.len() < page.len() / 10);
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&compressed[..]), &mut plain).unwrap();
    assert_eq!(plain, page);

    let resp = client().get(&url).header("accept-encoding", "br;q=1, gzip;q=0.5").send().await.unwrap();
    assert_eq!(resp.headers()["content-encoding"], "br");

    let resp = client().get(&url).send().await.unwrap();
    assert!(resp.headers().get("content-encoding").is_none());
    assert_eq!(resp.text().await.unwrap(), page);
}

#[tokio::test]
async fn unknown_hosts_get_the_configured_answer() {
    let up = Upstream::echo().await;
    let config = proxy_config(up.addr, "").replace("path = \"/\"", "hosts = [\"example.com\"]\npath = \"/\"")
        + "\n[router]\nunmatched_status = 404\n";
    let olive = Olive::start(&config).await;
    let http = client();
    let ok = http.get(olive.url("http", "/")).header("host", "example.com").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let other = http.get(olive.url("http", "/")).header("host", "evil.com").send().await.unwrap();
    assert_eq!(other.status(), 404);
}
