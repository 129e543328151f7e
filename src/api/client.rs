//! A client for the API on the unix socket, for the CLI: one request per connection,
//! JSON in and out. An answer is read as the type its endpoint promises (the types in
//! [`crate::api::model`], which the server writes): [`Answer::outcome`] gives the
//! document, or the error body of a failed request, or says which endpoint answered
//! with something else.
//!
//! Every wait has a deadline. A supervisor that does not answer (stopped with SIGSTOP,
//! or stuck) accepts connections all the same, since the kernel queues them, so without
//! one a client waited forever. A request that runs out of patience says which process
//! did not answer (the socket's peer, from `SO_PEERCRED`) and, when `/proc` says it is
//! stopped, how to resume it.
//!
//! A supervisor is reached at an [`Endpoint`]: its unix socket (the CLI's way), or its
//! optional TCP listener (`[settings.api] listen`) with a bearer token, as `muster ui
//! --url` does for a supervisor on another host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

use super::model::ErrorBody;

/// How long a plain request waits for its answer unless told otherwise.
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(10);

/// How long a request waits, counted from when it begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patience {
    /// How long a plain answer may take, and how long the supervisor may stay stopped
    /// (SIGSTOP) during any wait before the client gives up.
    pub limit: Duration,
    /// How much longer the answer may take because the server first waits for
    /// something (`ensure`'s timeout, a waiting `start`).
    pub wait: Duration,
    /// A follow: once the answer's head has come, the rest goes on without limit.
    pub follow: bool,
}

impl Patience {
    /// A request answered at once: `limit` for all of it.
    pub fn plain(limit: Duration) -> Self {
        Self {
            limit,
            wait: Duration::ZERO,
            follow: false,
        }
    }

    /// A request the server answers once something has happened, which it may take up
    /// to `wait` to see: that long more than `limit`.
    pub fn waiting(limit: Duration, wait: Duration) -> Self {
        Self {
            wait,
            ..Self::plain(limit)
        }
    }

    /// A follow: the head within `limit`, then the answer for as long as it goes on.
    pub fn follow(limit: Duration) -> Self {
        Self {
            follow: true,
            ..Self::plain(limit)
        }
    }

    /// How long until the answer's head, and (unless following) all of it.
    fn total(&self) -> Duration {
        self.limit.saturating_add(self.wait)
    }
}

impl Default for Patience {
    fn default() -> Self {
        Self::plain(DEFAULT_PATIENCE)
    }
}

/// Where a supervisor answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Its unix socket, `state-dir/muster.sock` (no token: the file's mode is the
    /// access control).
    Socket(PathBuf),
    /// Its TCP listener, `http://host:port`, with the bearer token each request carries.
    Tcp {
        /// As the user wrote it, for messages.
        url: String,
        /// `host:port`, to connect to and for the `Host` header.
        authority: String,
        token: Option<String>,
    },
}

impl Endpoint {
    /// A supervisor's TCP listener at `url` (`http://host:port`, a trailing `/` allowed).
    pub fn remote(url: &str, token: Option<String>) -> Result<Self, String> {
        let uri: hyper::Uri = url.parse().map_err(|error| {
            format!("`{url}` is not a URL ({error}); write it as http://host:7070")
        })?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(format!(
                    "`{url}`: muster's API listener speaks plain http, not {other}; write it \
                     as http://host:port (put a TLS tunnel in front for another network)"
                ));
            }
            None => {
                return Err(format!(
                    "`{url}` has no scheme; write it as http://host:7070"
                ));
            }
        }
        let Some(authority) = uri.authority() else {
            return Err(format!(
                "`{url}` names no host; write it as http://host:7070"
            ));
        };
        if authority.port_u16().is_none() {
            return Err(format!(
                "`{url}` names no port; write the listener's, as in http://{}:7070",
                authority.host()
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "`{url}` has a path; give only the listener, as in http://{authority}"
            ));
        }
        Ok(Self::Tcp {
            url: format!("http://{authority}"),
            authority: authority.to_string(),
            token,
        })
    }

    /// How messages name it: the socket's path, or the URL.
    pub fn place(&self) -> PathBuf {
        match self {
            Self::Socket(path) => path.clone(),
            Self::Tcp { url, .. } => PathBuf::from(url),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.place().display())
    }
}

