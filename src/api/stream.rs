//! The streaming endpoints: logs (tail, then follow) as JSON Lines, and events (since an
//! id, then follow) as a JSON document or server-sent events.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, BoxStream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast;

use utoipa::IntoParams;

use super::model::{ErrorBody, EventList, LogLine};
use super::{ApiError, ErrorKind, bad_query, known};
use crate::supervisor::logs::{Line, Log};
use crate::supervisor::{Event, Supervisor};

/// The most lines a tail may ask for (the kept tail is shorter anyway).
pub const MAX_TAIL: usize = 100_000;
/// The header of a follow saying where, in each service's log file, its live lines
/// begin (documented on the handlers).
pub const POSITIONS: &str = "muster-log-positions";
/// The largest id a JSON number holds exactly (2^53 - 1).
const MAX_EVENT_ID: u64 = (1 << 53) - 1;
/// How many events older than those kept in memory a follow reads from the history
/// database: as many as memory keeps.
const RESUME_FROM_HISTORY: u64 = crate::supervisor::HISTORY_IN_MEMORY as u64;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// How many past lines to send first (default 100, at most 100,000).
    #[param(minimum = 0, maximum = 100_000)]
    tail: Option<u32>,
    /// Keep the answer open and send new lines as they come.
    #[serde(default)]
    follow: bool,
}

/// One service's output as JSON Lines: the last lines, then (with `follow`) new ones.
///
/// The last lines are those the supervisor keeps in memory (at most `logs.tail-lines`);
/// the files in `state-dir/logs` hold everything.
#[utoipa::path(get, path = "/v1/services/{name}/logs", tag = "logs",
    params(("name" = String, Path, description = "The service"), LogsQuery),
    responses(
        (status = 200, description = "One JSON object per line", body = LogLine, content_type = "application/x-ndjson",
            headers(("muster-log-positions" = String, description = "With `follow` only: where \
                the lines sent live begin in each service's log file on disk, as \
                `service=inode:offset` separated by commas (`service=none` when it has no \
                file yet). A client that reads the past from the files up to there, and \
                the rest from this answer, sees every line once."))),
        (status = 400, description = "A malformed query", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
    ))]
pub async fn service_logs(
    State(supervisor): State<Arc<Supervisor>>,
    UrlPath(name): UrlPath<String>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    tail_in_range(&query)?;
    let name = known(&supervisor, name)?;
    Ok(logs(&supervisor, Some(&name), &query))
}

/// Every service's output as JSON Lines, by time.
///
/// The past lines are the tails kept in memory, as for one service.
#[utoipa::path(get, path = "/v1/logs", tag = "logs",
    params(LogsQuery),
    responses(
        (status = 200, description = "One JSON object per line", body = LogLine, content_type = "application/x-ndjson",
            headers(("muster-log-positions" = String, description = "With `follow` only: where \
                the lines sent live begin in each service's log file on disk, as \
                `service=inode:offset` separated by commas (`service=none` when it has no \
                file yet). A client that reads the past from the files up to there, and \
                the rest from this answer, sees every line once."))),
        (status = 400, description = "A malformed query", body = ErrorBody),
    ))]
pub async fn all_logs(
    State(supervisor): State<Arc<Supervisor>>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    tail_in_range(&query)?;
    Ok(logs(&supervisor, None, &query))
}

/// A tail past [`MAX_TAIL`] is refused, as the document says, not quietly cut.
fn tail_in_range(query: &LogsQuery) -> Result<(), ApiError> {
    match query.tail {
        Some(tail) if tail as usize > MAX_TAIL => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::BadRequest,
            format!("tail: at most {MAX_TAIL}"),
        )),
        _ => Ok(()),
    }
}

