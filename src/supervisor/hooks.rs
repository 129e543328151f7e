//! Hooks: commands run when matching events happen (`[[hooks]]` in muster.toml).
//!
//! One task follows the event stream (events arrive once they are in the history) and
//! starts a run for each hook whose `on` and `services` match. A hook runs in its own
//! process group from the config file's directory, with the event in its environment
//! (`MUSTER_EVENT_KIND`, `MUSTER_EVENT_SERVICE`, `MUSTER_EVENT_ID`,
//! `MUSTER_EVENT_RUN_ID`, `MUSTER_EVENT_MESSAGE`, `MUSTER_EVENT_JSON`) and its output
//! appended to `state-dir/hooks.log`. Nothing waits for a hook: supervision goes on while
//! it runs. A hook that fails, cannot start, or is still running at its `timeout` (then
//! its group is killed) gives a `hook-failed` event for the service of the event that
//! triggered it. A hook run for a `hook-failed` event that fails is only logged, so
//! failures cannot feed on themselves. At shutdown, hooks still running get a short
//! grace, then their groups are killed: nothing muster started outlives it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;
use tokio::sync::oneshot;

use super::bus::{Event, EventBus, EventKind};
use super::exit::Exit;
use super::process::{Io, Reaper, Spawn, signal_group};
use crate::config::{Hook, executable};

/// Hook runs allowed to be under way at once; an event storm beyond it is skipped
/// (and said so) rather than forking without bound.
const MAX_RUNNING: usize = 64;
/// How long a killed hook may take to be reaped before it is given up on.
const AFTER_KILL: Duration = Duration::from_secs(5);

/// The hooks in force; a reload replaces them.
pub type Hooks = Arc<std::sync::RwLock<Arc<[Hook]>>>;

/// The hook processes running now.
#[derive(Debug, Default)]
pub struct Runs {
    /// Runs under way or about to start (a slot is taken before the spawn).
    slots: AtomicUsize,
    pids: std::sync::Mutex<std::collections::BTreeSet<u32>>,
    ended: tokio::sync::Notify,
}

