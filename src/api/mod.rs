//! The control API: HTTP/1.1 and JSON on `state-dir/muster.sock`, served by the
//! supervisor for the CLI and for any program that wants a service.
//!
//! Every handler is a thin translation: parse the request, call the supervisor, answer
//! with a status code that says what happened. Errors share one shape,
//! `{"error": {"kind", "message", "service", "cause", "log_tail"}}`, and bad input is a
//! 4xx with a message, never a 500.

pub mod auth;
pub mod client;
mod stream;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::supervisor::{Explanation, Failure, Input, Supervisor};

/// How long `ensure` waits when the caller does not say.
pub const DEFAULT_ENSURE_TIMEOUT: Duration = Duration::from_secs(60);

/// The API's routes over a running supervisor.
pub fn router(supervisor: Arc<Supervisor>) -> Router {
    Router::new()
        .route("/v1/services", get(list))
        .route("/v1/services/{name}", get(detail))
        .route("/v1/services/{name}/ensure", post(ensure))
        .route("/v1/services/{name}/start", post(start))
        .route("/v1/services/{name}/stop", post(stop))
        .route("/v1/services/{name}/restart", post(restart))
        .route("/v1/services/{name}/logs", get(stream::service_logs))
        .route("/v1/logs", get(stream::all_logs))
        .route("/v1/events", get(stream::events))
        .route("/v1/shutdown", post(shutdown))
        .route("/v1/reload", post(reload))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(supervisor)
}

/// The routes behind bearer tokens, for the TCP listener.
pub fn router_with_tokens(supervisor: Arc<Supervisor>, tokens: auth::Tokens) -> Router {
    router(supervisor).layer(axum::middleware::from_fn_with_state(
        Arc::new(tokens),
        auth::authorize,
    ))
}

/// Binds the socket at `path` with mode 0600 (a stale socket file from a supervisor
/// that died is replaced; the state lock says no live one owns it).
pub fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    // Created with no access for others from the first instant, not chmod-ed after.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = tokio::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    listener
}

/// Where the socket of a state directory is.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("muster.sock")
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    service: Option<String>,
    explanation: Option<Box<Explanation>>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            service: None,
            explanation: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (cause, log_tail) = match &self.explanation {
            Some(e) => (e.cause.clone(), e.log_tail.clone()),
            None => (Vec::new(), Vec::new()),
        };
        let body = json!({
            "error": {
                "kind": self.kind,
                "message": self.message,
                "service": self.service,
                "cause": cause,
                "log_tail": log_tail,
            }
        });
        (self.status, Json(body)).into_response()
    }
}

impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Unknown(name) => unknown(name),
            Failure::NotHealthy(explanation) => {
                let status = &explanation.status;
                let mut error = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not-healthy",
                    format!(
                        "`{}` is {}: {}",
                        status.service, status.phase, status.reason
                    ),
                );
                error.service = Some(status.service.to_string());
                error.explanation = Some(explanation);
                error
            }
            Failure::Timeout { after, explanation } => {
                let status = &explanation.status;
                let mut error = ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    format!(
                        "`{}` was not healthy within {}: {} ({})",
                        status.service,
                        crate::supervisor::machine::human(after),
                        status.phase,
                        status.reason
                    ),
                );
                error.service = Some(status.service.to_string());
                error.explanation = Some(explanation);
                error
            }
        }
    }
}

fn unknown(name: String) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown-service",
        format!("no service named `{name}`"),
    );
    error.service = Some(name);
    error
}

/// A 404 naming the nearest service, when one is near.
fn unknown_near(supervisor: &Supervisor, name: String) -> ApiError {
    let services = supervisor.services();
    let names: Vec<&str> = services.iter().map(|h| h.name().as_str()).collect();
    let near = crate::suggest::nearest(&name, names.iter().copied()).map(str::to_owned);
    let mut error = unknown(name);
    if let Some(near) = near {
        error.message.push_str(&format!("; did you mean `{near}`?"));
    }
    error
}