/// Why a request got no answer. `socket` is the socket's path, or the URL of a
/// supervisor reached over TCP.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no supervisor is running for this state directory ({})", socket.display())]
    NotRunning { socket: PathBuf },
    #[error("cannot reach the supervisor at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{}", no_answer(socket, *after, *pid, *stopped))]
    NoAnswer {
        socket: PathBuf,
        after: Duration,
        /// The supervisor's process, when known.
        pid: Option<u32>,
        /// Whether that process is stopped (by SIGSTOP or job control), as `/proc` says.
        stopped: bool,
    },
    #[error("talking to the supervisor at {}: {message}", socket.display())]
    Broken { socket: PathBuf, message: String },
}

impl ClientError {
    /// No answer from `pid` (if known) within `after`.
    fn no_answer(socket: &Path, after: Duration, pid: Option<u32>) -> Self {
        Self::NoAnswer {
            socket: socket.to_path_buf(),
            after,
            pid,
            stopped: pid.is_some_and(is_stopped),
        }
    }
}

/// Whether a process is stopped (SIGSTOP, SIGTSTP, or a tracer), as `/proc` says.
pub fn is_stopped(pid: u32) -> bool {
    crate::supervisor::procfs::stat(pid).is_some_and(|stat| matches!(stat.state, 'T' | 't'))
}

/// "the supervisor (pid 42) did not answer within 10s: it is stopped ...".
fn no_answer(socket: &Path, after: Duration, pid: Option<u32>, stopped: bool) -> String {
    let within = crate::supervisor::machine::human(after);
    match pid {
        Some(pid) if stopped => format!(
            "the supervisor (pid {pid}) did not answer within {within}: it is stopped \
             (SIGSTOP, or Ctrl-Z in its terminal); resume it with `kill -CONT {pid}`"
        ),
        Some(pid) => format!(
            "the supervisor (pid {pid}) did not answer within {within}; it is busy or stuck"
        ),
        None => format!(
            "the supervisor at {} did not answer within {within}",
            socket.display()
        ),
    }
}

/// An answer: the status code and the JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// The body as JSON; a body that is not JSON is here as a string.
    pub body: serde_json::Value,
    /// The supervisor's process (the socket's peer), when the system says.
    pub pid: Option<u32>,
    /// What was asked, such as `GET /v1/services`: a body that cannot be read says so.
    pub asked: String,
}

impl Answer {
    /// The body as the document `T` (whatever the status).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Unreadable> {
        T::deserialize(&self.body).map_err(|error| Unreadable {
            asked: self.asked.clone(),
            status: self.status,
            pid: self.pid,
            problem: match &self.body {
                // No endpoint answers a bare string: this body was not JSON at all.
                serde_json::Value::String(text) => format!("not JSON: {}", excerpt(text)),
                _ => error.to_string(),
            },
        })
    }

    /// A success as the document `T` its endpoint promises, a failure as the error body
    /// every endpoint shares.
    pub fn outcome<T: DeserializeOwned>(&self) -> Result<Result<T, ErrorBody>, Unreadable> {
        if self.status.is_success() {
            self.parse().map(Ok)
        } else {
            self.parse().map(Err)
        }
    }
}

/// An answer that is not the document its endpoint promises: a supervisor of another
/// version of muster, most likely, still running from before an upgrade.
#[derive(Debug, thiserror::Error)]
#[error(
    "the supervisor{} answered {asked} with {status} and a body this muster cannot read \
     ({problem}); if it runs another version of muster, restart it (`muster down`, then \
     `muster up`)",
    pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
)]
pub struct Unreadable {
    pub asked: String,
    pub status: StatusCode,
    pub pid: Option<u32>,
    /// What is wrong with the body: a missing field, an unknown state, not JSON.
    pub problem: String,
}

/// The start of a long text, on one line.
fn excerpt(text: &str) -> String {
    const LIMIT: usize = 200;
    let line: String = text.chars().take(LIMIT).collect();
    let line = line.replace(['\n', '\r'], " ");
    if text.chars().count() > LIMIT {
        format!("{line:?}...")
    } else {
        format!("{line:?}")
    }
}

