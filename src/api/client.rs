//! A client for the API on the unix socket, for the CLI: one request per connection,
//! JSON in and out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no supervisor is running for this state directory ({})", socket.display())]
    NotRunning { socket: PathBuf },
    #[error("talking to the supervisor at {}: {message}", socket.display())]
    Broken { socket: PathBuf, message: String },
}

/// An answer: the status code and the JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: serde_json::Value,
}

/// Sends one request to the supervisor listening on `socket`.
pub async fn request(socket: &Path, method: Method, path: &str) -> Result<Answer, ClientError> {
    let (status, body) = send(socket, method, path).await?;
    let bytes = body
        .collect()
        .await
        .map_err(|e| broken(socket, e.to_string()))?
        .to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        serde_json::json!({ "error": { "kind": "not-json", "message": String::from_utf8_lossy(&bytes) } })
    });
    Ok(Answer { status, body })
}

/// A GET whose answer streams: `line` is called with each line as it arrives, until
/// the server ends the answer. An error answer is returned whole instead.
pub async fn each_line(
    socket: &Path,
    path: &str,
    mut line: impl FnMut(&str),
) -> Result<Option<Answer>, ClientError> {
    let (status, mut body) = send(socket, Method::GET, path).await?;
    if !status.is_success() {
        let bytes = body
            .collect()
            .await
            .map_err(|e| broken(socket, e.to_string()))?
            .to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        return Ok(Some(Answer { status, body }));
    }
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| broken(socket, e.to_string()))?;
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
    Ok(None)
}

/// How long a connection may wait for room in the supervisor's listen queue.
const QUEUE_PATIENCE: Duration = Duration::from_secs(10);

/// Connects to `socket`. A unix socket whose listen queue is full (a burst of clients
/// faster than the supervisor accepts) refuses a non-blocking connect with EAGAIN,
/// where a blocking one would wait its turn; with ten thousand clients connecting at
/// once, `status` failed that way. So wait for room, a while.
async fn connect(socket: &Path) -> std::io::Result<UnixStream> {
    let deadline = tokio::time::Instant::now() + QUEUE_PATIENCE;
    loop {
        match UnixStream::connect(socket).await {
            Err(error)
                if error.kind() == std::io::ErrorKind::WouldBlock
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            connected => return connected,
        }
    }
}

fn broken(socket: &Path, message: String) -> ClientError {
    ClientError::Broken {
        socket: socket.to_path_buf(),
        message,
    }
}

async fn send(
    socket: &Path,
    method: Method,
    path: &str,
) -> Result<(StatusCode, hyper::body::Incoming), ClientError> {
    let broken = |message: String| broken(socket, message);
    let stream = match connect(socket).await {
        Ok(stream) => stream,
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
        Err(error) => return Err(broken(error.to_string())),
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| broken(e.to_string()))?;
    let driver = tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "muster")
        .body(Full::new(Bytes::new()))
        .map_err(|e| broken(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| broken(e.to_string()))?;
    // The connection task ends by itself once the body has been read.
    drop(driver);
    Ok((response.status(), response.into_body()))
}
