//! The per-service endpoints: list, detail, `ensure`, `start`, `stop`, `restart`,
//! `reload` and `signal`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

use super::model::{ErrorBody, Scaled, ServiceList, ServiceView, Signaled};
use super::{ApiError, ErrorKind, bad_query, known, unknown};
use crate::supervisor::{Failure, Phase, Status, Supervisor, Target};

/// How long `ensure` waits when the caller does not say.
pub const DEFAULT_ENSURE_TIMEOUT: Duration = Duration::from_secs(60);

/// Up to this many running services, the list reads each one's CPU and memory use by
/// default. Reading them costs two `/proc` files per process (about 30 µs), which at
/// 10,000 services made the list take 0.3 s where the rest of it takes a few ms; above
/// this the list leaves them out unless asked (`?resources=true`), and each service's
/// own page (`/v1/services/NAME`) always has them.
pub const LIST_RESOURCES_UP_TO: usize = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Read each running service's CPU and memory use: `true` or `false`. By default
    /// they are read when at most 500 services run.
    resources: Option<bool>,
}

/// Every service, in the config's order.
#[utoipa::path(get, path = "/v1/services", tag = "services", params(ListQuery),
    responses(
        (status = 200, description = "Every service", body = ServiceList),
        (status = 400, description = "A query parameter that is not understood", body = ErrorBody),
    ))]
pub async fn list(
    State(supervisor): State<Arc<Supervisor>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    // One snapshot, its handles read in place: copying 10,000 handles (five reference
    // counts each) took as long as the rest of the list.
    let graph = supervisor.graph();
    let mut services: Vec<ServiceView> = graph
        .services
        .values()
        .map(|handle| ServiceView {
            selected: Some(graph.selected.contains(handle.name())),
            singleton: crate::cluster::ensure::placement(&supervisor, handle),
            ..ServiceView::of(handle)
        })
        .collect();
    let running = services.iter().filter(|view| view.pid.is_some()).count();
    let measure = query.resources.unwrap_or(running <= LIST_RESOURCES_UP_TO);
    if measure {
        let handles: Vec<_> = graph.services.values().cloned().collect();
        let used = supervisor.resource_use(&handles).await;
        for view in &mut services {
            view.resources = used.get(view.name.as_str()).map(Into::into);
        }
    }
    let list = ServiceList {
        lifecycle: supervisor.lifecycle(),
        booted: supervisor.booted(),
        resources_read: measure,
        services,
        history_problem: supervisor.history_problem(),
    };
    Ok(sized_json(&list, list.services.len() * VIEW_SIZE))
}

/// About what one service's view takes as JSON (470 bytes for a plain one).
const VIEW_SIZE: usize = 640;

/// `value` as a JSON answer, as [`Json`] gives it, written into room for about
/// `expected` bytes: [`Json`] starts from 128 and doubles, which for the list of
/// 10,000 services (4.5 MB) copied it over and over (a fifth of the answer's time).
fn sized_json<T: serde::Serialize>(value: &T, expected: usize) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut body = Vec::with_capacity(expected.saturating_add(256));
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => (
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        // As `Json` answers a value it cannot write (none of the API's types fail).
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
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
    let handle = supervisor
        .service(&name)
        .ok_or_else(|| unknown(name.clone()))?;
    let used = supervisor.resource_use(std::slice::from_ref(&handle)).await;
    Ok(Json(ServiceView {
        resources: used.get(handle.name()).map(Into::into),
        singleton: crate::cluster::ensure::placement(&supervisor, &handle),
        ..ServiceView::of(&handle)
    }))
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
                ErrorKind::BadRequest,
                format!("timeout: {}", problem.message),
            )
        })?,
    };
    let name = known(&supervisor, name)?;
    // A singleton may be healthy on another host: the answer says where.
    if let Some(placed) = crate::cluster::ensure::ensure(&supervisor, &name, timeout).await {
        let placement = placed?;
        let mut answer = view(&supervisor, &name)?;
        answer.singleton = Some(placement);
        return Ok(Json(answer));
    }
    supervisor.ensure(&name, timeout).await?;
    view(&supervisor, &name).map(Json)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StartQuery {
    /// Answer once the outcome is known (healthy, completed for a one-shot, or failed)
    /// instead of at once. Default false.
    #[serde(default)]
    wait: bool,
    /// How long to wait for the outcome, such as `30s` (default 60s); giving it means
    /// waiting, as `wait=true` does.
    #[param(
        pattern = r"^ *([0-9]{1,9} *(nsec|ns|usec|us|msec|ms|seconds|second|sec|s|minutes|minute|min|m|hours|hour|hr|h|days|day|d|weeks|week|w) *)+$"
    )]
    timeout: Option<String>,
}