pub(crate) fn known(supervisor: &Supervisor, name: String) -> Result<String, ApiError> {
    if supervisor.service(&name).is_some() {
        Ok(name)
    } else {
        Err(unknown_near(supervisor, name))
    }
}

async fn list(State(supervisor): State<Arc<Supervisor>>) -> Json<serde_json::Value> {
    let services: Vec<_> = supervisor
        .services()
        .into_iter()
        .map(|handle| {
            let mut service = describe(&handle);
            service["selected"] = json!(supervisor.is_selected(handle.name()));
            service
        })
        .collect();
    Json(json!({ "booted": supervisor.booted(), "services": services }))
}

async fn detail(
    State(supervisor): State<Arc<Supervisor>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = known(&supervisor, name)?;
    let handle = supervisor
        .service(&name)
        .ok_or_else(|| unknown(name.clone()))?;
    Ok(Json(describe(&handle)))
}

/// A service as the API shows it: its status plus what the config declares.
fn describe(handle: &crate::supervisor::ServiceHandle) -> serde_json::Value {
    let status = handle.status();
    let ports: Vec<String> = handle
        .service
        .ports
        .iter()
        .map(ToString::to_string)
        .collect();
    let uptime = match status.phase {
        crate::supervisor::Phase::Healthy | crate::supervisor::Phase::Unhealthy => {
            status.since.elapsed().ok().map(|d| d.as_secs_f64())
        }
        _ => None,
    };
    json!({
        "name": status.service,
        "description": handle.service.description,
        "state": status.phase,
        "reason": status.reason,
        "pid": status.pid,
        "run_id": status.run_id,
        "since": humantime::format_rfc3339_millis(status.since).to_string(),
        "uptime_seconds": uptime,
        "restarts": status.restarts,
        "last_exit": status.last_exit,
        "notify_status": status.notify_status,
        "notify_state": status.notify_state,
        "main_pid": status.main_pid,
        "ports": ports,
        "autostart": handle.service.autostart,
    })
}

#[derive(Debug, Deserialize)]
struct EnsureQuery {
    timeout: Option<String>,
}

async fn ensure(
    State(supervisor): State<Arc<Supervisor>>,
    UrlPath(name): UrlPath<String>,
    query: Result<Query<EnsureQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad-request", e.body_text()))?;
    let timeout = match query.timeout.as_deref() {
        None => DEFAULT_ENSURE_TIMEOUT,
        Some(text) => crate::config::values::duration(text).map_err(|problem| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad-request",
                format!("timeout: {}", problem.message),
            )
        })?,
    };
    let name = known(&supervisor, name)?;
    supervisor.ensure(&name, timeout).await?;
    let handle = supervisor
        .service(&name)
        .ok_or_else(|| unknown(name.clone()))?;
    Ok(Json(describe(&handle)))
}

async fn start(
    State(supervisor): State<Arc<Supervisor>>,
    UrlPath(name): UrlPath<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let name = known(&supervisor, name)?;
    supervisor.start(&name)?;
    accepted(&supervisor, &name)
}

async fn stop(
    State(supervisor): State<Arc<Supervisor>>,
    UrlPath(name): UrlPath<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let name = known(&supervisor, name)?;
    supervisor.command(&name, Input::Stop)?;
    // Answer once it is down, so `muster stop x && ...` can rely on it.
    if let Some(handle) = supervisor.service(&name) {
        let patience = handle.service.stop_timeout + Duration::from_secs(5);
        let mut status = handle.watch();
        let _ = tokio::time::timeout(patience, status.wait_for(|s| s.phase.is_settled())).await;
    }
    let handle = supervisor
        .service(&name)
        .ok_or_else(|| unknown(name.clone()))?;
    Ok((StatusCode::OK, Json(describe(&handle))))
}