/// The JSON of a body, or (when it is not JSON) its text as a string.
fn json_or_text(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// `GET /v1/services`: how answers name what was asked.
fn asked(method: &Method, path: &str) -> String {
    format!("{method} {path}")
}

/// Sends one request to the supervisor listening on `socket`, with the default patience.
pub async fn request(socket: &Path, method: Method, path: &str) -> Result<Answer, ClientError> {
    request_within(socket, method, path, Patience::default()).await
}

/// Sends one request to the supervisor listening on `socket`, waiting at most `patience`.
pub async fn request_within(
    socket: &Path,
    method: Method,
    path: &str,
    patience: Patience,
) -> Result<Answer, ClientError> {
    request_at(
        &Endpoint::Socket(socket.to_path_buf()),
        method,
        path,
        patience,
    )
    .await
}

/// Sends one request to the supervisor at `endpoint`, waiting at most `patience`.
pub async fn request_at(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    patience: Patience,
) -> Result<Answer, ClientError> {
    fetch_at(endpoint, method, path, patience)
        .await
        .map(Raw::into_answer)
}

/// [`request_within`], the body left as the bytes that came: for an answer of
/// megabytes (the list of ten thousand services) that is read as its document or
/// printed as it is, without a [`serde_json::Value`] in between.
pub async fn fetch_within(
    socket: &Path,
    method: Method,
    path: &str,
    patience: Patience,
) -> Result<Raw, ClientError> {
    fetch_at(
        &Endpoint::Socket(socket.to_path_buf()),
        method,
        path,
        patience,
    )
    .await
}

/// An answer whose body has not been read as JSON yet.
#[derive(Debug)]
pub struct Raw {
    pub status: StatusCode,
    pub bytes: Bytes,
    /// The supervisor's process (the socket's peer), when the system says.
    pub pid: Option<u32>,
    /// What was asked, such as `GET /v1/services`.
    pub asked: String,
}

impl Raw {
    /// The answer with its body as JSON (or, when it is not JSON, as a string).
    pub fn into_answer(self) -> Answer {
        Answer {
            status: self.status,
            body: json_or_text(&self.bytes),
            pid: self.pid,
            asked: self.asked,
        }
    }

    /// [`Answer::outcome`], read straight from the bytes.
    pub fn outcome<T: DeserializeOwned>(&self) -> Result<Result<T, ErrorBody>, Unreadable> {
        if self.status.is_success() {
            self.parse().map(Ok)
        } else {
            self.parse().map(Err)
        }
    }

    fn parse<T: DeserializeOwned>(&self) -> Result<T, Unreadable> {
        serde_json::from_slice(&self.bytes).map_err(|error| Unreadable {
            asked: self.asked.clone(),
            status: self.status,
            pid: self.pid,
            problem: if serde_json::from_slice::<serde::de::IgnoredAny>(&self.bytes).is_err() {
                format!(
                    "not JSON: {}",
                    excerpt(&String::from_utf8_lossy(&self.bytes))
                )
            } else {
                error.to_string()
            },
        })
    }
}

async fn fetch_at(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    patience: Patience,
) -> Result<Raw, ClientError> {
    let began = Instant::now();
    let asked = asked(&method, path);
    let place = endpoint.place();
    let socket = place.as_path();
    let head = open(endpoint, method, path, patience).await?;
    let pid = head.pid;
    let collect = head.body.collect();
    let collected = if patience.follow {
        collect.await
    } else {
        within(socket, pid, patience, began, collect).await?
    };
    let bytes = collected
        .map_err(|e| broken(socket, e.to_string()))?
        .to_bytes();
    Ok(Raw {
        status: head.status,
        bytes,
        pid,
        asked,
    })
}

/// A GET whose answer streams: `line` is called with each line as it arrives, until
/// the server ends the answer. An error answer is returned whole instead.
pub async fn each_line(
    socket: &Path,
    path: &str,
    line: impl FnMut(&str),
) -> Result<Option<Answer>, ClientError> {
    match follow(socket, path, Patience::follow(DEFAULT_PATIENCE)).await? {
        Ok(mut stream) => stream.each_line(line).await.map(|()| None),
        Err(answer) => Ok(Some(answer)),
    }
}

/// A streamed answer whose head has come: its headers, then its lines.
#[derive(Debug)]
pub struct Stream {
    socket: PathBuf,
    pub headers: HeaderMap,
    /// The supervisor's process (the socket's peer), when the system says.
    pub pid: Option<u32>,
    asked: String,
    body: Incoming,
}

/// Reads the items of a [`Stream`] (JSON lines, or events' `data`) as documents, while
/// the stream is being read.
#[derive(Debug, Clone)]
pub struct Reader {
    asked: String,
    pid: Option<u32>,
}

impl Reader {
    /// One item as the document `T`.
    pub fn parse<T: DeserializeOwned>(&self, text: &str) -> Result<T, Unreadable> {
        serde_json::from_str(text).map_err(|error| Unreadable {
            asked: self.asked.clone(),
            status: StatusCode::OK,
            pid: self.pid,
            problem: format!("{error} in {}", excerpt(text)),
        })
    }
}

impl Stream {
    /// What reads this stream's items.
    pub fn reader(&self) -> Reader {
        Reader {
            asked: self.asked.clone(),
            pid: self.pid,
        }
    }

    /// Calls `line` with each line as it arrives, until the server ends the answer.
    /// An answer cut off (the supervisor went away) is an error.
    pub async fn each_line(&mut self, mut line: impl FnMut(&str)) -> Result<(), ClientError> {
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = self.body.frame().await {
            let frame = frame.map_err(|e| broken(&self.socket, e.to_string()))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let text: Vec<u8> = pending.drain(..=end).collect();
                line(String::from_utf8_lossy(&text[..end]).trim_end_matches('\r'));
            }
        }
        if !pending.is_empty() {
            line(&String::from_utf8_lossy(&pending));
        }
        Ok(())
    }
}