impl StartQuery {
    /// How long to wait, if the caller wants to.
    fn wait(&self) -> Result<Option<Duration>, ApiError> {
        let timeout = self
            .timeout
            .as_deref()
            .map(|text| {
                crate::config::values::duration(text).map_err(|problem| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        ErrorKind::BadRequest,
                        format!("timeout: {}", problem.message),
                    )
                })
            })
            .transpose()?;
        match (self.wait, timeout) {
            (true, timeout) => Ok(Some(timeout.unwrap_or(DEFAULT_ENSURE_TIMEOUT))),
            (false, None) => Ok(None),
            // A caller that says how long to wait wants to wait.
            (false, Some(timeout)) => Ok(Some(timeout)),
        }
    }
}

/// A started service: 202 at once, or (waiting) 200 with the outcome.
type Started = (StatusCode, Json<ServiceView>);

/// Starts the service (its dependencies first).
///
/// Answers at once with 202 and the state at that instant, or, with `wait=true`, once
/// the outcome is known: 200 when it is healthy (a one-shot: completed), 503 with the
/// cause when it failed, 504 when the timeout passed first. A one-shot (a service
/// another waits on with `condition = "completed"`) is waited for until it has
/// completed. A service already healthy (or a one-shot already completed) is left as it
/// is and answered at once; `restart` runs a one-shot again. Without a readiness probe
/// a service is healthy once spawned.
#[utoipa::path(post, path = "/v1/services/{name}/start", tag = "services",
    params(("name" = String, Path, description = "The service"), StartQuery),
    responses(
        (status = 409, description = "The supervisor is shutting down, or the request cannot be honoured", body = ErrorBody),
        (status = 200, description = "With wait: healthy, or completed (a one-shot)", body = ServiceView),
        (status = 202, description = "Without wait: starting", body = ServiceView),
        (status = 400, description = "A malformed query", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 503, description = "With wait: it failed (or was stopped meanwhile): the cause chain and the root cause's last log lines", body = ErrorBody),
        (status = 504, description = "With wait: no outcome within the timeout", body = ErrorBody),
    ))]
pub async fn start(
    State(supervisor): State<Arc<Supervisor>>,
    UrlPath(name): UrlPath<String>,
    query: Result<Query<StartQuery>, QueryRejection>,
) -> Result<Started, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let wait = query.wait()?;
    let name = known(&supervisor, name)?;
    let before = status_of(&supervisor, &name)?;
    let asked = before.transitions;
    supervisor.start(&name).await?;
    let Some(timeout) = wait else {
        return Ok((StatusCode::ACCEPTED, Json(view(&supervisor, &name)?)));
    };
    // A start leaves a running or completed service as it is: nothing to wait for.
    match before.phase {
        Phase::Completed => Ok((StatusCode::OK, Json(view(&supervisor, &name)?))),
        Phase::Healthy if !supervisor.spec().is_one_shot(&name) => {
            Ok((StatusCode::OK, Json(view(&supervisor, &name)?)))
        }
        Phase::Unhealthy => Err(Failure::NotHealthy(supervisor.explain(before)).into()),
        _ => outcome(&supervisor, &name, None, asked, timeout).await,
    }
}

