//! On-demand services behind a TCP proxy: muster listens on `proxy.listen` from the
//! start; a connection to a service that is not healthy makes the same single-flight
//! `ensure` the API uses, waits for it, then is forwarded to `proxy.upstream`. Many
//! clients, one instance.
//!
//! With `proxy.http = true` a client that cannot be served gets an HTTP answer (503
//! with the cause as JSON, or 504 past `request-timeout`) instead of a closed
//! connection, and a forwarded request that gets no answer within `request-timeout` is
//! answered 504.
//!
//! A connection starts its service at most once: when that start fails (or the service
//! dies and is not restarting by its own policy), the connection is refused at once,
//! never turned into a new start. The listeners follow the config: [`manage`] binds the
//! proxies a reload adds, closes the ones it removes, and closes all of them when the
//! shutdown begins.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::watch;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::api::serve::AcceptLoop as Serving;
use crate::config::{Proxy, ServiceName, Spec};
use crate::supervisor::usage::{ProxyCounters, Usage};
use crate::supervisor::{Failure, Lifecycle, Phase, Supervisor};

mod balanced;

/// The largest read buffer of one direction of a connection.
const BUFFER: usize = 256 * 1024;
/// Where a direction's buffer starts: a short connection allocates 32 KiB, not the
/// 512 KiB of two full buffers (1,000 short connections spent their time in `mmap`).
const FIRST_BUFFER: usize = 16 * 1024;

/// How many connections the kernel queues for a proxy before it accepts them: a burst
/// of 1,000 clients overflowed the 1,024 tokio asks for by default, and each SYN dropped
/// cost its client a one-second retransmission.
const BACKLOG: u32 = 4096;

/// A listener on `address`, with [`BACKLOG`].
fn listen(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(BACKLOG)
}

/// A read buffer that doubles, up to [`BUFFER`], each time a read fills it: a bulk
/// stream soon reads in large pieces, a request and its answer never grow it.
struct Buffer(Vec<u8>);

impl Buffer {
    fn new() -> Self {
        Self(vec![0; FIRST_BUFFER])
    }

    fn read_into(&mut self) -> &mut [u8] {
        &mut self.0
    }

    /// After a read of `n` bytes.
    fn filled(&mut self, n: usize) {
        if n == self.0.len() && n < BUFFER {
            self.0.resize(n * 2, 0);
        }
    }
}

/// The proxies of a config, bound: every `listen` address is taken before any service
/// starts, so a clash is known at once.
pub async fn bind(spec: &Spec) -> Result<Vec<(ServiceName, TcpListener)>, String> {
    let mut bound = Vec::new();
    for (name, proxy) in proxies(spec) {
        let listener = listen(proxy.listen).map_err(|error| {
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
                "cannot listen on {} (services.{name}.proxy.listen): {why}",
                proxy.listen
            )
        })?;
        bound.push((name.clone(), listener));
    }
    Ok(bound)
}

