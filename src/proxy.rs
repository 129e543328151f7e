//! On-demand services behind a TCP proxy: muster listens on `proxy.listen` from the
//! start; a connection to a service that is not healthy makes the same single-flight
//! `ensure` the API uses, waits for it, then is forwarded to `proxy.upstream`. Many
//! clients, one instance.
//!
//! With `proxy.http = true` a client that cannot be served gets an HTTP answer (503
//! with the cause as JSON, or 504 past `request-timeout`) instead of a closed
//! connection, and a forwarded request that gets no answer within `request-timeout` is
//! answered 504.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::config::{Proxy, ServiceName, Spec};
use crate::supervisor::usage::{ProxyCounters, Usage};
use crate::supervisor::{Failure, Phase, Supervisor};

/// How long a connection may wait for a service with no readiness probe (and so no
/// start deadline of its own).
const DEFAULT_START_WAIT: Duration = Duration::from_secs(60);
const BUFFER: usize = 256 * 1024;

/// The proxies of a config, bound: every `listen` address is taken before any service
/// starts, so a clash is known at once.
pub async fn bind(spec: &Spec) -> Result<Vec<(ServiceName, TcpListener)>, String> {
    let mut bound = Vec::new();
    for service in spec.services.values() {
        let Some(proxy) = &service.proxy else {
            continue;
        };
        let listener = TcpListener::bind(proxy.listen).await.map_err(|error| {
            let why = if error.kind() == std::io::ErrorKind::AddrInUse {
                crate::supervisor::ports::in_use(
                    &crate::config::Port {
                        ip: Some(proxy.listen.ip()),
                        port: proxy.listen.port(),
                    },
                    &|_| None,
                )
            } else {
                error.to_string()
            };
            format!(
                "cannot listen on {} (services.{}.proxy.listen): {why}",
                proxy.listen, service.name
            )
        })?;
        bound.push((service.name.clone(), listener));
    }
    Ok(bound)
}

/// Accepts connections for `name` until the task is dropped.
pub async fn serve(mut listener: TcpListener, supervisor: Arc<Supervisor>, name: ServiceName) {
    let what = format!("the proxy of `{name}`");
    loop {
        let client = crate::api::serve::next(&mut listener, &what).await;
        tokio::spawn(connection(client, Arc::clone(&supervisor), name.clone()));
    }
}

/// One client: wait for the service if need be, then forward both ways.
async fn connection(mut client: TcpStream, supervisor: Arc<Supervisor>, name: ServiceName) {
    // The service may have been removed by a reload; the proxy follows its definition.
    let Some(handle) = supervisor.service(name.as_str()) else {
        return;
    };
    let Some(proxy) = handle.service.proxy.clone() else {
        return;
    };
    let usage = Arc::clone(&handle.usage);
    let _in_use = usage.connection();
    let counters = &usage.proxy;
    let began = Instant::now();
    let budget = start_budget(&supervisor.spec(), &name);
    let deadline = began + proxy.request_timeout.map_or(budget, |t| t.min(budget));
    let upstream = loop {
        if handle.status().phase != Phase::Healthy {
            match wait_for_start(&supervisor, &name, &proxy, counters, deadline).await {
                Ok(()) => {}
                Err(refusal) => {
                    Usage::add(&counters.refused, 1);
                    refuse(&mut client, &proxy, refusal).await;
                    return;
                }
            }
        }
        match TcpStream::connect(proxy.upstream).await {
            Ok(upstream) => break upstream,
            // Healthy a moment ago, refused now: it crashed or is restarting. Wait
            // until muster notices (the state changes) or a moment passes, then go
            // round: the next healthy run, within the same deadline.
            Err(_) if Instant::now() < deadline => {
                let mut status = handle.watch();
                if status.borrow_and_update().phase == Phase::Healthy {
                    let _ = tokio::time::timeout(Duration::from_millis(20), status.changed()).await;
                }
            }
            Err(error) => {
                Usage::add(&counters.refused, 1);
                let cause = format!(
                    "`{name}` is healthy but {} refused: {error}",
                    proxy.upstream
                );
                refuse(&mut client, &proxy, Refusal::Failed(cause, Vec::new())).await;
                return;
            }
        }
    };
    let _ = upstream.set_nodelay(true);
    Usage::add(&counters.served, 1);
    forward(client, upstream, counters, &proxy).await;
}

/// Why a waiting client is not served.
enum Refusal {
    /// Past `max-pending`.
    Busy(usize),
    /// The start failed: the cause chain and the log tail.
    Failed(String, Vec<String>),
    /// Not healthy by the deadline.
    Timeout(String),
}

/// Waits (single-flight, through `ensure`) until the service is healthy.
async fn wait_for_start(
    supervisor: &Supervisor,
    name: &ServiceName,
    proxy: &Proxy,
    counters: &ProxyCounters,
    deadline: Instant,
) -> Result<(), Refusal> {
    let waiting = counters.waiting.fetch_add(1, Relaxed);
    let _waiting = Decrement(&counters.waiting);
    if waiting as usize >= proxy.max_pending {
        return Err(Refusal::Busy(proxy.max_pending));
    }
    let began = Instant::now();
    let left = deadline.saturating_duration_since(began);
    let result = supervisor.ensure(name.as_str(), left).await;
    Usage::add(&counters.wait_micros, began.elapsed().as_micros() as u64);
    match result {
        Ok(_) => Ok(()),
        Err(Failure::ShuttingDown) => Err(Refusal::Failed(
            "the supervisor is shutting down".to_owned(),
            Vec::new(),
        )),
        Err(Failure::Refused(why)) => Err(Refusal::Failed(why, Vec::new())),
        Err(Failure::Unknown(name)) => Err(Refusal::Failed(
            format!("`{name}` was removed from the config"),
            Vec::new(),
        )),
        Err(Failure::NotHealthy(explanation)) => Err(Refusal::Failed(
            explanation.cause.join("; "),
            explanation.log_tail.clone(),
        )),
        Err(Failure::Timeout { after, explanation }) => Err(Refusal::Timeout(format!(
            "`{name}` was not healthy within {}: {}",
            crate::supervisor::machine::human(after),
            explanation.cause.join("; ")
        ))),
    }
}