/// A GET whose answer streams, once its head has come within `patience`; an error
/// answer is read whole (within `patience` too) and returned instead.
pub async fn follow(
    socket: &Path,
    path: &str,
    patience: Patience,
) -> Result<Result<Stream, Answer>, ClientError> {
    follow_at(&Endpoint::Socket(socket.to_path_buf()), path, patience).await
}

/// [`follow`] from the supervisor at `endpoint`.
pub async fn follow_at(
    endpoint: &Endpoint,
    path: &str,
    patience: Patience,
) -> Result<Result<Stream, Answer>, ClientError> {
    let began = Instant::now();
    let place = endpoint.place();
    let socket = place.as_path();
    let head = open(endpoint, Method::GET, path, patience).await?;
    if head.status.is_success() {
        return Ok(Ok(Stream {
            socket: socket.to_path_buf(),
            headers: head.headers,
            pid: head.pid,
            asked: asked(&Method::GET, path),
            body: head.body,
        }));
    }
    let pid = head.pid;
    let bytes = within(socket, pid, patience, began, head.body.collect())
        .await?
        .map_err(|e| broken(socket, e.to_string()))?
        .to_bytes();
    Ok(Err(Answer {
        status: head.status,
        body: json_or_text(&bytes),
        pid,
        asked: asked(&Method::GET, path),
    }))
}

fn broken(socket: &Path, message: String) -> ClientError {
    ClientError::Broken {
        socket: socket.to_path_buf(),
        message,
    }
}

/// An answer's head, its body still to read.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    pid: Option<u32>,
    body: Incoming,
}

/// Connects, sends the request and waits for the answer's head, all within
/// `patience` (less, if the supervisor is stopped all the while).
async fn open(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    patience: Patience,
) -> Result<Head, ClientError> {
    let began = Instant::now();
    let place = endpoint.place();
    let socket = place.as_path();
    let (response, pid) = match endpoint {
        Endpoint::Socket(socket) => {
            let stream = connect(socket, began + patience.total(), patience.total()).await?;
            let pid = stream
                .peer_cred()
                .ok()
                .and_then(|cred| cred.pid())
                .and_then(|pid| u32::try_from(pid).ok())
                .filter(|&pid| pid > 0);
            let exchange = exchange(stream, socket, method, path, "muster", None);
            (within(socket, pid, patience, began, exchange).await??, pid)
        }
        Endpoint::Tcp {
            url,
            authority,
            token,
        } => {
            let unreachable = |message: String| ClientError::Unreachable {
                url: url.clone(),
                message,
            };
            let connecting = TcpStream::connect(authority.as_str());
            let stream = match tokio::time::timeout_at(began + patience.total(), connecting).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return Err(unreachable(error.to_string())),
                Err(_) => return Err(ClientError::no_answer(socket, patience.total(), None)),
            };
            let exchange = exchange(stream, socket, method, path, authority, token.as_deref());
            (
                within(socket, None, patience, began, exchange).await??,
                None,
            )
        }
    };
    let status = response.status();
    let (parts, body) = response.into_parts();
    Ok(Head {
        status,
        headers: parts.headers,
        pid,
        body,
    })
}

/// Sends the request on a connected stream and waits for the answer's head.
async fn exchange<S>(
    stream: S,
    socket: &Path,
    method: Method,
    path: &str,
    host: &str,
    token: Option<&str>,
) -> Result<hyper::Response<Incoming>, ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| broken(socket, e.to_string()))?;
    // The connection task ends by itself once the body has been read (or dropped).
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host);
    if let Some(token) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|e| broken(socket, e.to_string()))?;
    sender
        .send_request(request)
        .await
        .map_err(|e| broken(socket, e.to_string()))
}