/// Serves the proxies bound at the start, then keeps the listeners in step with the
/// config in force: a reload that adds a proxy (or moves one's `listen`) binds it, one
/// that removes it closes it; during the shutdown every new client is turned away
/// with the reason, and once it is done they all close. Each step is reported to the
/// supervisor, whose `reload` answers only once its proxies listen.
pub async fn manage(supervisor: Arc<Supervisor>, bound: Vec<(ServiceName, TcpListener)>) {
    let mut serving: BTreeMap<ServiceName, (SocketAddr, Serving)> = BTreeMap::new();
    for (name, listener) in bound {
        let Ok(address) = listener.local_addr() else {
            continue;
        };
        let started = start_serving(listener, &supervisor, &name);
        serving.insert(name, (address, started));
    }
    let mut graph = supervisor.watch_graph();
    supervisor.manage_proxies();
    loop {
        let current = Arc::clone(&graph.borrow_and_update());
        if current.lifecycle == Lifecycle::Done {
            for (_, (_, started)) in std::mem::take(&mut serving) {
                started.close().await;
            }
            supervisor.proxies_synced(current.generation);
            return;
        }
        // While the shutdown runs the listeners stay: a client is told why it is not
        // served (503 in HTTP mode) rather than refused by the kernel.
        if current.lifecycle == Lifecycle::ShuttingDown {
            supervisor.proxies_synced(current.generation);
            if graph.changed().await.is_err() {
                return;
            }
            continue;
        }
        let wanted: BTreeMap<&ServiceName, SocketAddr> = proxies(&current.spec)
            .map(|(name, proxy)| (name, proxy.listen))
            .collect();
        let gone: Vec<ServiceName> = serving
            .iter()
            .filter(|(name, (address, _))| wanted.get(name) != Some(address))
            .map(|(name, _)| name.clone())
            .collect();
        // Closed before the reload is answered: a client then finds nothing listening.
        for name in gone {
            if let Some((_, started)) = serving.remove(&name) {
                started.close().await;
            }
        }
        for (name, address) in wanted {
            if serving.contains_key(name) {
                continue;
            }
            match listen(address) {
                Ok(listener) => {
                    let started = start_serving(listener, &supervisor, name);
                    serving.insert(name.clone(), (address, started));
                }
                Err(error) => crate::supervisor::warn(format_args!(
                    "cannot listen on {address} (services.{name}.proxy.listen): {error}; \
                     its clients cannot connect until the address is free and the config is \
                     reloaded"
                )),
            }
        }
        supervisor.proxies_synced(current.generation);
        if graph.changed().await.is_err() {
            return;
        }
    }
}

/// Every proxy of a config, by the name it is for: a service, or a service with
/// `replicas`, whose instances share one listener.
fn proxies(spec: &Spec) -> impl Iterator<Item = (&ServiceName, &Proxy)> {
    spec.services.values().filter_map(|service| {
        let proxy = service.proxy.as_ref()?;
        match &service.replica {
            None => Some((&service.name, proxy)),
            Some(replica) if replica.index == 0 => Some((&replica.set, proxy)),
            Some(_) => None,
        }
    })
}

/// Starts the accept loop of `name`'s proxy.
fn start_serving(
    listener: TcpListener,
    supervisor: &Arc<Supervisor>,
    name: &ServiceName,
) -> Serving {
    let supervisor = Arc::clone(supervisor);
    let owner = name.clone();
    Serving::start(listener, format!("the proxy of `{name}`"), move |client| {
        tokio::spawn(connection(client, Arc::clone(&supervisor), owner.clone()));
    })
}

/// One client: wait for the service if need be, then forward both ways.
async fn connection(client: TcpStream, supervisor: Arc<Supervisor>, name: ServiceName) {
    if supervisor.spec().replica_sets.contains_key(&name) {
        return balanced::connection(client, supervisor, name).await;
    }
    single(client, supervisor, name).await;
}