/// The service's status now, or 404 if a reload removed it.
fn status_of(supervisor: &Supervisor, name: &str) -> Result<Status, ApiError> {
    supervisor
        .service(name)
        .map(|handle| handle.status())
        .ok_or_else(|| unknown(name.to_owned()))
}

/// Waits (on the service's status, no polling) for what a start or restart asked at
/// `asked` came to: healthy (in a run after `after_run`, for a restart), or settled
/// (completed, failed, stopped) since the ask. A one-shot is waited for until it has
/// completed (or failed): being up is not its outcome.
async fn outcome(
    supervisor: &Supervisor,
    name: &str,
    after_run: Option<u64>,
    asked: u64,
    timeout: Duration,
) -> Result<Started, ApiError> {
    let handle = supervisor
        .service(name)
        .ok_or_else(|| unknown(name.to_owned()))?;
    let one_shot = supervisor.spec().is_one_shot(name);
    let mut status = handle.watch();
    let settled = |s: &Status| match s.phase {
        // Healthy only while its process is: one with no probe is healthy at its spawn,
        // and its exit may not have been handled yet.
        Phase::Healthy => {
            !one_shot
                && after_run.is_none_or(|run| s.run_id > run)
                && s.pid.is_none_or(crate::supervisor::procfs::is_alive)
        }
        // Ordered by the status's own count of changes, not a clock.
        phase => phase.is_settled() && s.transitions > asked,
    };
    let done = async {
        let reached = status.wait_for(settled).await.map(|s| s.clone());
        // The answer rests on events (ready, failed): they are written first.
        supervisor.bus().flush().await;
        reached
    };
    let reached = match tokio::time::timeout(timeout, done).await {
        Ok(Ok(reached)) => reached,
        // The service was removed by a reload while it started.
        Ok(Err(_)) => return Err(unknown(name.to_owned())),
        Err(_) => {
            return Err(Failure::Timeout {
                after: timeout,
                explanation: supervisor.explain(handle.status()),
            }
            .into());
        }
    };
    match reached.phase {
        Phase::Healthy | Phase::Completed => Ok((StatusCode::OK, Json(ServiceView::of(&handle)))),
        _ => Err(Failure::NotHealthy(supervisor.explain(reached)).into()),
    }
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

/// Restarts the service (or starts it, when it never ran).
///
/// A one-shot runs again. As with `start`, answers at once with 202, or with
/// `wait=true` once the new run's outcome is known.
#[utoipa::path(post, path = "/v1/services/{name}/restart", tag = "services",
    params(("name" = String, Path, description = "The service"), StartQuery),
    responses(
        (status = 409, description = "The supervisor is shutting down, or the request cannot be honoured", body = ErrorBody),
        (status = 200, description = "With wait: the new run is healthy, or completed (a one-shot)", body = ServiceView),
        (status = 202, description = "Without wait: restarting", body = ServiceView),
        (status = 400, description = "A malformed query", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 503, description = "With wait: the new run failed (or it was stopped meanwhile): the cause chain and the root cause's last log lines", body = ErrorBody),
        (status = 504, description = "With wait: no outcome within the timeout", body = ErrorBody),
    ))]
pub async fn restart(
    State(supervisor): State<Arc<Supervisor>>,
    UrlPath(name): UrlPath<String>,
    query: Result<Query<StartQuery>, QueryRejection>,
) -> Result<Started, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let wait = query.wait()?;
    let name = known(&supervisor, name)?;
    let before = status_of(&supervisor, &name)?;
    let asked = before.transitions;
    supervisor.restart(&name).await?;
    match wait {
        None => Ok((StatusCode::ACCEPTED, Json(view(&supervisor, &name)?))),
        // Whatever the state before, only a run after it counts.
        Some(timeout) => outcome(&supervisor, &name, Some(before.run_id), asked, timeout).await,
    }
}

