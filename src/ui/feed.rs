//! The API feed: the tasks that keep [`super::app::App`] current. One connects, reads
//! the services and follows the event stream, and when the supervisor goes away says so
//! and connects again (resuming the events after the last one seen); one reads the
//! services again when events say something changed (coalesced) and on a slow tick for
//! the CPU, memory and uptime figures, which no event announces.

use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};
use tokio::sync::{Notify, mpsc};

use crate::api::client::{self, Endpoint, Patience};
use crate::api::model::{ErrorBody, ServiceList};
use crate::event::Event;

use super::update::Update;

/// How long events are gathered before the services are read again: a burst (a boot of
/// a thousand services) costs a few reads, not one per event.
const COALESCE: Duration = Duration::from_millis(150);
/// The longest wait between two attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A connection made: the services, the supervisor's pid, and why actions are refused.
#[derive(Debug)]
pub struct Connected {
    pub list: ServiceList,
    pub pid: Option<u32>,
    pub read_only: Option<String>,
}

/// Why no connection was made, and whether trying again can help (a token the
/// supervisor refuses will not get better).
#[derive(Debug)]
pub struct NotConnected {
    pub reason: String,
    pub lasting: bool,
}

/// Reads the services and learns what the token may do.
pub async fn connect(endpoint: &Endpoint, patience: Duration) -> Result<Connected, NotConnected> {
    let passing = |reason: String| NotConnected {
        reason,
        lasting: false,
    };
    let answer = client::request_at(
        endpoint,
        Method::GET,
        "/v1/services",
        Patience::plain(patience),
    )
    .await
    .map_err(|error| passing(error.to_string()))?;
    let list = match answer.outcome::<ServiceList>() {
        Ok(Ok(list)) => list,
        Ok(Err(body)) => {
            let lasting = answer.status == StatusCode::UNAUTHORIZED;
            let mut reason = format!(
                "the supervisor at {endpoint} answered: {}",
                body.error.message
            );
            if lasting {
                reason.push_str("; give the file holding its token with --token-file");
            }
            return Err(NotConnected { reason, lasting });
        }
        Err(unreadable) => {
            return Err(NotConnected {
                reason: unreadable.to_string(),
                lasting: true,
            });
        }
    };
    Ok(Connected {
        list,
        pid: answer.pid,
        read_only: role(endpoint, patience).await,
    })
}

/// Why actions are refused, when the token may only read. Over the unix socket every
/// client may act. Over TCP, a `POST` to a route that only takes `GET` asks without
/// changing anything: the token check answers first, 403 for a read token, and the
/// router 405 for a control token.
async fn role(endpoint: &Endpoint, patience: Duration) -> Option<String> {
    if matches!(endpoint, Endpoint::Socket(_)) {
        return None;
    }
    let answer = client::request_at(
        endpoint,
        Method::POST,
        "/v1/openapi.json",
        Patience::plain(patience),
    )
    .await
    .ok()?;
    (answer.status == StatusCode::FORBIDDEN).then(|| {
        let said = answer
            .parse::<ErrorBody>()
            .map(|body| body.error.message)
            .unwrap_or_else(|_| "the token may only read".to_owned());
        format!("read-only: {said}")
    })
}

/// Follows the events and reconnects for as long as the screen is open. The screen
/// took in the first connection itself, so that its first frame shows the services.
pub async fn run(
    endpoint: Endpoint,
    patience: Duration,
    updates: mpsc::UnboundedSender<Update>,
    changed: Arc<Notify>,
) {
    let mut since = 0;
    let mut backoff = Duration::from_millis(250);
    let mut connected = true;
    loop {
        if !connected {
            match connect(&endpoint, patience).await {
                Ok(made) => {
                    backoff = Duration::from_millis(250);
                    let sent = updates.send(Update::Services(made.list)).is_ok()
                        && updates
                            .send(Update::Connected {
                                pid: made.pid,
                                read_only: made.read_only,
                                again: true,
                            })
                            .is_ok();
                    if !sent {
                        return;
                    }
                    connected = true;
                }
                Err(failure) => {
                    if updates
                        .send(Update::Lost {
                            reason: failure.reason,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        if connected {
            let reason = events(&endpoint, patience, &mut since, &updates, &changed).await;
            connected = false;
            if updates.send(Update::Lost { reason }).is_err() {
                return;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Follows the event stream from after `since` until it ends; says why it ended.
async fn events(
    endpoint: &Endpoint,
    patience: Duration,
    since: &mut u64,
    updates: &mpsc::UnboundedSender<Update>,
    changed: &Notify,
) -> String {
    let path = format!("/v1/events?follow=true&since={since}");
    let mut stream = match client::follow_at(endpoint, &path, Patience::follow(patience)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(answer)) => {
            return match answer.parse::<ErrorBody>() {
                Ok(body) => format!("the event stream was refused: {}", body.error.message),
                Err(unreadable) => unreadable.to_string(),
            };
        }
        Err(error) => return error.to_string(),
    };
    let reader = stream.reader();
    let ended = stream
        .each_line(|line| {
            // Server-sent events: `id:`, `data:` and keep-alive comments; only the data
            // matters, and it carries its id.
            let Some(data) = line.strip_prefix("data:") else {
                return;
            };
            if let Ok(event) = reader.parse::<Event>(data.trim_start()) {
                *since = (*since).max(event.id);
                let _ = updates.send(Update::Event(event));
                changed.notify_one();
            }
        })
        .await;
    match ended {
        Ok(()) => format!("the supervisor at {endpoint} ended the event stream"),
        Err(error) => format!("the supervisor went away ({error})"),
    }
}

/// Reads the services again after a change (coalesced) and every `tick`.
pub async fn refresh(
    endpoint: Endpoint,
    patience: Duration,
    tick: Duration,
    updates: mpsc::UnboundedSender<Update>,
    changed: Arc<Notify>,
) {
    loop {
        tokio::select! {
            () = changed.notified() => tokio::time::sleep(COALESCE).await,
            () = tokio::time::sleep(tick) => {}
        }
        if updates.is_closed() {
            return;
        }
        // A failure here is the feed task's to report: it sees the same supervisor.
        if let Ok(answer) = client::request_at(
            &endpoint,
            Method::GET,
            "/v1/services",
            Patience::plain(patience),
        )
        .await
            && let Ok(Ok(list)) = answer.outcome::<ServiceList>()
            && updates.send(Update::Services(list)).is_err()
        {
            return;
        }
    }
}