/// `work`, unless the answer is not in by `began + patience.total()`, or the
/// supervisor `pid` stays stopped for `patience.limit` in the meantime (a long wait,
/// such as `ensure`'s, need not be sat out to learn that no one is working on it).
async fn within<T>(
    socket: &Path,
    pid: Option<u32>,
    patience: Patience,
    began: Instant,
    work: impl Future<Output = T>,
) -> Result<T, ClientError> {
    let total = patience.total();
    tokio::select! {
        done = tokio::time::timeout_at(began + total, work) => {
            done.map_err(|_| ClientError::no_answer(socket, total, pid))
        }
        () = stopped_for(pid, patience.limit) => {
            Err(ClientError::no_answer(socket, patience.limit, pid))
        }
    }
}

/// Resolves once process `pid` has been stopped for `limit` without a break; never,
/// without a pid.
async fn stopped_for(pid: Option<u32>, limit: Duration) {
    let Some(pid) = pid else {
        return std::future::pending().await;
    };
    let mut since: Option<Instant> = None;
    loop {
        if is_stopped(pid) {
            if since.get_or_insert_with(Instant::now).elapsed() >= limit {
                return;
            }
        } else {
            since = None;
        }
        tokio::time::sleep(STOPPED_POLL).await;
    }
}

/// How often a waiting client looks at whether the supervisor is stopped.
const STOPPED_POLL: Duration = Duration::from_millis(100);

/// Connects to `socket` by `deadline`. A unix socket whose listen queue is full (a
/// burst of clients faster than the supervisor accepts, or a supervisor that accepts
/// nothing) refuses a non-blocking connect with EAGAIN, where a blocking one would wait
/// its turn; with ten thousand clients connecting at once, `status` failed that way. So
/// wait for room, until the deadline.
async fn connect(
    socket: &Path,
    deadline: Instant,
    patience: Duration,
) -> Result<UnixStream, ClientError> {
    loop {
        match UnixStream::connect(socket).await {
            Ok(stream) => return Ok(stream),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(ClientError::NotRunning {
                    socket: socket.to_path_buf(),
                });
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(ClientError::no_answer(
                        socket,
                        patience,
                        lock_holder(socket),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(error) => return Err(broken(socket, error.to_string())),
        }
    }
}

/// The pid the supervisor wrote in its state lock (beside the socket), when a client
/// could not even connect to ask the socket's peer.
fn lock_holder(socket: &Path) -> Option<u32> {
    let lock = socket.with_file_name("lock");
    std::fs::read_to_string(lock).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::model::ServiceList;

    fn answer(status: StatusCode, body: &[u8]) -> Answer {
        Answer {
            status,
            body: json_or_text(body),
            pid: Some(42),
            asked: asked(&Method::GET, "/v1/services"),
        }
    }

    #[test]
    fn a_body_that_is_not_the_promised_document_names_the_endpoint_and_what_is_wrong() {
        let old = answer(StatusCode::OK, br#"{"booted": true, "services": []}"#);
        let error = old.outcome::<ServiceList>().unwrap_err().to_string();
        assert!(
            error.contains("(pid 42) answered GET /v1/services with 200 OK"),
            "{error}"
        );
        assert!(error.contains("missing field `lifecycle`"), "{error}");
        assert!(error.contains("`muster down`, then `muster up`"), "{error}");

        let text = answer(StatusCode::BAD_GATEWAY, b"upstream went away\n");
        let error = text.outcome::<ServiceList>().unwrap_err().to_string();
        assert!(
            error.contains(r#"not JSON: "upstream went away ""#),
            "{error}"
        );
    }

    #[test]
    fn a_failure_reads_as_the_error_body_and_a_success_as_the_document() {
        let failed = answer(
            StatusCode::NOT_FOUND,
            br#"{"error": {"kind": "unknown-service", "message": "no service named `x`",
                "service": "x", "cause": [], "log_tail": []}}"#,
        );
        let error = failed.outcome::<ServiceList>().unwrap().unwrap_err();
        assert_eq!(
            error.error.kind,
            crate::api::model::ErrorKind::UnknownService
        );
        assert_eq!(error.error.service.as_deref(), Some("x"));

        let listed = answer(
            StatusCode::OK,
            br#"{"lifecycle": "running", "booted": true, "services": []}"#,
        );
        let list = listed.outcome::<ServiceList>().unwrap().unwrap();
        assert_eq!(list.lifecycle, crate::supervisor::Lifecycle::Running);
    }
}