/// Reloads the service: sends its `reload-signal` to its process group, or, without
/// one, restarts it.
///
/// With a `reload-signal` the answer is 200 once the signal is sent (and recorded as a
/// `signaled` event); a service without a process is refused (409). Without one it is
/// a restart, answered as `restart` answers (202 at once, or with `wait=true` once the
/// new run's outcome is known).
#[utoipa::path(post, path = "/v1/services/{name}/reload", tag = "services",
    params(("name" = String, Path, description = "The service"), StartQuery),
    responses(
        (status = 200, description = "Signalled; or, restarted with wait: the new run is healthy", body = ServiceView),
        (status = 202, description = "Restarting (no reload-signal, no wait)", body = ServiceView),
        (status = 400, description = "A malformed query", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 409, description = "It has no process to signal, or the supervisor is shutting down", body = ErrorBody),
        (status = 503, description = "Restarted with wait: the new run failed", body = ErrorBody),
        (status = 504, description = "Restarted with wait: no outcome within the timeout", body = ErrorBody),
    ))]
pub async fn reload(
    State(supervisor): State<Arc<Supervisor>>,
    UrlPath(name): UrlPath<String>,
    query: Result<Query<StartQuery>, QueryRejection>,
) -> Result<Started, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let wait = query.wait()?;
    let name = known(&supervisor, name)?;
    let before = status_of(&supervisor, &name)?;
    if supervisor.reload_service(&name).await?.is_some() {
        return Ok((StatusCode::OK, Json(view(&supervisor, &name)?)));
    }
    match wait {
        None => Ok((StatusCode::ACCEPTED, Json(view(&supervisor, &name)?))),
        Some(timeout) => {
            outcome(
                &supervisor,
                &name,
                Some(before.run_id),
                before.transitions,
                timeout,
            )
            .await
        }
    }
}

/// The signals `POST /v1/services/{name}/signal` takes: a name, with or without `SIG`
/// (upper case, as `kill -l` prints them), or a number from 1 to 31.
pub const SIGNAL_PATTERN: &str = "^(SIG)?(HUP|INT|QUIT|ILL|TRAP|ABRT|BUS|FPE|KILL|USR1|SEGV|USR2|PIPE|ALRM|TERM|STKFLT|CHLD|CONT|STOP|TSTP|TTIN|TTOU|URG|XCPU|XFSZ|VTALRM|PROF|WINCH|IO|PWR|SYS)$|^([1-9]|[12][0-9]|3[01])$";

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SignalQuery {
    /// The signal: a name, with or without `SIG` (`SIGHUP`, `HUP`), or a number (`1`).
    #[param(
        pattern = "^(SIG)?(HUP|INT|QUIT|ILL|TRAP|ABRT|BUS|FPE|KILL|USR1|SEGV|USR2|PIPE|ALRM|TERM|STKFLT|CHLD|CONT|STOP|TSTP|TTIN|TTOU|URG|XCPU|XFSZ|VTALRM|PROF|WINCH|IO|PWR|SYS)$|^([1-9]|[12][0-9]|3[01])$"
    )]
    signal: String,
    /// Only the main process (the pid `MAINPID=` named, or the one muster started), not
    /// the whole process group. Default false.
    #[serde(default)]
    main: bool,
}

/// Sends a signal to the service's process group (or, with `main=true`, to its main
/// process only), and records it as a `signaled` event.
#[utoipa::path(post, path = "/v1/services/{name}/signal", tag = "services",
    params(("name" = String, Path, description = "The service"), SignalQuery),
    responses(
        (status = 200, description = "Sent", body = Signaled),
        (status = 400, description = "No signal, or not a signal", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 409, description = "It has no process to signal", body = ErrorBody),
    ))]
