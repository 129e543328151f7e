//! The per-service endpoints: list, detail, `ensure`, `start`, `stop`, `restart`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

use super::model::{ErrorBody, ServiceList, ServiceView};
use super::{ApiError, bad_query, known, unknown};
use crate::supervisor::Supervisor;

/// How long `ensure` waits when the caller does not say.
pub const DEFAULT_ENSURE_TIMEOUT: Duration = Duration::from_secs(60);

/// Every service, in the config's order.
#[utoipa::path(get, path = "/v1/services", tag = "services",
    responses((status = 200, description = "Every service", body = ServiceList)))]
pub async fn list(State(supervisor): State<Arc<Supervisor>>) -> Json<ServiceList> {
    let services = supervisor
        .services()
        .into_iter()
        .map(|handle| ServiceView {
            selected: Some(supervisor.is_selected(handle.name())),
            ..ServiceView::of(&handle)
        })
        .collect();
    Json(ServiceList {
        booted: supervisor.booted(),
        services,
        history_problem: supervisor.history_problem(),
    })
}

/// One service.
#[utoipa::path(get, path = "/v1/services/{name}", tag = "services",
    params(("name" = String, Path, description = "The service")),
    responses(
        (status = 200, description = "The service", body = ServiceView),
        (status = 404, description = "No such service (the message names the nearest)", body = ErrorBody),
    ))]
pub async fn detail(
    State(supervisor): State<Arc<Supervisor>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<ServiceView>, ApiError> {
    let name = known(&supervisor, name)?;
    view(&supervisor, &name).map(Json)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EnsureQuery {
    /// How long to wait for it to be healthy, such as `30s` or `1m 30s` (default 60s).
    #[param(
        pattern = r"^ *([0-9]{1,9} *(nsec|ns|usec|us|msec|ms|seconds|second|sec|s|minutes|minute|min|m|hours|hour|hr|h|days|day|d|weeks|week|w) *)+$"
    )]
    timeout: Option<String>,
}

/// Makes sure the service is healthy: answers at once when it is, joins a start in
/// progress, or starts it with its dependencies. However many callers ask at once, the
/// service is spawned once.
#[utoipa::path(post, path = "/v1/services/{name}/ensure", tag = "services",
    params(("name" = String, Path, description = "The service"), EnsureQuery),
    responses(
        (status = 409, description = "The supervisor is shutting down, or the request cannot be honoured", body = ErrorBody),
        (status = 200, description = "Healthy", body = ServiceView),
        (status = 400, description = "A malformed timeout", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 503, description = "It cannot be made healthy: the cause chain and the root cause's last log lines", body = ErrorBody),
        (status = 504, description = "Not healthy within the timeout", body = ErrorBody),
    ))]
pub async fn ensure(
    State(supervisor): State<Arc<Supervisor>>,
    UrlPath(name): UrlPath<String>,
    query: Result<Query<EnsureQuery>, QueryRejection>,
) -> Result<Json<ServiceView>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
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
    view(&supervisor, &name).map(Json)
}

/// Starts the service (its dependencies first); answers at once.
#[utoipa::path(post, path = "/v1/services/{name}/start", tag = "services",
    params(("name" = String, Path, description = "The service")),
    responses(
        (status = 409, description = "The supervisor is shutting down, or the request cannot be honoured", body = ErrorBody),
        (status = 202, description = "Starting", body = ServiceView),
        (status = 404, description = "No such service", body = ErrorBody),
    ))]
pub async fn start(
    State(supervisor): State<Arc<Supervisor>>,
    UrlPath(name): UrlPath<String>,
) -> Result<(StatusCode, Json<ServiceView>), ApiError> {
    let name = known(&supervisor, name)?;
    supervisor.start(&name).await?;
    Ok((StatusCode::ACCEPTED, Json(view(&supervisor, &name)?)))
}

/// Stops the service and answers once it is down, so `muster stop x && ...` can rely
/// on it.
#[utoipa::path(post, path = "/v1/services/{name}/stop", tag = "services",
    params(("name" = String, Path, description = "The service")),
    responses(
        (status = 200, description = "Stopped", body = ServiceView),
        (status = 404, description = "No such service", body = ErrorBody),
    ))]
pub async fn stop(
    State(supervisor): State<Arc<Supervisor>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<ServiceView>, ApiError> {
    let name = known(&supervisor, name)?;
    supervisor.stop(&name).await?;
    view(&supervisor, &name).map(Json)
}

/// Restarts the service (or starts it, when it never ran); answers at once.
#[utoipa::path(post, path = "/v1/services/{name}/restart", tag = "services",
    params(("name" = String, Path, description = "The service")),
    responses(
        (status = 409, description = "The supervisor is shutting down, or the request cannot be honoured", body = ErrorBody),
        (status = 202, description = "Restarting", body = ServiceView),
        (status = 404, description = "No such service", body = ErrorBody),
    ))]
pub async fn restart(
    State(supervisor): State<Arc<Supervisor>>,
    UrlPath(name): UrlPath<String>,
) -> Result<(StatusCode, Json<ServiceView>), ApiError> {
    let name = known(&supervisor, name)?;
    supervisor.restart(&name).await?;
    Ok((StatusCode::ACCEPTED, Json(view(&supervisor, &name)?)))
}

/// The service as it is now (a reload may have removed it meanwhile).
fn view(supervisor: &Supervisor, name: &str) -> Result<ServiceView, ApiError> {
    supervisor
        .service(name)
        .map(|handle| ServiceView::of(&handle))
        .ok_or_else(|| unknown(name.to_owned()))
}
