//! HTTP proxying with hyper: HTTP/1.1 or h2 from clients (by ALPN), HTTP/1.1 to members over
//! reused connections, `X-Forwarded-*` headers per the listener's `insert_headers`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::ListenerRuntime;
use super::coalesce::Coalesce;
use super::l7::Action;
use super::choose::{Affinity, SERVER_COOKIE, Sticky};
use super::cookie;
use super::proxy_header;
use super::upstream::{Checkout, InFlight, MemberConn, MemberRuntime, PrivateConns, UpBody};
use crate::tls::budget::RecordBudget;
use crate::tls::peer::{self, ClientCert};

/// Octavia's `X-SSL-*` header names in the lower case `HeaderName::from_static` requires.
fn lower(name: &'static str) -> &'static str {
    match name {
        "X-SSL-Client-Verify" => "x-ssl-client-verify",
        "X-SSL-Client-Has-Cert" => "x-ssl-client-has-cert",
        "X-SSL-Client-DN" => "x-ssl-client-dn",
        "X-SSL-Client-CN" => "x-ssl-client-cn",
        "X-SSL-Issuer" => "x-ssl-issuer",
        "X-SSL-Client-SHA1" => "x-ssl-client-sha1",
        "X-SSL-Client-Not-Before" => "x-ssl-client-not-before",
        _ => "x-ssl-client-not-after",
    }
}

/// A member's response streamed through, or lb's own short error page (no box per response).
type RespBody = Either<PooledBody, Full<Bytes>>;

/// What every request on one client connection shares.
pub struct ConnContext {
    pub listener: Arc<ArcSwap<ListenerRuntime>>,
    pub peer: SocketAddr,
    pub tls: bool,
    /// The verified certificate the client presented, if any.
    pub client_cert: Option<Arc<ClientCert>>,
    /// An offloaded connection's transmit record budget: once it is nearly spent, an HTTP/1.1
    /// response closes the connection (`Connection: close`) and an h2 connection is sent
    /// GOAWAY, rather than run into the limit.
    pub record_budget: Option<Arc<RecordBudget>>,
    /// The address the client connected to (the PROXY header's destination).
    pub local: SocketAddr,
    /// Member connections of `PROXY` / `PROXYV2` pools, this client's alone.
    pub private: PrivateConns,
}

/// Serves one client connection until it closes.
pub async fn serve<S>(io: S, h2: bool, ctx: Arc<ConnContext>) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = ctx.listener.load().timeouts.client_data;
    let budget = ctx.record_budget.clone();
    let svc = service_fn(move |req| {
        let ctx = ctx.clone();
        // Boxed: a request's future is about 2 KiB, and hyper moves it whole several times when
        // it spawns an h2 stream (4 % of h2's instructions per request, `request-insns`).
        Box::pin(async move { Ok::<_, Infallible>(proxy(req, ctx).await) })
    });
    if h2 {
        // Responses of streams ready together leave in one record and one write.
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(Coalesce::new(io)), svc);
        let Some(budget) = budget else { return conn.await };
        tokio::pin!(conn);
        tokio::select! {
            done = conn.as_mut() => return done,
            () = budget.wait_nearly_spent() => conn.as_mut().graceful_shutdown(),
        }
        // GOAWAY sent: streams already open finish, then the connection closes.
        conn.await
    } else {
        hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(io), svc)
            .await
    }
}