impl Runs {
    fn pids(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<u32>> {
        self.pids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits up to `grace` for running hooks to end, then kills the groups of those
    /// that have not. Returns how many were killed.
    pub async fn stop_all(&self, grace: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let ended = self.ended.notified();
            if self.pids().is_empty() {
                return 0;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                break;
            }
        }
        let pids = self.pids().clone();
        for &pid in &pids {
            let _ = signal_group(pid, Signal::SIGKILL);
        }
        pids.len()
    }
}

/// Where hooks run and what they use.
#[derive(Debug, Clone)]
pub struct Context {
    /// The config file's directory.
    pub dir: PathBuf,
    /// `state-dir/hooks.log`.
    pub output: PathBuf,
    pub bus: EventBus,
    pub reaper: Arc<Reaper>,
    pub runs: Arc<Runs>,
}

/// Starts following the events for `hooks`.
pub fn start(hooks: Hooks, context: Context) {
    let mut events = context.bus.feed();
    tokio::spawn(async move {
        loop {
            let Some(event) = events.recv().await else {
                return;
            };
            let hooks = Arc::clone(
                &hooks
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            for (index, hook) in hooks
                .iter()
                .enumerate()
                .filter(|(_, hook)| matches(hook, &event))
            {
                if context.runs.slots.fetch_add(1, Ordering::Relaxed) >= MAX_RUNNING {
                    context.runs.slots.fetch_sub(1, Ordering::Relaxed);
                    failed(
                        &context,
                        index,
                        hook,
                        &event,
                        format!("skipped: {MAX_RUNNING} hook runs are already under way"),
                    );
                    continue;
                }
                let (context, hook, event) = (context.clone(), hook.clone(), Arc::clone(&event));
                tokio::spawn(async move {
                    if let Err(why) = run(&context, &hook, &event).await {
                        failed(&context, index, &hook, &event, why);
                    }
                    context.runs.slots.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }
    });
}

fn matches(hook: &Hook, event: &Event) -> bool {
    hook.on.contains(&event.kind)
        && hook
            .services
            .as_ref()
            .is_none_or(|names| names.contains(&event.service))
}

/// Runs one hook for one event; `Err` says how it failed.
async fn run(context: &Context, hook: &Hook, event: &Event) -> Result<(), String> {
    let spawn = command(context, hook, event)?;
    let (told, exited) = oneshot::channel();
    let pid = context
        .reaper
        .spawn(spawn, move |exit| {
            let _ = told.send(exit);
        })
        .map_err(|error| format!("cannot start: {error}"))?
        .pid;
    context.runs.pids().insert(pid);
    let outcome = wait(hook, pid, exited).await;
    context.runs.pids().remove(&pid);
    context.runs.ended.notify_waiters();
    outcome
}

/// Waits for a hook's exit, killing its group at the timeout.
async fn wait(hook: &Hook, pid: u32, exited: oneshot::Receiver<Exit>) -> Result<(), String> {
    let mut exited = exited;
    match tokio::time::timeout(hook.timeout, &mut exited).await {
        Ok(Ok(Exit::Code(0))) => Ok(()),
        Ok(Ok(exit)) => Err(exit.to_string()),
        Ok(Err(_)) => Err("its end was not seen".to_owned()),
        Err(_) => {
            let _ = signal_group(pid, Signal::SIGKILL);
            // Counted as running until it is gone.
            let _ = tokio::time::timeout(AFTER_KILL, exited).await;
            Err(format!(
                "still running after {}; killed",
                super::machine::human(hook.timeout)
            ))
        }
    }
}

fn command(context: &Context, hook: &Hook, event: &Event) -> Result<Spawn, String> {
    let path_var = std::env::var_os("PATH");
    let program = executable::resolve(&hook.run[0], &context.dir, path_var.as_deref())
        .map_err(|error| format!("cannot start: {error}"))?;
    let output = append(&context.output)?;
    let errors = output
        .try_clone()
        .map_err(|error| format!("cannot write {}: {error}", context.output.display()))?;
    let json = serde_json::to_string(event).unwrap_or_default();
    let mut command = Command::new(program);
    super::process::forget_starter(&mut command);
    command
        .args(&hook.run[1..])
        .current_dir(&context.dir)
        .env("MUSTER_EVENT_KIND", event.kind.as_str())
        .env("MUSTER_EVENT_SERVICE", event.service.as_str())
        .env("MUSTER_EVENT_ID", event.id.to_string())
        .env("MUSTER_EVENT_RUN_ID", event.run_id.to_string())
        .env("MUSTER_EVENT_MESSAGE", &event.message)
        .env("MUSTER_EVENT_JSON", json);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut spawn = Spawn::new(command);
    spawn.stdout = Io::Fd(output.into());
    spawn.stderr = Io::Fd(errors.into());
    Ok(spawn)
}

fn append(path: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}

/// Records a failed hook run as a `hook-failed` event (only logged when the hook ran for
/// a `hook-failed` event itself).
fn failed(context: &Context, index: usize, hook: &Hook, event: &Event, why: String) {
    let argv =
        shlex::try_join(hook.run.iter().map(String::as_str)).unwrap_or_else(|_| hook.run.join(" "));
    let message = format!(
        "hooks[{index}] (`{argv}`) for {} event {}: {why}",
        event.kind.as_str(),
        event.id
    );
    if event.kind == EventKind::HookFailed {
        super::say::warn(&message);
        return;
    }
    context.bus.publish(
        &event.service,
        event.run_id,
        EventKind::HookFailed,
        message,
        json!({
            "hook": index,
            "run": hook.run,
            "event": event.id,
            "event_kind": event.kind.as_str(),
            "reason": why,
        }),
    );
}
