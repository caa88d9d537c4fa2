//! Body types of the data plane. Bodies stream frame by frame; nothing here buffers.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

use crate::context::BodyStats;
use crate::http1::names::Lengths;
use crate::http1::raw::RawFields;
use crate::policy::forwarded::X_REQUEST_ID;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

#[derive(Debug)]
pub struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body exceeds the route limit")
    }
}
impl std::error::Error for BodyTooLarge {}

/// The client's request body failed to decode (malformed chunked framing...). Marks the
/// error so the upstream call reports 400 instead of 502 (S7/S8).
#[derive(Debug)]
pub struct ClientBodyError(pub BoxError);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed request body")
    }
}
impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Counts request body bytes and fails the stream once `limit` is crossed, so a chunked
/// body that grows past the route's `max_body` aborts the upstream request midway (L3).
pub struct LimitedBody<B> {
    inner: B,
    limit: u64,
    stats: Arc<BodyStats>,
}

impl<B> LimitedBody<B> {
    pub fn new(inner: B, limit: u64, stats: Arc<BodyStats>) -> Self {
        LimitedBody {
            inner,
            limit,
            stats,
        }
    }
}

impl<B> HttpBody for LimitedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let total = self
                        .stats
                        .bytes_in
                        .fetch_add(data.len() as u64, Ordering::Relaxed)
                        + data.len() as u64;
                    if total > self.limit {
                        self.stats.too_large.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                Poll::Ready(Some(Err(Box::new(ClientBodyError(e.into())))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Debug)]
pub struct IdleTimeout;

impl std::fmt::Display for IdleTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream body idle timeout")
    }
}
impl std::error::Error for IdleTimeout {}

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// Sent to the end (an empty body included).
    Complete,
    /// The upstream failed mid-body: its connection broke (reset, closed short of
    /// `Content-Length`, bad chunk framing) or it sent nothing for `timeouts.idle`. Counts
    /// for passive outlier detection (F4).
    UpstreamFailed,
    /// Dropped before its end without an upstream error: the client went away (or a body the
    /// gateway made failed). Not the upstream's fault.
    Abandoned,
}

/// Called once when a response body is finished, failed or dropped, with the bytes sent and
/// how it ended. Used for access logs, metrics, outlier detection and per-connection
/// bookkeeping.
pub trait OnComplete: Send + 'static {
    fn complete(self: Box<Self>, bytes_out: u64, end: BodyEnd);
    /// The gateway's own fields for this response (kept in the hook's box, not in the body,
    /// which is moved several times on its way out).
    fn fields(&self) -> &GatewayFields;
}

/// A request body as the pipeline receives it: none, read from an HTTP/1.1 connection by
/// the gateway's own server, or an HTTP/2 stream's (hyper).
pub enum RequestBody {
    Empty,
    H1(crate::server::h1::H1Body),
    H2(hyper::body::Incoming),
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::H1(b) => Pin::new(b).poll_frame(cx),
            RequestBody::H2(b) => poll_incoming(b, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::H1(b) => b.is_end_stream(),
            RequestBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::H1(b) => b.size_hint(),
            RequestBody::H2(b) => b.size_hint(),
        }
    }
}

fn poll_incoming(
    b: &mut hyper::body::Incoming,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    Pin::new(b)
        .poll_frame(cx)
        .map(|f| f.map(|r| r.map_err(|e| -> BoxError { Box::new(e) })))
}

/// An upstream response body: from the gateway's HTTP/1.1 client, or hyper's HTTP/2 one.
pub enum UpstreamBody {
    H1(crate::upstream::h1::ResponseBody),
    H2(hyper::body::Incoming),
}

impl UpstreamBody {
    /// The upstream connection after a `101` (HTTP/1.1 only).
    pub fn take_upgrade(&mut self) -> Option<crate::http1::Upgraded> {
        match self {
            UpstreamBody::H1(b) => b.take_upgrade(),
            UpstreamBody::H2(_) => None,
        }
    }

