//! The log pane's source: the selected service's last lines, then its new ones, from
//! `GET /v1/services/{name}/logs?follow=true`. The supervisor sends at most
//! [`LOG_WINDOW`] past lines from what it keeps in memory: a service with a huge log
//! file costs the same as one with none. A new selection starts a new follow (a new
//! generation) and the old one is dropped.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::api::client::{self, Endpoint, Patience};
use crate::api::model::{ErrorBody, LogLine};

use super::app::{LOG_WINDOW, Update};

/// Follows `service`'s log, sending its lines tagged with `generation`.
pub async fn follow(
    endpoint: Endpoint,
    patience: Duration,
    service: String,
    generation: u64,
    updates: mpsc::UnboundedSender<Update>,
) {
    let path = format!("/v1/services/{service}/logs?tail={LOG_WINDOW}&follow=true");
    let why = match client::follow_at(&endpoint, &path, Patience::follow(patience)).await {
        Ok(Ok(mut stream)) => {
            let reader = stream.reader();
            let ended = stream
                .each_line(|line| {
                    if let Ok(line) = reader.parse::<LogLine>(line) {
                        let _ = updates.send(Update::Log {
                            generation,
                            lines: vec![line],
                        });
                    }
                })
                .await;
            match ended {
                Ok(()) => format!("the log of {service} ended"),
                Err(error) => format!("the log of {service} was cut off: {error}"),
            }
        }
        Ok(Err(answer)) => match answer.parse::<ErrorBody>() {
            Ok(body) => body.error.message,
            Err(unreadable) => unreadable.to_string(),
        },
        Err(error) => error.to_string(),
    };
    let _ = updates.send(Update::LogEnded { generation, why });
}
