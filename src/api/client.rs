//! A client for the API on the unix socket, for the CLI: one request per connection,
//! JSON in and out.

use std::path::{Path, PathBuf};

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
    let broken = |message: String| ClientError::Broken {
        socket: socket.to_path_buf(),
        message,
    };
    let stream = match UnixStream::connect(socket).await {
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
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| broken(e.to_string()))?
        .to_bytes();
    driver.abort();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        serde_json::json!({ "error": { "kind": "not-json", "message": String::from_utf8_lossy(&bytes) } })
    });
    Ok(Answer { status, body })
}