fn logs(supervisor: &Supervisor, only: Option<&str>, query: &LogsQuery) -> Response {
    let tail = query.tail.map_or(100, |tail| tail as usize);
    let mut past: Vec<(String, Line)> = Vec::new();
    let mut live: Vec<BoxStream<'static, (String, Line)>> = Vec::new();
    let mut positions: Vec<String> = Vec::new();
    for handle in supervisor.services() {
        let name = handle.name().to_string();
        if only.is_some_and(|only| only != name) {
            continue;
        }
        let mut log = Log::lock(handle.log());
        past.extend(log.tail(tail).into_iter().map(|line| (name.clone(), line)));
        if query.follow {
            // Lines are written to the file under this lock: where the file ends now is
            // exactly where the live lines begin.
            positions.push(format!("{name}={}", position(log.path())));
            live.push(follow(name, log.follow()));
        }
    }
    past.sort_by_key(|(_, line)| line.time);
    let skip = past.len().saturating_sub(tail);
    let past = stream::iter(past.into_iter().skip(skip));
    let lines = past.chain(stream::select_all(live)).map(|(service, line)| {
        let mut text = serde_json::to_string(&LogLine {
            service,
            time: humantime::format_rfc3339_millis(line.time).to_string(),
            stream: line.stream,
            text: line.text,
        })
        .unwrap_or_default();
        text.push('\n');
        Ok::<_, Infallible>(Bytes::from(text))
    });
    let mut response = (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response();
    if query.follow
        && let Ok(value) = header::HeaderValue::from_str(&positions.join(","))
    {
        response.headers_mut().insert(POSITIONS, value);
    }
    response
}

/// `inode:offset` of the end of a log file: the current one, or the newest rotated one
/// when the current one has just been rotated away; `none` when there is neither.
fn position(path: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let rotated = std::path::PathBuf::from(format!("{}.1", path.display()));
    [path, rotated.as_path()]
        .iter()
        .find_map(|file| std::fs::metadata(file).ok())
        .map_or_else(
            || "none".to_owned(),
            |meta| format!("{}:{}", meta.ino(), meta.len()),
        )
}

fn follow(
    service: String,
    receiver: broadcast::Receiver<Line>,
) -> BoxStream<'static, (String, Line)> {
    stream::unfold((service, receiver), |(service, mut receiver)| async move {
        loop {
            match receiver.recv().await {
                Ok(line) => return Some(((service.clone(), line), (service, receiver))),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .boxed()
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events after this id.
    #[serde(default)]
    #[param(minimum = 0, maximum = 9007199254740991_u64)]
    since: u64,
    /// Keep the answer open as server-sent events (each with its id).
    #[serde(default)]
    follow: bool,
    /// Only this service's events.
    service: Option<String>,
    /// Only events of this kind, such as `failed`.
    #[param(value_type = Option<crate::supervisor::EventKind>)]
    kind: Option<String>,
}

/// Events after `since` (the supervisor keeps the last 10,000), filtered by service and
/// kind; with `follow`, server-sent events that go on as events happen.
#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(EventsQuery),
    responses(
        (status = 200, description = "The events; with follow, a text/event-stream whose data are events", body = EventList),
        (status = 400, description = "A malformed query or an unknown kind", body = ErrorBody),
        (status = 404, description = "`service` names no service, now or in the kept events", body = ErrorBody),
    ))]
pub async fn events(
    State(supervisor): State<Arc<Supervisor>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    // Ids stay below 2^53 so that every JSON client reads them exactly; the document
    // says so, and a larger `since` is refused rather than read as "nothing newer".
    if query.since > MAX_EVENT_ID {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::BadRequest,
            format!("since: at most {MAX_EVENT_ID}"),
        ));
    }
    if let Some(kind) = &query.kind
        && !crate::config::EVENT_KINDS.contains(&kind.as_str())
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::BadRequest,
            format!(
                "`{kind}` is not an event kind; one of: {}",
                crate::config::EVENT_KINDS.join(", ")
            ),
        ));
    }
    // A service a reload removed still has its events: only a name never seen is
    // unknown, as it is for `/v1/services/{name}`.
    if let Some(service) = &query.service
        && supervisor.service(service).is_none()
        && !supervisor
            .events_since(0)
            .iter()
            .any(|event| event.service.as_str() == service)
    {
        known(&supervisor, service.clone())?;
    }
    let keep = move |event: &Event| {
        query
            .service
            .as_deref()
            .is_none_or(|s| event.service.as_str() == s)
            && query
                .kind
                .as_deref()
                .is_none_or(|k| event.kind.as_str() == k)
    };
    let past: Vec<Arc<Event>> = supervisor.events_since(query.since);
    if !query.follow {
        let events: Vec<Event> = past
            .iter()
            .map(AsRef::as_ref)
            .filter(|e| keep(e))
            .cloned()
            .collect();
        return Ok(axum::Json(EventList { events }).into_response());
    }
    // From `since`, then every event, none lost however slowly the client reads. What
    // memory no longer holds comes from the history: a client resuming after a restart
    // of the supervisor (whose memory starts empty) gets what the old one wrote after
    // the last event it saw. A `since` far older than memory starts at the oldest kept,
    // so that it does not read the whole history at once.
    let start = match past.first() {
        Some(first) if first.id - 1 - query.since > RESUME_FROM_HISTORY => first.id - 1,
        _ => query.since,
    };
    let feed = supervisor.bus().feed_since(start);
    let events = stream::unfold(feed, |mut feed| async move {
        let event = feed.recv().await?;
        Some((event, feed))
    });
    let events = events
        .filter(move |e| std::future::ready(keep(e)))
        .map(|event| {
            let data = serde_json::to_string(event.as_ref()).unwrap_or_default();
            Ok::<_, Infallible>(SseEvent::default().id(event.id.to_string()).data(data))
        });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}
