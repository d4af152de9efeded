//! On-the-fly gzip / brotli compression of proxied responses, on routes that
//! ask for it.
//!
//! tower-http's `Compression` does the negotiation (Accept-Encoding with
//! q-values), leaves alone responses that already carry a Content-Encoding,
//! skips images, server-sent events and bodies under 32 bytes, and adds
//! `Vary: Accept-Encoding`. Brotli runs at quality 4, as nginx's module does.

use http::{Request, Response};
use hyper::body::Incoming;
use tower::ServiceExt;
use tower_http::compression::Compression;

use crate::body::{self, Body};
use crate::config::Limits;
use crate::proxy::{self, ClientInfo, ProxyError, Upstream};

/// [`proxy::forward`], compressing the response when the client accepts it.
pub async fn forward(
    upstream: &Upstream,
    req: Request<Incoming>,
    client: &ClientInfo,
    limits: &Limits,
) -> Result<Response<Body>, ProxyError> {
    let inner = tower::service_fn(|req| proxy::forward(upstream, req, client, limits));
    let resp = Compression::new(inner).gzip(true).br(true).oneshot(req).await?;
    Ok(resp.map(body::boxed))
}
