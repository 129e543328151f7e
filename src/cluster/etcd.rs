//! An etcd v3 client over etcd's JSON gateway: HTTP/1.1 POSTs of JSON to the client
//! port (`/v3/lease/grant`, `/v3/kv/txn`, ...), keys and values in base64, 64-bit
//! numbers as strings. It uses the hyper client muster already has: no gRPC stack, no
//! `protoc` at build time (docs/architecture.md says why).
//!
//! Each request goes to the member that answered last; one that cannot be reached in
//! time is skipped for the next, so a dead member costs one attempt's timeout. An
//! answer with an error (a refused compare, an unknown lease) is an answer: it is not
//! retried elsewhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// A request that got no answer, or an answer that says no.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EtcdError {
    /// No member answered in time.
    #[error("no etcd member answered ({0})")]
    Unreachable(String),
    /// A member answered with an error.
    #[error("etcd refused: {0}")]
    Refused(String),
}

/// One key as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: i64,
}

/// A change seen by a watch.
#[derive(Debug, Clone)]
pub enum Change {
    Put(Kv),
    Delete { key: String, revision: i64 },
}

#[derive(Debug)]
pub struct Etcd {
    endpoints: Vec<String>,
    preferred: AtomicUsize,
    client: Client<HttpConnector, Full<Bytes>>,
    /// How long one attempt at one member may take.
    attempt: Duration,
    /// Requests sent (watches count once, when they are opened); shared by every
    /// client of one supervisor.
    pub requests: Arc<AtomicU64>,
}

