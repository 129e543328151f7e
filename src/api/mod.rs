//! The control API: HTTP/1.1 and JSON on `state-dir/muster.sock`, served by the
//! supervisor for the CLI and for any program that wants a service.
//!
//! Every handler is a thin translation: parse the request, call the supervisor, answer
//! with a status code that says what happened. Errors share one shape,
//! `{"error": {"kind", "message", "service", "cause", "log_tail"}}`, and bad input is a
//! 4xx with a message, never a 500. The answers are the types in [`model`], and
//! `GET /v1/openapi.json` is generated from them and from the handlers' annotations.

pub mod auth;
pub mod client;
mod cluster;
mod metrics;
pub mod model;
pub mod serve;
mod services;
mod stream;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use utoipa::OpenApi;

use crate::supervisor::{Explanation, Failure, Supervisor};
use model::{ErrorBody, ErrorDetail, ErrorKind, Reloaded, ShuttingDown};
pub use services::DEFAULT_ENSURE_TIMEOUT;
pub use stream::{MAX_TAIL, POSITIONS};

/// The largest request body accepted. No endpoint reads one; the cap keeps a client
/// from making the server swallow an upload it will never use.
pub const MAX_BODY: u64 = 64 * 1024;

/// The API's routes over a running supervisor.
pub fn router(supervisor: Arc<Supervisor>) -> Router {
    Router::new()
        .route("/v1/services", get(services::list))
        .route("/v1/services/{name}", get(services::detail))
        .route("/v1/services/{name}/ensure", post(services::ensure))
        .route("/v1/services/{name}/start", post(services::start))
        .route("/v1/services/{name}/stop", post(services::stop))
        .route("/v1/services/{name}/restart", post(services::restart))
        .route("/v1/services/{name}/reload", post(services::reload))
        .route("/v1/services/{name}/signal", post(services::signal))
        .route("/v1/services/{name}/scale", post(services::scale))
        .route("/v1/services/{name}/logs", get(stream::service_logs))
        .route("/v1/logs", get(stream::all_logs))
        .route("/v1/events", get(stream::events))
        .route("/v1/cluster", get(cluster::cluster))
        .route("/v1/cluster/services", get(cluster::services))
        .route("/v1/shutdown", post(shutdown))
        .route("/v1/reload", post(reload))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(limit_body))
        .with_state(supervisor)
}

/// The routes behind bearer tokens, for the TCP listener.
pub fn router_with_tokens(supervisor: Arc<Supervisor>, tokens: auth::Tokens) -> Router {
    router(supervisor).layer(axum::middleware::from_fn_with_state(
        Arc::new(tokens),
        auth::authorize,
    ))
}

/// The OpenAPI document of the routes above.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "muster",
        description = "The control API of a muster supervisor: HTTP/1.1 and JSON on \
            `state-dir/muster.sock` (mode 0600, no token), or on the optional TCP listener \
            where every request carries `Authorization: Bearer <token>` (the read token \
            may only GET).",
    ),
    paths(
        services::list, services::detail, services::ensure, services::start,
        services::stop, services::restart, services::reload, services::signal, services::scale,
        stream::service_logs, stream::all_logs,
        stream::events, cluster::cluster, cluster::services,
        reload, shutdown, openapi, metrics::metrics,
    ),
    tags(
        (name = "services", description = "Each service's state, and making it run"),
        (name = "logs", description = "Services' output"),
        (name = "events", description = "What happened, numbered"),
        (name = "cluster", description = "With `[cluster]`: every host, its services, and the singletons' owners"),
        (name = "supervisor", description = "The supervisor itself"),
    ),
)]
pub struct ApiDoc;

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
    // Bound under another name and moved into place once listening: between bind(2)
    // and listen(2) the file exists but refuses connections, and clients (and tests)
    // take the socket's existence to mean the supervisor is there. The name is fixed
    // (the state lock is held) and no longer than `muster.sock`, so any state directory
    // short enough for the socket is short enough for it.
    let unready = path.with_file_name("new.sock");
    let _ = std::fs::remove_file(&unready);
    let listener = tokio::net::UnixListener::bind(&unready);
    nix::sys::stat::umask(old);
    let listener = listener?;
    if let Err(error) = std::fs::rename(&unready, path) {
        let _ = std::fs::remove_file(&unready);
        return Err(error);
    }
    Ok(listener)
}

