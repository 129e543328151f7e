//! Sending a routed request to its model server and streaming the answer back.
//!
//! Connections to servers are pooled (keep-alive), so a request pays no handshake.
//! The answer's body is passed through frame by frame, never buffered: a server-sent
//! event reaches the client as soon as the server writes it. The body carries the
//! request's ticket, so the request counts as in flight (and its service as in use)
//! until the last byte is sent or the client goes away; dropping it also drops the
//! connection to the server, which cancels the generation.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::budget::Ticket;
use super::openai::Refusal;
use super::{Body, BoxError, Router};
use crate::config::Routing;
use crate::supervisor::usage::InUse;
use crate::supervisor::{Phase, ServiceHandle, Status};

pub type Client = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

/// A pooled HTTP/1.1 client for the model servers.
pub fn client() -> Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// Headers that belong to one connection, not to the request (and `expect`, which the
/// router has already answered by reading the body).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "expect",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn end_to_end(headers: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    headers
        .iter()
        .filter(|(name, _)| !HOP_BY_HOP.contains(&name.as_str()) && *name != header::HOST)
}

/// Sends the request to the service's run. A server that refuses the connection (it
/// crashed, or is restarting by its own policy) is waited for until it is healthy
/// again, within the deadline; this never starts it again.
pub async fn send(
    router: &Router,
    parts: &Parts,
    body: Bytes,
    routing: &Routing,
    mut status: Status,
    handle: &ServiceHandle,
    deadline: Instant,
) -> Result<Response<Incoming>, Refusal> {
    let mut retry = Duration::from_millis(10);
    loop {
        let Some(port) = routing.upstream.port.or(status.port) else {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "model_unavailable",
                format!("`{}` has no port for this run", handle.service.name),
            ));
        };
        let request = build(parts, body.clone(), &routing.upstream.host, port)?;
        let error = match router.client.request(request).await {
            Ok(response) => return Ok(response),
            Err(error) => error,
        };
        if !error.is_connect() || Instant::now() >= deadline {
            return Err(Refusal::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                format!(
                    "`{}` at {}:{port} did not answer: {}",
                    handle.service.name,
                    routing.upstream.host,
                    plain(&error)
                ),
            ));
        }
        // Refused: wait until muster notices (the state changes) or a moment passes.
        let mut watch = handle.watch();
        let _ = tokio::time::timeout(retry, watch.changed()).await;
        retry = (retry * 2).min(Duration::from_millis(500));
        let waited = tokio::time::timeout_at(
            deadline,
            watch.wait_for(|s| s.phase == Phase::Healthy || s.phase.is_settled()),
        )
        .await;
        match waited {
            Ok(Ok(now)) if now.phase == Phase::Healthy => status = now.clone(),
            Ok(Ok(now)) => {
                let explanation = router.supervisor.explain(now.clone());
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "model_unavailable",
                    format!("`{}` stopped before it answered", handle.service.name),
                )
                .cause(
                    crate::supervisor::chain(&explanation.cause),
                    explanation.log_tail.clone(),
                ));
            }
            _ => {
                return Err(Refusal::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    format!("`{}` did not take the request in time", handle.service.name),
                ));
            }
        }
    }
}

/// The error's innermost cause: "connection refused", not hyper's wrapping.
fn plain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = error;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner.to_string()
}

fn build(
    parts: &Parts,
    body: Bytes,
    host: &str,
    port: u16,
) -> Result<Request<Full<Bytes>>, Refusal> {
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let bad = |what: String| Refusal::new(StatusCode::BAD_REQUEST, "invalid_request", what);
    let uri: Uri = format!("http://{authority}{path}")
        .parse()
        .map_err(|e| bad(format!("the request's path cannot be forwarded: {e}")))?;
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    for (name, value) in end_to_end(&parts.headers) {
        headers.append(name.clone(), value.clone());
    }
    if let Ok(value) = HeaderValue::from_str(&authority) {
        headers.insert(header::HOST, value);
    }
    Ok(request)
}

/// The server's answer, its body carrying what the request holds until it ends.
pub fn tracked(
    response: Response<Incoming>,
    ticket: Ticket,
    in_use: InUse,
    permit: Option<OwnedSemaphorePermit>,
) -> Response<Body> {
    let (parts, incoming) = response.into_parts();
    let sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let body = Tracked {
        incoming,
        sse,
        ended: false,
        ticket,
        _in_use: in_use,
        _permit: permit,
    };
    let mut response = Response::new(body.boxed_unsync());
    *response.status_mut() = parts.status;
    *response.version_mut() = http::Version::HTTP_11;
    let headers = response.headers_mut();
    for (name, value) in end_to_end(&parts.headers) {
        headers.append(name.clone(), value.clone());
    }
    response
}

/// A server's answer on its way to the client.
struct Tracked {
    incoming: Incoming,
    /// A stream of server-sent events: a server failing mid-answer is told to the
    /// client as an `error` event, which ends the stream (an aborted connection could
    /// lose the event still in its buffer).
    sse: bool,
    /// The error event went out: the stream is over.
    ended: bool,
    ticket: Ticket,
    _in_use: InUse,
    _permit: Option<OwnedSemaphorePermit>,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Err(error))) => {
                let usage = self.ticket.usage();
                usage
                    .route
                    .failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let name = self.ticket.name().clone();
                if self.sse {
                    let event = serde_json::json!({ "error": {
                        "message": format!("`{name}` stopped answering mid-stream: {}", plain(&error)),
                        "type": "server_error",
                        "code": "upstream_error",
                        "param": null,
                    }});
                    self.ended = true;
                    let frame =
                        Frame::data(Bytes::from(format!("event: error\ndata: {event}\n\n")));
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(Box::new(error))))
            }
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.incoming.size_hint()
    }
}