struct Decrement<'a>(&'a AtomicU64);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Closes a client that cannot be served; with `http`, answers it first.
async fn refuse(client: &mut TcpStream, proxy: &Proxy, refusal: Refusal) {
    if !proxy.http {
        return;
    }
    let (status, kind, message, log_tail) = match refusal {
        Refusal::Busy(limit) => (
            "503 Service Unavailable",
            "busy",
            format!("{limit} connections are already waiting for the start (proxy.max-pending)"),
            Vec::new(),
        ),
        Refusal::Failed(cause, log_tail) => {
            ("503 Service Unavailable", "not-healthy", cause, log_tail)
        }
        Refusal::Timeout(cause) => ("504 Gateway Timeout", "timeout", cause, Vec::new()),
    };
    let body = serde_json::json!({
        "error": { "kind": kind, "message": message, "log_tail": log_tail }
    })
    .to_string();
    answer(client, status, &body).await;
}

/// Writes a whole HTTP answer and closes politely: the request is read and dropped, so
/// closing does not reset the connection before the client has read the answer.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(client: &mut S, status: &str, body: &str) {
    let head = http_head(status, body.len());
    if client.write_all(head.as_bytes()).await.is_err()
        || client.write_all(body.as_bytes()).await.is_err()
    {
        return;
    }
    let _ = client.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async { while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

fn http_head(status: &str, length: usize) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )
}

/// The longest a start of `name` may take: its own start deadline after the slowest
/// chain of dependencies' deadlines.
fn start_budget(spec: &Spec, name: &ServiceName) -> Duration {
    fn budget(spec: &Spec, name: &ServiceName, depth: usize) -> Duration {
        let Some(service) = spec.services.get(name) else {
            return Duration::ZERO;
        };
        let own = service
            .ready
            .as_ref()
            .map_or(DEFAULT_START_WAIT, |ready| ready.timeout);
        // The graph is acyclic (checked at load); the depth bound is only a guard.
        let deps = if depth > 64 {
            Duration::ZERO
        } else {
            service
                .depends_on
                .iter()
                .map(|dep| budget(spec, &dep.service, depth + 1))
                .max()
                .unwrap_or_default()
        };
        own + deps
    }
    budget(spec, name, 0)
}

/// Copies both ways until both sides are done. A side that ends its sending is
/// half-closed on the other; an error on either side ends both.
async fn forward(client: TcpStream, upstream: TcpStream, counters: &ProxyCounters, proxy: &Proxy) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    // With `http` and `request-timeout`: when the oldest request still without an
    // answer was sent (milliseconds since `epoch`, 0 for none).
    let epoch = Instant::now();
    let asked_at = AtomicU64::new(0);
    let watch_requests = proxy.http && proxy.request_timeout.is_some();
    let inbound = async {
        let mut buffer = vec![0u8; BUFFER];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if watch_requests && asked_at.load(Relaxed) == 0 {
                asked_at.store(epoch.elapsed().as_millis() as u64 + 1, Relaxed);
            }
            if upstream_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
            Usage::add(&counters.bytes_in, n as u64);
        }
        let _ = upstream_write.shutdown().await;
    };
    let outbound = async {
        let mut buffer = vec![0u8; BUFFER];
        loop {
            let read = upstream_read.read(&mut buffer);
            let n = match (watch_requests, proxy.request_timeout) {
                (true, Some(limit)) => match unanswered(read, &asked_at, epoch, limit).await {
                    Some(result) => result,
                    None => {
                        let body = serde_json::json!({ "error": {
                                "kind": "timeout",
                                "message": format!("no answer from {} within {} (proxy.request-timeout)",
                                    proxy.upstream, crate::supervisor::machine::human(limit)),
                            }})
                            .to_string();
                        let head = http_head("504 Gateway Timeout", body.len());
                        let _ = client_write.write_all(head.as_bytes()).await;
                        let _ = client_write.write_all(body.as_bytes()).await;
                        let _ = client_write.shutdown().await;
                        return;
                    }
                },
                _ => read.await,
            };
            let n = match n {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            asked_at.store(0, Relaxed);
            if client_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
            Usage::add(&counters.bytes_out, n as u64);
        }
        let _ = client_write.shutdown().await;
    };
    // Either direction failing ends the connection; a clean end waits for the other.
    tokio::join!(inbound, outbound);
}

/// Reads, unless a request has waited `limit` for its answer (then `None`).
async fn unanswered<F>(
    read: F,
    asked_at: &AtomicU64,
    epoch: Instant,
    limit: Duration,
) -> Option<F::Output>
where
    F: Future,
{
    tokio::pin!(read);
    let tick = (limit / 10).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            result = &mut read => return Some(result),
            () = tokio::time::sleep(tick) => {
                let asked = asked_at.load(Relaxed);
                if asked != 0 && epoch + Duration::from_millis(asked - 1) + limit <= Instant::now() {
                    return None;
                }
            }
        }
    }
}
