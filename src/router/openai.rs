//! OpenAI's shapes, as clients expect them: the error object
//! (`{"error": {"message", "type", "param", "code"}}`), with muster's cause chain and log
//! tail beside, and the model list of `GET /v1/models`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use super::Body;

/// An answer the router gives itself, in OpenAI's error shape.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `rate_limit_error`, `server_error`...
    pub kind: &'static str,
    /// OpenAI's `code`: a stable name for programs.
    pub code: &'static str,
    pub param: Option<&'static str>,
    /// Why, service by service, down to the one that failed by itself, and the last
    /// lines of that one's log.
    pub cause: Option<Box<(String, Vec<String>)>>,
    /// Seconds a client should wait before trying again (429, 503).
    pub retry_after: Option<u64>,
}

impl Refusal {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        let kind = match status.as_u16() {
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        Self {
            status,
            message: message.into(),
            kind,
            code,
            param: None,
            cause: None,
            retry_after: None,
        }
    }

    pub fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub fn cause(mut self, cause: String, log_tail: Vec<String>) -> Self {
        self.cause = Some(Box::new((cause, log_tail)));
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn body(&self) -> Value {
        let mut error = json!({
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        });
        if let Some(detail) = &self.cause {
            let (cause, log_tail) = &**detail;
            error["cause"] = json!(cause);
            if !log_tail.is_empty() {
                error["log_tail"] = json!(log_tail);
            }
        }
        json!({ "error": error })
    }

    pub fn response(&self) -> Response<Body> {
        let mut response = json_response(self.status, &self.body());
        if let Some(seconds) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// A JSON answer.
pub fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(value.to_string()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