async fn proxy(req: Request<Incoming>, ctx: Arc<ConnContext>) -> Response<RespBody> {
    let rt = ctx.listener.load_full();
    let h1 = req.version() < Version::HTTP_2;
    let mut response = forward(req, &ctx, &rt).await.unwrap_or_else(|(status, why)| {
        tracing::debug!(listener = %rt.id, peer = %ctx.peer, %status, why, "request not forwarded");
        error_response(status)
    });
    rt.responses.record(response.status());
    if let Some(hsts) = &rt.hsts {
        response.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    if h1 && ctx.record_budget.as_ref().is_some_and(|b| b.nearly_spent()) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn forward(
    req: Request<Incoming>,
    ctx: &Arc<ConnContext>,
    rt: &ListenerRuntime,
) -> Result<Response<RespBody>, (StatusCode, String)> {
    let (parts, body) = req.into_parts();
    let chosen = if rt.l7.is_empty() { None } else { rt.l7.decide(&parts, ctx.client_cert.as_deref()) };
    let pool = match chosen {
        None => rt.pool.clone().ok_or((StatusCode::SERVICE_UNAVAILABLE, "listener has no default pool".into()))?,
        Some(Action::Pool(pool)) => pool.clone(),
        Some(Action::Reject) => return Err((StatusCode::FORBIDDEN, "rejected by an L7 policy".into())),
        Some(Action::Redirect { location, code, prefix }) => return Ok(redirect(*code, location, prefix.then_some(&parts.uri))),
    };
    let mut head = RequestHead::new(parts, ctx, rt);
    let replayable = body.is_end_stream();
    let body: UpBody = if replayable { Either::Right(Empty::new()) } else { Either::Left(body) };

    let sticky = pool.chooser().sticky();
    let cookie: Option<Box<str>> = pool.chooser().cookie_name().and_then(|n| cookie::in_request(&head.headers, n)).map(Box::from);
    if matches!(sticky, Some(Sticky::ServerCookie)) {
        cookie::remove_from_request(&mut head.headers, SERVER_COOKIE);
    }
    let affinity = Affinity { peer: ctx.peer, cookie: cookie.as_deref() };
    let header = pool.protocol.proxy_header().map(|v| proxy_header::encode(v, ctx.peer, ctx.local));
    let private = header.as_deref().map(|h| (&ctx.private, h));
    let checkout = pool
        .checkout(&affinity, (rt.timeouts.member_connect, rt.timeouts.member_data), private)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let Checkout { member, mut conn, reused, in_flight } = checkout;
    let first = send(&mut conn.sender, head.build(body, member.addr)).await;
    let response = match first {
        // A reused connection the member closed while idle: safe to replay a bodiless request once.
        Err(SendError::Closed(_)) if reused && replayable => {
            conn = pool
                .open_http(&member, (rt.timeouts.member_connect, rt.timeouts.member_data), header.as_deref())
                .await
                .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, format!("member {}: {e}", member.addr)))?;
            send(&mut conn.sender, head.build(Either::Right(Empty::new()), member.addr)).await
        }
        other => other,
    };
    let response = response.map_err(|e| match e {
        SendError::Timeout => (StatusCode::GATEWAY_TIMEOUT, format!("member {} did not answer in time", member.addr)),
        SendError::Closed(e) | SendError::Other(e) => (StatusCode::BAD_GATEWAY, format!("member {}: {e}", member.addr)),
    })?;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    match sticky {
        Some(Sticky::ServerCookie) if cookie.as_deref() != Some(&*member.id) => cookie::set(&mut parts.headers, SERVER_COOKIE, &member.id),
        Some(Sticky::AppCookie { name, table }) => {
            if let Some(value) = cookie::set_by_response(&parts.headers, name) {
                table.put(value.into(), &member.id);
            }
        }
        _ => {}
    }
    let home = header.is_some().then(|| ctx.clone());
    let body = PooledBody { inner: body, release: Some((member, conn)), home, in_flight };
    Ok(Response::from_parts(parts, Either::Left(body)))
}

enum SendError {
    Timeout,
    Closed(hyper::Error),
    Other(hyper::Error),
}

/// Sends one request. The member connection enforces `timeout_member_data` as inactivity (see
/// `PoolRuntime::open_http`), so a long upload is not cut short while bytes still move.
async fn send(sender: &mut SendRequest<UpBody>, req: Request<UpBody>) -> Result<Response<Incoming>, SendError> {
    let result = async {
        sender.ready().await?;
        sender.send_request(req).await
    }
    .await;
    match result {
        Ok(r) => Ok(r),
        Err(e) if timed_out(&e) => Err(SendError::Timeout),
        Err(e) if e.is_canceled() || e.is_closed() || e.is_incomplete_message() => Err(SendError::Closed(e)),
        Err(e) => Err(SendError::Other(e)),
    }
}