/// A client of a service without replicas.
async fn single(mut client: TcpStream, supervisor: Arc<Supervisor>, name: ServiceName) {
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
    // Once the shutdown has begun no client is served: its service is about to stop.
    if *supervisor.closing().borrow() {
        Usage::add(&counters.refused, 1);
        let refusal = Refusal::Failed(
            crate::supervisor::Failure::ShuttingDown.to_string(),
            Vec::new(),
        );
        refuse(&mut client, &proxy, refusal).await;
        return;
    }
    if handle.service.singleton.is_some()
        && let Some(cluster) = &supervisor.spec().cluster
    {
        return singleton(
            client,
            &supervisor,
            &handle,
            &proxy,
            counters,
            cluster.lease_ttl,
        )
        .await;
    }
    let began = Instant::now();
    let budget = supervisor.spec().start_budget(&name);
    let deadline = began + proxy.request_timeout.map_or(budget, |t| t.min(budget));
    // Whether this connection has asked for a start: it asks once. A start that fails,
    // or a service that dies and will not come back by its own restart policy, ends the
    // connection; a new start per retry was a spawn storm.
    let mut asked = false;
    let mut retry = Duration::from_millis(10);
    let upstream = loop {
        let status = handle.status();
        if status.phase != Phase::Healthy {
            if asked && status.phase.is_settled() {
                Usage::add(&counters.refused, 1);
                let explanation = supervisor.explain(status);
                let refusal = Refusal::Failed(
                    crate::supervisor::chain(&explanation.cause),
                    explanation.log_tail,
                );
                refuse(&mut client, &proxy, refusal).await;
                return;
            }
            asked = true;
            if let Err(refusal) =
                wait_for_start(&supervisor, &name, &proxy, counters, deadline).await
            {
                Usage::add(&counters.refused, 1);
                refuse(&mut client, &proxy, refusal).await;
                return;
            }
        }
        match TcpStream::connect(upstream_of(&proxy, &handle.status())).await {
            Ok(upstream) => break upstream,
            // Healthy a moment ago, refused now: it crashed or is restarting, or it
            // has not opened its port yet (no readiness probe). Wait until muster
            // notices (the state changes) or a moment passes, then go round: the next
            // healthy run, within the same deadline.
            Err(_) if Instant::now() < deadline => {
                let mut status = handle.watch();
                if status.borrow_and_update().phase == Phase::Healthy {
                    let _ = tokio::time::timeout(retry, status.changed()).await;
                    retry = (retry * 2).min(Duration::from_millis(500));
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
    // Small writes (a request, an answer) go at once both ways.
    let _ = client.set_nodelay(true);
    Usage::add(&counters.served, 1);
    forward(client, upstream, counters, &proxy).await;
}

/// Where a run is reached: `proxy.upstream`, whose port 0 stands for the run's own
/// (`{port}` with `port = "auto"`).
fn upstream_of(proxy: &Proxy, status: &crate::supervisor::Status) -> SocketAddr {
    match (proxy.upstream.port(), status.port) {
        (0, Some(port)) => SocketAddr::new(proxy.upstream.ip(), port),
        _ => proxy.upstream,
    }
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
    result.map(drop).map_err(|failure| refusal(name, failure))
}

/// Why a failed start turns a client away.
fn refusal(name: &ServiceName, failure: Failure) -> Refusal {
    match failure {
        Failure::ShuttingDown => {
            Refusal::Failed("the supervisor is shutting down".to_owned(), Vec::new())
        }
        Failure::Refused(why) => Refusal::Failed(why, Vec::new()),
        Failure::Unknown(name) => {
            Refusal::Failed(format!("`{name}` was removed from the config"), Vec::new())
        }
        Failure::NotHealthy(explanation) => Refusal::Failed(
            crate::supervisor::chain(&explanation.cause),
            explanation.log_tail.clone(),
        ),
        Failure::Timeout { after, explanation } => Refusal::Timeout(format!(
            "`{name}` was not healthy within {}: {}",
            crate::supervisor::machine::human(after),
            crate::supervisor::chain(&explanation.cause)
        )),
    }
}

/// A client of a singleton (`[cluster]`): forwarded to wherever it runs now, this host
/// or its owner's advertised endpoint, starting it here if no host runs it and this
/// host is a candidate. A connection refused there (the owner just died, and its
/// record lives until its lease ends) is tried again, against the next owner, until
/// the deadline: the start budget plus a lease TTL, the longest a failover takes.
async fn singleton(
    mut client: TcpStream,
    supervisor: &Supervisor,
    handle: &crate::supervisor::actor::ServiceHandle,
    proxy: &Proxy,
    counters: &ProxyCounters,
    ttl: Duration,
) {
    let name = handle.name().clone();
    let budget = supervisor.spec().start_budget(&name) + ttl;
    let deadline = Instant::now() + proxy.request_timeout.map_or(budget, |t| t.min(budget));
    let mut retry = Duration::from_millis(10);
    let upstream = loop {
        let placed = {
            let waiting = counters.waiting.fetch_add(1, Relaxed);
            let _waiting = Decrement(&counters.waiting);
            if waiting as usize >= proxy.max_pending {
                Usage::add(&counters.refused, 1);
                refuse(&mut client, proxy, Refusal::Busy(proxy.max_pending)).await;
                return;
            }
            let began = Instant::now();
            let left = deadline.saturating_duration_since(began);
            let placed = crate::cluster::ensure::ensure(supervisor, name.as_str(), left).await;
            Usage::add(&counters.wait_micros, began.elapsed().as_micros() as u64);
            placed
        };
        let placed = match placed {
            Some(Ok(placed)) => placed,
            Some(Err(failure)) => {
                Usage::add(&counters.refused, 1);
                refuse(&mut client, proxy, refusal(&name, failure)).await;
                return;
            }
            None => return,
        };
        let address = if placed.here {
            Some(upstream_of(proxy, &handle.status()))
        } else {
            placed
                .endpoint
                .as_deref()
                .and_then(|e| e.parse::<SocketAddr>().ok())
        };
        let Some(address) = address else {
            Usage::add(&counters.refused, 1);
            let cause = format!(
                "`{name}` runs on host `{}`, which publishes no endpoint for it",
                placed.host
            );
            refuse(&mut client, proxy, Refusal::Failed(cause, Vec::new())).await;
            return;
        };
        match TcpStream::connect(address).await {
            Ok(upstream) => break upstream,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_millis(500));
            }
            Err(error) => {
                Usage::add(&counters.refused, 1);
                let cause = format!(
                    "`{name}` runs on host `{}` but {address} refused: {error}",
                    placed.host
                );
                refuse(&mut client, proxy, Refusal::Failed(cause, Vec::new())).await;
                return;
            }
        }
    };
    let _ = upstream.set_nodelay(true);
    Usage::add(&counters.served, 1);
    forward(client, upstream, counters, proxy).await;
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

/// Copies both ways until both sides are done. A side that ends its sending is
/// half-closed on the other; an error on either side ends both.
async fn forward(client: TcpStream, upstream: TcpStream, counters: &ProxyCounters, proxy: &Proxy) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    // With `http` and `request-timeout`: when the oldest request still without an
    // answer was sent.
    let (asked_at, _) = watch::channel(None::<Instant>);
    let watch_requests = proxy.http && proxy.request_timeout.is_some();
    let inbound = async {
        let mut buffer = Buffer::new();
        loop {
            let n = match client_read.read(buffer.read_into()).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if watch_requests {
                asked_at.send_if_modified(|asked| {
                    let first = asked.is_none();
                    if first {
                        *asked = Some(Instant::now());
                    }
                    first
                });
            }
            if upstream_write.write_all(&buffer.0[..n]).await.is_err() {
                return;
            }
            buffer.filled(n);
            Usage::add(&counters.bytes_in, n as u64);
        }
        let _ = upstream_write.shutdown().await;
    };
    let outbound = async {
        let mut buffer = Buffer::new();
        loop {
            let read = upstream_read.read(buffer.read_into());
            let n = match (watch_requests, proxy.request_timeout) {
                (true, Some(limit)) => match unanswered(read, &asked_at, limit).await {
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
            asked_at.send_if_modified(|asked| asked.take().is_some());
            if client_write.write_all(&buffer.0[..n]).await.is_err() {
                return;
            }
            buffer.filled(n);
            Usage::add(&counters.bytes_out, n as u64);
        }
        let _ = client_write.shutdown().await;
    };
    // Either direction failing ends the connection; a clean end waits for the other.
    tokio::join!(inbound, outbound);
}

/// Reads, unless a request has waited `limit` for its answer (then `None`). A timer
/// armed for the oldest unanswered request, re-armed when that changes.
async fn unanswered<F>(
    read: F,
    asked_at: &watch::Sender<Option<Instant>>,
    limit: Duration,
) -> Option<F::Output>
where
    F: Future,
{
    tokio::pin!(read);
    let mut asked = asked_at.subscribe();
    loop {
        let since = *asked.borrow_and_update();
        let expiry = async {
            match since {
                Some(at) => tokio::time::sleep_until(at + limit).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = &mut read => return Some(result),
            () = expiry => return None,
            _ = asked.changed() => {}
        }
    }
}