pub async fn signal(
    State(supervisor): State<Arc<Supervisor>>,
    UrlPath(name): UrlPath<String>,
    query: Result<Query<SignalQuery>, QueryRejection>,
) -> Result<Json<Signaled>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let documented = regex::Regex::new(SIGNAL_PATTERN).is_ok_and(|re| re.is_match(&query.signal));
    let signal = crate::config::values::any_signal(&query.signal)
        .ok()
        .filter(|_| documented)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::BadRequest,
                format!(
                    "signal: `{}` is not a signal; write its name as `kill -l` prints it (SIGHUP or HUP) or its number (1 to 31)",
                    query.signal
                ),
            )
        })?;
    let name = known(&supervisor, name)?;
    let target = if query.main {
        Target::Main
    } else {
        Target::Group
    };
    let delivered = supervisor.signal(&name, signal, target).await?;
    Ok(Json(Signaled {
        service: name,
        signal: delivered.signal.as_str().to_owned(),
        target: delivered.target,
        pid: delivered.pid,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScaleQuery {
    /// How many instances to run, from 1 to 1000.
    #[param(minimum = 1, maximum = 1000)]
    replicas: u32,
}

/// Changes how many instances of a service with `replicas` run. New instances start
/// if the service runs; extra ones stop, the highest first, each once its proxy
/// clients are done (up to its stop timeout). Answers once they have. The count holds
/// until the config file's `replicas` changes.
#[utoipa::path(post, path = "/v1/services/{name}/scale", tag = "services",
    params(("name" = String, Path, description = "The service (the name in the config, not an instance's)"), ScaleQuery),
    responses(
        (status = 200, description = "Scaled", body = Scaled),
        (status = 400, description = "No count, or not one from 1 to 1000", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 409, description = "It has no `replicas`, the config cannot run that many, or the supervisor is shutting down", body = ErrorBody),
    ))]
pub async fn scale(
    State(supervisor): State<Arc<Supervisor>>,
    UrlPath(name): UrlPath<String>,
    query: Result<Query<ScaleQuery>, QueryRejection>,
) -> Result<Json<Scaled>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    if !(1..=crate::name::MAX_REPLICAS).contains(&query.replicas) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::BadRequest,
            format!(
                "replicas: {} is not a count muster runs; give one from 1 to {} (to run none, stop the service)",
                query.replicas,
                crate::name::MAX_REPLICAS
            ),
        ));
    }
    let changes = match supervisor.scale(&name, query.replicas).await {
        Err(Failure::Unknown(name)) => return Err(super::unknown_near(&supervisor, name)),
        other => other?,
    };
    let spec = supervisor.spec();
    let set = spec.replica_sets.get(name.as_str()).copied();
    Ok(Json(Scaled {
        replicas: set.map_or(query.replicas, |s| s.count),
        declared: set.map_or(query.replicas, |s| s.declared),
        instances: spec
            .members(&name)
            .iter()
            .map(ToString::to_string)
            .collect(),
        service: name,
        changes,
    }))
}

/// The service as it is now (a reload may have removed it meanwhile).
fn view(supervisor: &Supervisor, name: &str) -> Result<ServiceView, ApiError> {
    supervisor
        .service(name)
        .map(|handle| ServiceView::of(&handle))
        .ok_or_else(|| unknown(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::SIGNAL_PATTERN;

    #[test]
    fn the_documented_signal_pattern_takes_every_signal_and_nothing_else() {
        let pattern = regex::Regex::new(SIGNAL_PATTERN).unwrap();
        for signal in nix::sys::signal::Signal::iterator() {
            let name = signal.as_str();
            assert!(pattern.is_match(name), "{name}");
            assert!(pattern.is_match(&name[3..]), "{name}");
            assert!(pattern.is_match(&(signal as i32).to_string()), "{name}");
        }
        for refused in ["", "hup", "SIGFOO", "0", "32", "SIG", " HUP"] {
            assert!(!pattern.is_match(refused), "{refused:?}");
        }
        // The document says the same as the handler checks.
        let doc = serde_json::to_value(<crate::api::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
        let params = &doc["paths"]["/v1/services/{name}/signal"]["post"]["parameters"];
        let documented = params
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "signal")
            .unwrap();
        assert_eq!(documented["schema"]["pattern"], SIGNAL_PATTERN);
    }
}