    /// The fields of an HTTP/1 upstream's response passed on raw, not in the response's
    /// header map (see `http1::raw`).
    pub fn raw_fields(&self) -> Option<&RawFields> {
        match self {
            UpstreamBody::H1(b) => b.raw_fields(),
            UpstreamBody::H2(_) => None,
        }
    }

    /// Moves raw fields into `headers` (the response's map): for anything that reads or
    /// changes the response's fields other than the HTTP/1 encoder.
    pub fn move_raw_into(&mut self, headers: &mut HeaderMap) {
        if let UpstreamBody::H1(b) = self {
            b.move_raw_into(headers);
        }
    }
}

/// Makes `resp`'s header map complete: the fields an HTTP/1 upstream's response passed on
/// raw are moved into it.
pub fn with_all_fields(resp: &mut http::Response<UpstreamBody>) {
    if resp.body().raw_fields().is_some_and(|r| !r.is_empty()) {
        let mut headers = std::mem::take(resp.headers_mut());
        resp.body_mut().move_raw_into(&mut headers);
        *resp.headers_mut() = headers;
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::H1(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::H2(b) => poll_incoming(b, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::H1(b) => b.is_end_stream(),
            UpstreamBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::H1(b) => b.size_hint(),
            UpstreamBody::H2(b) => b.size_hint(),
        }
    }
}

/// What a response carries: the upstream's body, or one the gateway made. Keeping the
/// upstream body unboxed saves an allocation and a dynamic call per frame on every proxied
/// response.
pub enum ResponseInner {
    Upstream(UpstreamBody),
    Local(Body),
}

impl From<Body> for ResponseInner {
    fn from(b: Body) -> Self {
        ResponseInner::Local(b)
    }
}

impl HttpBody for ResponseInner {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseInner::Upstream(b) => Pin::new(b).poll_frame(cx),
            ResponseInner::Local(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseInner::Upstream(b) => b.is_end_stream(),
            ResponseInner::Local(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseInner::Upstream(b) => b.size_hint(),
            ResponseInner::Local(b) => b.size_hint(),
        }
    }
}

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The fields the gateway sets on its responses (`x-request-id`, `RateLimit-Policy`,
/// `RateLimit`), kept beside the header map (see `http1::names::present`): the HTTP/1
/// encoder writes them in place of any field of the same name, the HTTP/2 server merges them
/// into the map. Inserting them cost a hash and probe each (~350 instructions for the
/// request id alone).
#[derive(Default)]
pub struct GatewayFields {
    values: [Option<HeaderValue>; 3],
    /// The pipeline wants the connection closed after this response (HTTP/1).
    pub close: bool,
}

/// No fields: a response the gateway made without a pipeline (the panic answer).
static NO_FIELDS: GatewayFields = GatewayFields {
    values: [None, None, None],
    close: false,
};

/// The order of [`GatewayFields::values`].
static GATEWAY_NAMES: [&HeaderName; 3] = [&X_REQUEST_ID, &RATELIMIT_POLICY, &RATELIMIT];

impl GatewayFields {
    pub fn new(
        request_id: HeaderValue,
        policy: Option<HeaderValue>,
        ratelimit: Option<HeaderValue>,
    ) -> Self {
        GatewayFields {
            values: [Some(request_id), policy, ratelimit],
            close: false,
        }
    }

    /// The fields set, in order, as (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        crate::http1::names::present(&GATEWAY_NAMES, &self.values)
    }

    /// Whether `name` (as it arrived, any case) is one of the gateway's response fields,
    /// set or not: an upstream field of that name is replaced whenever the gateway sets it.
    pub fn is_gateway_name(name: &[u8]) -> bool {
        static LENGTHS: LazyLock<Lengths> =
            LazyLock::new(|| Lengths::of(GATEWAY_NAMES.iter().map(|n| n.as_str())));
        if !LENGTHS.may_hold(name.len()) {
            return false;
        }
        GATEWAY_NAMES
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n.as_str().as_bytes()))
    }

    /// Whether a field of the map is replaced by one of these.
    pub fn replaces(&self, name: &HeaderName) -> bool {
        self.iter().any(|(n, _)| n == name)
    }

    /// Inserts the fields into `headers` (replacing any of the same name).
    pub fn merge_into(&self, headers: &mut HeaderMap) {
        crate::http1::names::insert_all(self.iter(), headers);
    }
}