/// Whether a member connection failed because no byte moved for `timeout_member_data`.
fn timed_out(e: &hyper::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The parts of a client request sent on to the member, kept so a request can be replayed.
struct RequestHead {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl RequestHead {
    fn new(parts: http::request::Parts, ctx: &ConnContext, rt: &ListenerRuntime) -> Self {
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        if !headers.contains_key(header::HOST)
            && let Some(authority) = parts.uri.authority()
            && let Ok(v) = HeaderValue::from_str(authority.as_str())
        {
            headers.insert(header::HOST, v);
        }
        let insert = rt.insert_headers;
        if insert.forwarded_for {
            let ip = ctx.peer.ip().to_canonical().to_string();
            let value = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
                Some(prev) => format!("{prev}, {ip}"),
                None => ip,
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(X_FORWARDED_FOR, v);
            }
        }
        if insert.forwarded_port {
            headers.insert(X_FORWARDED_PORT, HeaderValue::from(rt.port));
        }
        if insert.forwarded_proto {
            let proto = if ctx.tls { "https" } else { "http" };
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        }
        if ctx.tls && insert.ssl.any() {
            // Set, never appended: a client cannot smuggle its own X-SSL-* values past lb.
            for (name, on) in insert.ssl.named() {
                if on {
                    headers.remove(name);
                }
            }
            for (name, value) in peer::headers(&insert.ssl, ctx.client_cert.as_deref()) {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(HeaderName::from_static(lower(name)), v);
                }
            }
        }
        let uri = parts.uri.path_and_query().map(|pq| Uri::from(pq.clone())).unwrap_or_else(|| Uri::from_static("/"));
        RequestHead { method: parts.method, uri, headers }
    }

    /// The request for `member`. HTTP/1.1 requires a Host header: an HTTP/1.0 client that sent
    /// none gets the member's address, as a proxy_pass to an address would send.
    fn build(&self, body: UpBody, member: SocketAddr) -> Request<UpBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = self.headers.clone();
        if !req.headers().contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(&member.to_string())
        {
            req.headers_mut().insert(header::HOST, v);
        }
        req
    }
}

/// Connection-scoped headers (RFC 9110 §7.6.1) besides those `Connection` names.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Removes connection-scoped headers (RFC 9110 §7.6.1), including those `Connection` names.
/// Most messages carry none, or only `Connection: keep-alive`: the ones present are found in
/// one pass over the message's few header names (no hashing), and only those are removed.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Names listed in `Connection` other than the fixed ones (empty, so not allocated, for
    // `keep-alive` or `close`).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| !n.eq_ignore_ascii_case("close") && !HOP_BY_HOP.iter().any(|h| h.as_str().eq_ignore_ascii_case(n)))
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// An L7 policy's redirect: to `location`, or (`REDIRECT_PREFIX`) to it followed by the
/// request's path and query.
fn redirect(code: StatusCode, location: &str, keep: Option<&Uri>) -> Response<RespBody> {
    let target = match keep {
        Some(uri) => format!("{location}{}", uri.path_and_query().map_or("/", |p| p.as_str())),
        None => location.to_string(),
    };
    match HeaderValue::from_str(&target) {
        Ok(value) => {
            let mut response = error_response(code);
            response.headers_mut().insert(header::LOCATION, value);
            response
        }
        Err(_) => error_response(StatusCode::BAD_REQUEST),
    }
}

fn error_response(status: StatusCode) -> Response<RespBody> {
    let body = Full::new(Bytes::from(format!("{} {}\n", status.as_u16(), status.canonical_reason().unwrap_or(""))));
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Either::Right(body))
        .expect("static response parts")
}

/// A member's response body that hands its connection back to the member's idle pool (or the
/// client connection's own, `home`) once the body has been read to the end. The request counts
/// as in flight until then.
struct PooledBody {
    inner: Incoming,
    release: Option<(Arc<MemberRuntime>, MemberConn)>,
    home: Option<Arc<ConnContext>>,
    in_flight: InFlight,
}

impl PooledBody {
    fn release(&mut self) {
        self.in_flight.end();
        if let Some((member, conn)) = self.release.take() {
            match &self.home {
                Some(ctx) => ctx.private.release(member.id.clone(), conn),
                None => member.release(conn),
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_frame(cx));
        if frame.is_none() {
            self.release();
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // An empty body (204, HEAD) may never be polled; a partly read one must not be reused.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed_and_nothing_else() {
        let mut h = map(&[
            ("host", "a.example"),
            ("connection", "keep-alive, X-Secret"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("x-kept", "2"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["host", "x-kept"]);

        let clean = map(&[("host", "a.example"), ("accept", "*/*")]);
        let mut h = clean.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, clean);
    }
}
