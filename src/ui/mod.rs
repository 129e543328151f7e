//! `muster ui`: a terminal dashboard over a running supervisor, here (its unix socket)
//! or on another host (its TCP listener and a token), talking to it only through the
//! API.
//!
//! The screen is redrawn when something happens, never on a fast loop: a key, a resize,
//! an event from the supervisor's stream, a line of the followed log, an action's
//! outcome, and a slow tick for the figures no event announces (CPU, memory, uptime).
//! Bursts are coalesced into one frame per [`FRAME`].
//!
//! Modules: [`app`] the state, [`keys`] the keys, [`actions`] what can be asked,
//! [`feed`] and [`logs`] the tasks reading the API, [`render`] the drawing,
//! [`terminal`] the terminal's mode and its restoration, [`text`] escaping and short
//! forms, [`columns`] the table's sorting.

mod actions;
mod app;
mod columns;
mod feed;
mod keys;
mod logs;
mod render;
mod terminal;
mod text;
mod update;

use std::sync::Arc;
use std::time::Duration;

use crossterm::event::{Event as TermEvent, EventStream};
use futures_util::StreamExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::api::client::Endpoint;
use app::{App, Update};

pub use render::{MIN_HEIGHT, MIN_WIDTH};

/// The shortest time between two frames: a flood of log lines or events is drawn at
/// most this often.
const FRAME: Duration = Duration::from_millis(40);
/// At most this many updates are taken in before a frame is drawn.
const BATCH: usize = 4096;

/// How the dashboard is to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub endpoint: Endpoint,
    /// Colours on (off with `NO_COLOR` or `--color never`).
    pub colour: bool,
    /// How long a request may take before the supervisor counts as gone.
    pub patience: Duration,
    /// How often the CPU, memory and uptime figures are read again.
    pub tick: Duration,
}

/// Why the dashboard could not run.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    /// A mistake of the user's (a token refused): exit 2 rather than 1.
    pub usage: bool,
}

/// Connects, opens the screen and runs until `q`, Ctrl-C, SIGTERM or SIGHUP.
pub fn run(options: Options) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| Failure {
            message: format!("cannot start the runtime: {error}"),
            usage: false,
        })?;
    let first = runtime
        .block_on(feed::connect(&options.endpoint, options.patience))
        .map_err(|failure| Failure {
            message: failure.reason,
            usage: failure.lasting,
        })?;
    let screen = terminal::Screen::enter().map_err(|error| Failure {
        message: format!("cannot take over the terminal: {error}"),
        usage: false,
    })?;
    let result = runtime.block_on(main_loop(screen, options, first));
    // The screen was restored when the loop dropped it: errors can be read now.
    result.map_err(|error| Failure {
        message: format!("the terminal failed: {error}"),
        usage: false,
    })
}

async fn main_loop(
    mut screen: terminal::Screen,
    options: Options,
    first: feed::Connected,
) -> std::io::Result<()> {
    let (updates, mut received) = mpsc::unbounded_channel::<Update>();
    let changed = Arc::new(Notify::new());
    let mut app = App::new(options.endpoint.to_string(), options.colour);
    let endpoint = options.endpoint.clone();
    app.apply(Update::Services(first.list));
    app.apply(Update::Connected {
        pid: first.pid,
        read_only: first.read_only,
        again: false,
    });
    let feed = tokio::spawn(feed::run(
        endpoint.clone(),
        options.patience,
        updates.clone(),
        changed.clone(),
    ));
    let refresh = tokio::spawn(feed::refresh(
        endpoint.clone(),
        options.patience,
        options.tick,
        updates.clone(),
        changed,
    ));
    let mut keys = EventStream::new();
    let mut tick = tokio::time::interval(options.tick);
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut log_task: Option<tokio::task::JoinHandle<()>> = None;
    let mut restart_log = false;
    let mut drawn = Instant::now();
    let mut dirty = true;
    loop {
        if restart_log || app.selected != app.log.service {
            restart_log = false;
            if let Some(task) = log_task.take() {
                task.abort();
            }
            let generation = app.follow_log(app.selected.clone());
            if let Some(service) = app.selected.clone() {
                log_task = Some(tokio::spawn(logs::follow(
                    endpoint.clone(),
                    options.patience,
                    service,
                    generation,
                    updates.clone(),
                )));
            }
        }
        if dirty {
            screen.draw(|frame| render::draw(frame, &mut app))?;
            drawn = Instant::now();
            dirty = false;
        }
        if app.quit {
            break;
        }
        tokio::select! {
            key = keys.next() => match key {
                Some(Ok(TermEvent::Key(key))) => {
                    if let Some(action) = keys::key(&mut app, key) {
                        let updates = updates.clone();
                        let endpoint = endpoint.clone();
                        tokio::spawn(async move {
                            let _ = updates.send(action.run(endpoint).await);
                        });
                    }
                    dirty = true;
                }
                Some(Ok(TermEvent::Resize(..))) => dirty = true,
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error),
                None => break,
            },
            Some(update) = received.recv() => {
                // Take in what else has come, up to the next frame's time.
                tokio::time::sleep_until(drawn + FRAME).await;
                let mut next = Some(update);
                let mut taken = 0;
                while let Some(update) = next.take() {
                    restart_log |= matches!(update, Update::Connected { again: true, .. });
                    app.apply(update);
                    taken += 1;
                    if taken < BATCH {
                        next = received.try_recv().ok();
                    }
                }
                dirty = true;
            }
            // The figures come with each read of the services, which draws a frame; this
            // tick only keeps the time since the connection was lost counting.
            _ = tick.tick() => dirty |= matches!(app.link, app::Link::Lost { .. }),
            _ = terminate.recv() => break,
            _ = hangup.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    feed.abort();
    refresh.abort();
    if let Some(task) = log_task {
        task.abort();
    }
    drop(screen);
    Ok(())
}