/// Where the socket of a state directory is.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("muster.sock")
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: ErrorKind,
    message: String,
    service: Option<String>,
    explanation: Option<Box<Explanation>>,
    instances: Option<Vec<String>>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            service: None,
            explanation: None,
            instances: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (cause, log_tail) = match &self.explanation {
            Some(e) => (
                e.cause.iter().map(ToString::to_string).collect(),
                e.log_tail.clone(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.kind,
                message: self.message,
                service: self.service,
                cause,
                log_tail,
                report: None,
                diagnostics: None,
                instances: self.instances,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Unknown(name) => unknown(name),
            Failure::ShuttingDown => ApiError::new(
                StatusCode::CONFLICT,
                ErrorKind::ShuttingDown,
                "the supervisor is shutting down; nothing starts any more",
            ),
            Failure::Refused(why) => ApiError::new(StatusCode::CONFLICT, ErrorKind::Refused, why),
            Failure::NotHealthy(explanation) => {
                let status = &explanation.status;
                let mut error = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorKind::NotHealthy,
                    match status.phase {
                        crate::supervisor::Phase::Failed => {
                            format!("`{}` failed: {}", status.service, status.reason)
                        }
                        phase => format!("`{}` is {phase}: {}", status.service, status.reason),
                    },
                );
                error.service = Some(status.service.to_string());
                error.explanation = Some(explanation);
                error
            }
            Failure::Timeout { after, explanation } => {
                let status = &explanation.status;
                let mut error = ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    ErrorKind::Timeout,
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

pub(crate) fn unknown(name: String) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorKind::UnknownService,
        format!("no service named `{name}`"),
    );
    error.service = Some(name);
    error
}

/// A 404 naming the nearest service, when one is near.
pub(crate) fn unknown_near(supervisor: &Supervisor, name: String) -> ApiError {
    let services = supervisor.services();
    let names: Vec<&str> = services.iter().map(|h| h.name().as_str()).collect();
    let near = crate::suggest::nearest(&name, names.iter().copied()).map(str::to_owned);
    let spec = supervisor.spec();
    let instances = spec
        .replica_sets
        .contains_key(name.as_str())
        .then(|| spec.members(&name));
    let mut error = unknown(name.clone());
    if let Some(instances) = instances {
        error.message = format!(
            "`{name}` has replicas: the endpoints take one of its instances ({})",
            instances
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        error.instances = Some(instances.iter().map(ToString::to_string).collect());
    } else if let Some(near) = near {
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

/// A bad query string: 400 with what was wrong.
pub(crate) fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorKind::BadRequest,
        rejection.body_text(),
    )
}

/// Refuses a body over [`MAX_BODY`] before any handler runs: a declared length at once,
/// and a body without one (chunked) by reading it, up to one byte past the limit.
/// Reading it whole first is cheap at that size, and no handler reads one anyway.
async fn limit_body(request: Request, next: Next) -> Response {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::TooLarge,
            format!("request bodies are limited to {MAX_BODY} bytes; no endpoint reads one"),
        )
        .into_response()
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY) {
        return too_large();
    }
    if hyper::body::Body::size_hint(request.body()).exact() == Some(0) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_BODY as usize);
    let read = tokio::time::timeout(
        serve::HEAD_TIMEOUT,
        http_body_util::BodyExt::collect(limited),
    );
    let bytes = match read.await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(error)) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::BadRequest,
                format!("cannot read the request body: {error}"),
            )
            .into_response();
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                ErrorKind::Timeout,
                format!(
                    "the request body did not arrive within {}",
                    crate::supervisor::machine::human(serve::HEAD_TIMEOUT)
                ),
            )
            .into_response();
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// Asks the supervisor to stop every service (in reverse order) and exit.
#[utoipa::path(post, path = "/v1/shutdown", tag = "supervisor",
    responses((status = 202, description = "Shutting down", body = ShuttingDown)))]
async fn shutdown(State(supervisor): State<Arc<Supervisor>>) -> (StatusCode, Json<ShuttingDown>) {
    supervisor.begin_shutdown("shutdown asked through the API");
    (
        StatusCode::ACCEPTED,
        Json(ShuttingDown {
            shutting_down: true,
        }),
    )
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "supervisor",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json")))]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorKind::NotFound,
        format!("no route {}; GET /v1/openapi.json lists them", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::MethodNotAllowed,
        format!(
            "{} does not take {method}; GET /v1/openapi.json lists the routes",
            uri.path()
        ),
    )
}

/// Re-reads the config. If it is invalid nothing changes and the answer is 422 with the
/// diagnostics; otherwise services whose definition changed are restarted, new ones
/// started, removed ones stopped, and the rest left alone.
#[utoipa::path(post, path = "/v1/reload", tag = "supervisor",
    responses(
        (status = 200, description = "What changed", body = Reloaded),
        (status = 422, description = "The config is invalid; nothing was changed", body = ErrorBody),
        (status = 409, description = "The supervisor is shutting down, or the new config moves the state directory", body = ErrorBody),
    ))]
async fn reload(State(supervisor): State<Arc<Supervisor>>) -> Response {
    let path = supervisor.spec().path.clone();
    match crate::config::load(&path) {
        Ok(loaded) => match supervisor.reload(loaded.spec).await {
            Ok(reloaded) => Json(Reloaded { reloaded }).into_response(),
            Err(failure) => ApiError::from(failure).into_response(),
        },
        Err(error) => {
            let report = error.into_report();
            let body = ErrorBody {
                error: ErrorDetail {
                    kind: ErrorKind::InvalidConfig,
                    message: format!("{} is not valid; nothing was changed", path.display()),
                    service: None,
                    cause: Vec::new(),
                    log_tail: Vec::new(),
                    report: Some(report.render_plain()),
                    diagnostics: Some(report.to_json()),
                    instances: None,
                },
            };
            (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
        }
    }
}
