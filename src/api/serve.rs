//! Serving the router on a listener (the unix socket, or TCP): one task per connection,
//! so a slow or abandoned client holds only its own, and a deadline for each request's
//! head, so a client that connects and says nothing is closed rather than kept forever.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};

/// How long a client may take to send a request's line and headers.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Something that hands out connections.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&mut self) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&mut self) -> std::io::Result<Self::Io> {
        tokio::net::UnixListener::accept(self)
            .await
            .map(|(io, _)| io)
    }
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&mut self) -> std::io::Result<Self::Io> {
        let (io, _) = tokio::net::TcpListener::accept(self).await?;
        // Answers are small and written whole; do not hold them back.
        let _ = io.set_nodelay(true);
        Ok(io)
    }
}

/// The next connection. A failed accept (out of descriptors, or a client gone before it
/// was accepted) leaves the listener fine: it is reported, and accepting pauses a
/// moment so a full descriptor table is not spun on.
pub async fn next<L: Accept>(listener: &mut L, what: &str) -> L::Io {
    loop {
        match listener.accept().await {
            Ok(io) => return io,
            Err(error) => {
                report_accept_error(&error, what);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// An accept loop running in its own task, until it is closed: the proxies' and the
/// model router's listeners, which come and go with reloads.
#[derive(Debug)]
pub struct AcceptLoop {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl AcceptLoop {
    /// Accepts on `listener` (named `what` in reports), handing each client to
    /// `client`, which spawns what serves it.
    pub fn start<L: Accept>(
        mut listener: L,
        what: String,
        client: impl Fn(L::Io) + Send + 'static,
    ) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    io = next(&mut listener, &what) => client(io),
                    _ = &mut stopped => return,
                }
            }
        });
        Self { stop, task }
    }

    /// Ends the accept loop and returns once its listener is closed.
    pub async fn close(self) {
        drop(self.stop);
        let _ = self.task.await;
    }
}

/// Serves `router` on `listener` until the task is dropped.
pub async fn serve<L: Accept>(mut listener: L, router: Router) {
    loop {
        let io = next(&mut listener, "the API").await;
        tokio::spawn(serve_connection(io, router.clone()));
    }
}

/// Answers the requests of one connection until the client closes it or falls silent.
pub async fn serve_connection<Io>(io: Io, router: Router)
where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
    // A client that goes away mid-answer is its own business.
    let _ = connection.await;
}

fn report_accept_error(error: &std::io::Error, what: &str) {
    if !matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
    ) {
        crate::supervisor::warn(format_args!(
            "{what} could not accept a connection: {error}"
        ));
    }
}