impl Etcd {
    pub fn new(endpoints: Vec<String>, attempt: Duration, requests: Arc<AtomicU64>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(attempt));
        Self {
            endpoints,
            preferred: AtomicUsize::new(0),
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            attempt,
            requests,
        }
    }

    fn request(&self, endpoint: &str, path: &str, body: &Value) -> http::Request<Full<Bytes>> {
        let mut request = http::Request::new(Full::new(Bytes::from(body.to_string())));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = format!("{endpoint}{path}")
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("http://127.0.0.1:2379/"));
        request.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        request
    }

    /// One unary call: the first member that answers, starting with the last good one.
    pub async fn call(&self, path: &str, body: Value) -> Result<Value, EtcdError> {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last = String::new();
        for offset in 0..self.endpoints.len() {
            let index = (first + offset) % self.endpoints.len();
            let endpoint = &self.endpoints[index];
            self.requests.fetch_add(1, Ordering::Relaxed);
            let attempt = async {
                let response = self
                    .client
                    .request(self.request(endpoint, path, &body))
                    .await
                    .map_err(|e| format!("{endpoint}: {}", error_chain(&e)))?;
                let status = response.status();
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("{endpoint}: {e}"))?
                    .to_bytes();
                Ok::<_, String>((status, bytes))
            };
            match tokio::time::timeout(self.attempt, attempt).await {
                Ok(Ok((status, bytes))) => {
                    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
                        EtcdError::Refused(format!(
                            "{endpoint} answered {status} with no JSON: {e}"
                        ))
                    })?;
                    if status.is_success() {
                        self.preferred.store(index, Ordering::Relaxed);
                        return Ok(value);
                    }
                    let message = value["message"].as_str().unwrap_or("").to_owned();
                    // An unavailable member (no leader, being stopped) is not an answer.
                    if status == http::StatusCode::SERVICE_UNAVAILABLE
                        || message.contains("no leader")
                        || message.contains("stopped")
                    {
                        last = format!("{endpoint}: {message}");
                        continue;
                    }
                    return Err(EtcdError::Refused(format!("{path}: {message}")));
                }
                Ok(Err(error)) => last = error,
                Err(_) => {
                    last = format!(
                        "{endpoint}: no answer within {}",
                        humantime::format_duration(self.attempt)
                    )
                }
            }
        }
        Err(EtcdError::Unreachable(last))
    }

    /// A lease of `ttl` seconds (etcd may grant a longer one): its id and TTL.
    pub async fn grant(&self, ttl: u64) -> Result<(i64, u64), EtcdError> {
        let answer = self.call("/v3/lease/grant", json!({ "TTL": ttl })).await?;
        let id = number(&answer["ID"]);
        if id == 0 {
            return Err(EtcdError::Refused(format!(
                "no lease granted: {}",
                answer["error"].as_str().unwrap_or("")
            )));
        }
        Ok((id, number(&answer["TTL"]).max(0) as u64))
    }

    /// Renews `lease`: its remaining TTL, 0 when the lease is gone.
    pub async fn keepalive(&self, lease: i64) -> Result<u64, EtcdError> {
        let answer = self
            .call("/v3/lease/keepalive", json!({ "ID": lease.to_string() }))
            .await?;
        Ok(number(&answer["result"]["TTL"]).max(0) as u64)
    }

    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", json!({ "ID": lease.to_string() }))
            .await
            .map(drop)
    }

    /// Creates `key` bound to `lease` if it does not exist. `Ok(revision)` on success,
    /// `Err(holder)` with the key as it is when it exists.
    pub async fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: i64,
    ) -> Result<Result<i64, Kv>, EtcdError> {
        let answer = self
            .call(
                "/v3/kv/txn",
                json!({
                    "compare": [{"key": encode(key.as_bytes()), "target": "CREATE", "create_revision": "0"}],
                    "success": [{"request_put": {"key": encode(key.as_bytes()), "value": encode(value), "lease": lease.to_string()}}],
                    "failure": [{"request_range": {"key": encode(key.as_bytes())}}],
                }),
            )
            .await?;
        if answer["succeeded"].as_bool().unwrap_or(false) {
            return Ok(Ok(number(&answer["header"]["revision"])));
        }
        let kvs = &answer["responses"][0]["response_range"]["kvs"];
        match kvs.as_array().and_then(|k| k.first()).and_then(kv) {
            Some(holder) => Ok(Err(holder)),
            // Gone between the compare and the range (its lease ended): try again.
            None => Err(EtcdError::Refused(format!(
                "{key} changed during the request"
            ))),
        }
    }

    /// Writes `key` bound to `lease`, only while it is still the one created at
    /// `created` (this host's). Whether it was written.
    pub async fn update(
        &self,
        key: &str,
        value: &[u8],
        lease: i64,
        created: i64,
    ) -> Result<bool, EtcdError> {
        let answer = self
            .call(
                "/v3/kv/txn",
                json!({
                    "compare": [{"key": encode(key.as_bytes()), "target": "CREATE", "create_revision": created.to_string()}],
                    "success": [{"request_put": {"key": encode(key.as_bytes()), "value": encode(value), "lease": lease.to_string()}}],
                }),
            )
            .await?;
        Ok(answer["succeeded"].as_bool().unwrap_or(false))
    }

    /// Writes `key` with no lease: it stays when its writer goes.
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<(), EtcdError> {
        self.call(
            "/v3/kv/put",
            json!({ "key": encode(key.as_bytes()), "value": encode(value) }),
        )
        .await
        .map(drop)
    }

    /// Deletes `key` only while it is the one created at `created`.
    pub async fn delete_if(&self, key: &str, created: i64) -> Result<bool, EtcdError> {
        let answer = self
            .call(
                "/v3/kv/txn",
                json!({
                    "compare": [{"key": encode(key.as_bytes()), "target": "CREATE", "create_revision": created.to_string()}],
                    "success": [{"request_delete_range": {"key": encode(key.as_bytes())}}],
                }),
            )
            .await?;
        Ok(answer["succeeded"].as_bool().unwrap_or(false))
    }

    /// `key`, or every key under the prefix `key` when `prefix`; with the revision read.
    pub async fn range(&self, key: &str, prefix: bool) -> Result<(Vec<Kv>, i64), EtcdError> {
        let mut body = json!({ "key": encode(key.as_bytes()) });
        if prefix {
            body["range_end"] = Value::String(encode(&prefix_end(key.as_bytes())));
        }
        let answer = self.call("/v3/kv/range", body).await?;
        let kvs = answer["kvs"]
            .as_array()
            .map(|list| list.iter().filter_map(kv).collect())
            .unwrap_or_default();
        Ok((kvs, number(&answer["header"]["revision"])))
    }

    /// Watches `key` (or the prefix) from `from` (a revision; 0: now). Changes come on
    /// the channel; it closes when the stream ends or fails (the watcher decides what
    /// to do then: read again and watch again).
    pub async fn watch(
        &self,
        key: &str,
        prefix: bool,
        from: i64,
    ) -> Result<tokio::sync::mpsc::Receiver<Vec<Change>>, EtcdError> {
        let mut create = json!({ "key": encode(key.as_bytes()) });
        if prefix {
            create["range_end"] = Value::String(encode(&prefix_end(key.as_bytes())));
        }
        if from > 0 {
            create["start_revision"] = Value::String(from.to_string());
        }
        let body = json!({ "create_request": create });
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last = String::new();
        for offset in 0..self.endpoints.len() {
            let index = (first + offset) % self.endpoints.len();
            let endpoint = &self.endpoints[index];
            self.requests.fetch_add(1, Ordering::Relaxed);
            let response = tokio::time::timeout(
                self.attempt,
                self.client
                    .request(self.request(endpoint, "/v3/watch", &body)),
            )
            .await;
            let response = match response {
                Ok(Ok(response)) if response.status().is_success() => response,
                Ok(Ok(response)) => {
                    last = format!("{endpoint}: {}", response.status());
                    continue;
                }
                Ok(Err(error)) => {
                    last = format!("{endpoint}: {}", error_chain(&error));
                    continue;
                }
                Err(_) => {
                    last = format!("{endpoint}: no answer");
                    continue;
                }
            };
            let (sender, receiver) = tokio::sync::mpsc::channel(16);
            tokio::spawn(async move {
                let mut body = response.into_body().into_data_stream();
                let mut pending: Vec<u8> = Vec::new();
                // Ends when the watcher lets go of the receiver, too: a watch given up
                // (a resync, a timeout) must not keep its connection open.
                loop {
                    let chunk = tokio::select! {
                        chunk = body.next() => chunk,
                        () = sender.closed() => return,
                    };
                    let Some(Ok(chunk)) = chunk else { return };
                    pending.extend_from_slice(&chunk);
                    // One JSON object per message; the gateway separates them with
                    // newlines.
                    while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        let Ok(message) = serde_json::from_slice::<Value>(&line) else {
                            continue;
                        };
                        let result = &message["result"];
                        if result["canceled"].as_bool() == Some(true)
                            || message.get("error").is_some()
                        {
                            return;
                        }
                        let changes: Vec<Change> = result["events"]
                            .as_array()
                            .map(|events| events.iter().filter_map(change).collect())
                            .unwrap_or_default();
                        if !changes.is_empty() && sender.send(changes).await.is_err() {
                            return;
                        }
                    }
                }
            });
            return Ok(receiver);
        }
        Err(EtcdError::Unreachable(last))
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// etcd writes 64-bit numbers as strings (and leaves out zeros).
fn number(value: &Value) -> i64 {
    match value {
        Value::String(text) => text.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn kv(value: &Value) -> Option<Kv> {
    Some(Kv {
        key: String::from_utf8(decode(value["key"].as_str()?)?).ok()?,
        value: value["value"].as_str().and_then(decode).unwrap_or_default(),
        create_revision: number(&value["create_revision"]),
        mod_revision: number(&value["mod_revision"]),
        lease: number(&value["lease"]),
    })
}

fn change(event: &Value) -> Option<Change> {
    let kv = kv(&event["kv"])?;
    Some(if event["type"].as_str() == Some("DELETE") {
        Change::Delete {
            key: kv.key,
            revision: kv.mod_revision,
        }
    } else {
        Change::Put(kv)
    })
}

/// The end of the range of keys that start with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as etcd's gateway writes bytes.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        if c == b'=' {
            break;
        }
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_matches_the_gateway() {
        assert_eq!(encode(b"foo"), "Zm9v");
        assert_eq!(encode(b"fo"), "Zm8=");
        assert_eq!(encode(b"f"), "Zg==");
        assert_eq!(decode("YmFy").as_deref(), Some(&b"bar"[..]));
        for len in 0..40u8 {
            let bytes: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(decode(&encode(&bytes)), Some(bytes));
        }
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
    }
}