/// Wraps a response body: counts bytes, enforces an idle timeout between frames (streams
/// flow as long as bytes keep arriving, F3) and reports completion exactly once.
pub struct ResponseBody {
    inner: ResponseInner,
    idle: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    bytes: u64,
    done: Option<Box<dyn OnComplete>>,
}

impl ResponseBody {
    pub fn new(inner: ResponseInner, idle: Option<Duration>, done: Box<dyn OnComplete>) -> Self {
        ResponseBody {
            inner,
            idle,
            sleep: None,
            bytes: 0,
            done: Some(done),
        }
    }

    /// The gateway's own response fields, for the encoder (HTTP/1) or the map (HTTP/2);
    /// read before the body is sent (its end takes the completion hook that holds them).
    pub fn fields(&self) -> &GatewayFields {
        self.done.as_deref().map_or(&NO_FIELDS, |d| d.fields())
    }

    /// The fields of an HTTP/1 upstream's response passed on raw, for the HTTP/1 encoder
    /// (read before the body: the connection is pooled again at its end).
    pub fn raw_fields(&self) -> Option<&RawFields> {
        match &self.inner {
            ResponseInner::Upstream(b) => b.raw_fields(),
            ResponseInner::Local(_) => None,
        }
    }

    /// Moves raw fields into `headers` (for the HTTP/2 server, which writes a map).
    pub fn move_raw_into(&mut self, headers: &mut HeaderMap) {
        if let ResponseInner::Upstream(b) = &mut self.inner {
            b.move_raw_into(headers);
        }
    }

    /// The raw fields were written: the upstream head they point into is let go.
    pub fn raw_written(&mut self) {
        if let ResponseInner::Upstream(UpstreamBody::H1(b)) = &mut self.inner {
            b.raw_written();
        }
    }

    /// A body the gateway made, with nothing to report when it ends (the panic answer).
    pub fn local(body: Body) -> Self {
        ResponseBody {
            inner: ResponseInner::Local(body),
            idle: None,
            sleep: None,
            bytes: 0,
            done: None,
        }
    }

    fn finish(&mut self, end: BodyEnd) {
        if let Some(done) = self.done.take() {
            done.complete(self.bytes, end);
        }
    }

    /// An error (or idle timeout) of the upstream's body is the upstream's failure; one of a
    /// body the gateway made is not.
    fn failed(&self) -> BodyEnd {
        match self.inner {
            ResponseInner::Upstream(_) => BodyEnd::UpstreamFailed,
            ResponseInner::Local(_) => BodyEnd::Abandoned,
        }
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
                this.sleep = None;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let end = this.failed();
                this.finish(end);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finish(BodyEnd::Complete);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some(idle) = this.idle {
                    let sleep = this
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                    if sleep.as_mut().poll(cx).is_ready() {
                        let end = this.failed();
                        this.finish(end);
                        return Poll::Ready(Some(Err(Box::new(IdleTimeout))));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // Dropped by the server: the client went away, or everything was sent and the server
        // did not poll for the end.
        let end = if self.inner.is_end_stream() {
            BodyEnd::Complete
        } else {
            BodyEnd::Abandoned
        };
        self.finish(end);
    }
}

use std::future::Future as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_names_told_in_any_case_and_nothing_else() {
        for n in GATEWAY_NAMES {
            let s = n.as_str();
            assert!(GatewayFields::is_gateway_name(s.as_bytes()), "{s}");
            assert!(GatewayFields::is_gateway_name(
                s.to_ascii_uppercase().as_bytes()
            ));
            // Same length, one byte off: not one of them.
            let other = format!("{}z", &s[..s.len() - 1]);
            assert!(!GatewayFields::is_gateway_name(other.as_bytes()), "{other}");
        }
        for n in [
            "content-type",
            "server",
            "x-request",
            "ratelimit-policy-x",
            "",
        ] {
            assert!(!GatewayFields::is_gateway_name(n.as_bytes()), "{n}");
        }
    }
}