async fn restart(
    State(supervisor): State<Arc<Supervisor>>,
    UrlPath(name): UrlPath<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let name = known(&supervisor, name)?;
    let phase = supervisor.service(&name).map(|h| h.status().phase);
    if phase.is_some_and(|p| p == crate::supervisor::Phase::Pending) {
        supervisor.start(&name)?;
    } else {
        supervisor.command(&name, Input::Restart)?;
    }
    accepted(&supervisor, &name)
}

fn accepted(
    supervisor: &Supervisor,
    name: &str,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let handle = supervisor
        .service(name)
        .ok_or_else(|| unknown(name.to_owned()))?;
    Ok((StatusCode::ACCEPTED, Json(describe(&handle))))
}

async fn shutdown(
    State(supervisor): State<Arc<Supervisor>>,
) -> (StatusCode, Json<serde_json::Value>) {
    supervisor.ask_shutdown();
    (StatusCode::ACCEPTED, Json(json!({ "shutting_down": true })))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not-found",
        format!("no route {}", uri.path()),
    )
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(State(supervisor): State<Arc<Supervisor>>) -> impl IntoResponse {
    use crate::supervisor::Phase;
    use std::sync::atomic::Ordering::Relaxed;
    let statuses: Vec<_> = supervisor
        .services()
        .into_iter()
        .map(|h| h.status())
        .collect();
    let per_service =
        |value: &dyn Fn(&crate::supervisor::Status) -> String| -> Vec<(String, String)> {
            statuses
                .iter()
                .map(|s| (format!("{{service=\"{}\"}}", s.service), value(s)))
                .collect()
        };
    let by_state: Vec<(String, String)> = Phase::ALL
        .iter()
        .map(|&phase| {
            let count = statuses.iter().filter(|s| s.phase == phase).count();
            (format!("{{state=\"{phase}\"}}"), count.to_string())
        })
        .collect();
    let counters = &supervisor.counters;
    let single = |value: String| vec![(String::new(), value)];
    let families = [
        ("muster_services", "gauge", "Services by state.", by_state),
        (
            "muster_service_up",
            "gauge",
            "1 when the service is healthy.",
            per_service(&|s| u8::from(s.phase == Phase::Healthy).to_string()),
        ),
        (
            "muster_restarts_total",
            "counter",
            "Restarts of each service.",
            per_service(&|s| s.restarts.to_string()),
        ),
        (
            "muster_probe_failures_total",
            "counter",
            "Failed probe attempts of each service.",
            per_service(&|s| s.probe_failures.to_string()),
        ),
        (
            "muster_ensure_calls_total",
            "counter",
            "ensure requests answered.",
            single(counters.ensure_calls.load(Relaxed).to_string()),
        ),
        (
            "muster_ensure_failures_total",
            "counter",
            "ensure requests that did not end healthy.",
            single(counters.ensure_failures.load(Relaxed).to_string()),
        ),
        (
            "muster_ensure_wait_seconds_total",
            "counter",
            "Time callers spent waiting in ensure.",
            single((counters.ensure_wait_micros.load(Relaxed) as f64 / 1e6).to_string()),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, samples) in families {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
}

/// `POST /v1/reload`: re-read the config; if it is invalid change nothing and answer
/// 422 with the diagnostics, else apply the difference.
async fn reload(State(supervisor): State<Arc<Supervisor>>) -> Response {
    let path = supervisor.spec().path.clone();
    match crate::config::load(&path) {
        Ok(loaded) => {
            let report = supervisor.reload(loaded.spec).await;
            Json(json!({ "reloaded": report })).into_response()
        }
        Err(error) => {
            let report = error.into_report();
            let body = json!({
                "error": {
                    "kind": "invalid-config",
                    "message": format!("{} is not valid; nothing was changed", path.display()),
                    "service": null,
                    "cause": [],
                    "log_tail": [],
                    "report": report.render_plain(),
                    "diagnostics": report.to_json(),
                }
            });
            (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
        }
    }
}
