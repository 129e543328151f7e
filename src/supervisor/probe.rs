//! One attempt of a probe that muster runs itself: `tcp`, `http` and `exec`. (`log` and
//! `notify` are pushed by the service: the log reader and the notify socket report
//! them.) An attempt answers `Ok(what passed)` or `Err(what failed)`, in words that go
//! straight into a reason.
//!
//! Exec probes take turns: each is a process spawned, and ten thousand services probing
//! at once must queue rather than fork ten thousand processes together. At most
//! [`exec_limit`] run at once across the supervisor; the others wait for a [`turn`].

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use nix::sys::signal::Signal;
use std::os::unix::process::CommandExt;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, SemaphorePermit, oneshot};

use super::exit::{Exit, plain};
use super::process::{Reaper, Spawn, signal_group};
use crate::config::{Check, Port};

/// The longest an HTTP probe reads of a body when looking for a substring.
const MAX_BODY: usize = 64 * 1024;

/// Exec probes running at once, per core: enough to keep the cores busy while some
/// wait on I/O, few enough that a herd of them queues instead of forking all together.
const EXEC_PER_CORE: usize = 4;

/// How many exec probes may run at once across the supervisor: four per core.
pub fn exec_limit() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from) * EXEC_PER_CORE
}

/// The turns exec probes take, [`exec_limit`] of them.
fn exec_turns() -> &'static Semaphore {
    static TURNS: OnceLock<Semaphore> = OnceLock::new();
    TURNS.get_or_init(|| Semaphore::new(exec_limit()))
}

/// Waits until an attempt of `check` may run, and holds its place until dropped: for an
/// exec probe, one of the [`exec_limit`] turns; other probes spawn nothing and go at once.
/// The caller takes its turn before it starts the attempt's time limit, so that waiting
/// in the queue is not counted as the probe being slow.
pub async fn turn(check: Option<&Check>) -> Option<SemaphorePermit<'static>> {
    match check {
        // The semaphore is never closed: acquiring fails only if it were.
        Some(Check::Exec(_)) => exec_turns().acquire().await.ok(),
        _ => None,
    }
}

/// Where an exec probe runs: the service's directory and environment.
#[derive(Debug, Clone)]
pub struct ExecContext {
    pub cwd: std::path::PathBuf,
    pub env: Vec<(String, String)>,
}

/// Runs one attempt of a polling check. The caller bounds it in time; dropping it
/// kills an exec probe's processes.
pub async fn attempt(
    check: &Check,
    reaper: &Arc<Reaper>,
    exec: &ExecContext,
) -> Result<String, String> {
    match check {
        Check::Tcp { host, port } => tcp(host, *port).await,
        Check::Http { url, status, body } => http(url, *status, body.as_deref()).await,
        Check::Exec(argv) => command(argv, reaper, &exec.cwd, &exec.env).await,
        Check::Log(_) | Check::Notify => Err("not a polling probe".to_owned()),
    }
}

/// Whether every declared port accepts connections (`wait-for-ports`).
pub async fn ports_listening(ports: &[Port]) -> Result<String, String> {
    for port in ports {
        let host = match port.ip {
            Some(ip) if !ip.is_unspecified() => ip.to_string(),
            _ => "127.0.0.1".to_owned(),
        };
        if let Err(error) = TcpStream::connect((host.as_str(), port.port)).await {
            return Err(format!(
                "port {port} is not listening yet ({})",
                plain(&error)
            ));
        }
    }
    let list: Vec<String> = ports.iter().map(ToString::to_string).collect();
    Ok(format!("ports {} listening", list.join(", ")))
}

async fn tcp(host: &str, port: u16) -> Result<String, String> {
    TcpStream::connect((host, port))
        .await
        .map(|_| format!("tcp {host}:{port} accepted a connection"))
        .map_err(|error| format!("{host}:{port}: {}", plain(&error)))
}

async fn http(url: &str, expected: Option<u16>, needle: Option<&str>) -> Result<String, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url} has no host"))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((authority.host(), port))
        .await
        .map_err(|error| format!("{}: {}", authority, plain(&error)))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("{url}: {error}"))?;
    let driver = tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::USER_AGENT, "muster-probe")
        .body(Empty::<Bytes>::new())
        .map_err(|error| format!("{url}: {error}"))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| format!("{url}: {error}"))?;
        let status = response.status().as_u16();
        let status_ok = match expected {
            Some(want) => status == want,
            None => (200..300).contains(&status),
        };
        if !status_ok {
            let want = expected.map_or("2xx".to_owned(), |s| s.to_string());
            return Err(format!("{url} answered {status}, expected {want}"));
        }
        if let Some(needle) = needle {
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|error| format!("{url}: reading the body: {error}"))?
                .to_bytes();
            if !String::from_utf8_lossy(&body).contains(needle) {
                return Err(format!(
                    "{url} answered {status} without {needle:?} in its body"
                ));
            }
        }
        Ok(format!("{url} answered {status}"))
    }
    .await;
    driver.abort();
    result
}

async fn command(
    argv: &[String],
    reaper: &Arc<Reaper>,
    cwd: &Path,
    env: &[(String, String)],
) -> Result<String, String> {
    let shown = Check::Exec(argv.to_vec()).describe();
    let mut command = Command::new(&argv[0]);
    super::process::forget_starter(&mut command);
    command
        .args(&argv[1..])
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .process_group(0);
    let (sender, receiver) = oneshot::channel();
    // If this attempt is dropped (timeout), the probe's process group is killed, even
    // when that happens while the spawn is still under way.
    let guard = KillOnDrop(Arc::default());
    let attempt = Arc::clone(&guard.0);
    let reaper = Arc::clone(reaper);
    // Off the runtime's thread: a spawn waits for the child's exec, and ten thousand
    // services probing would otherwise hold the thread every API request waits for.
    let spawned = tokio::task::spawn_blocking(move || {
        let spawned = reaper.spawn(Spawn::new(command), move |exit| {
            let _ = sender.send(exit);
        });
        if let Ok(child) = &spawned {
            let mut attempt = lock(&attempt);
            attempt.pid = Some(child.pid);
            if attempt.abandoned {
                let _ = signal_group(child.pid, Signal::SIGKILL);
            }
        }
        spawned.map(drop)
    })
    .await
    .map_err(|_| format!("{shown}: cannot run: its spawn was lost"))?;
    spawned.map_err(|error| format!("{shown}: cannot run: {}", plain(&error.error)))?;
    let exit = receiver
        .await
        .map_err(|_| format!("{shown}: lost track of the process"))?;
    // It has exited: its group id is no longer its to kill.
    lock(&guard.0).pid = None;
    match exit {
        Exit::Code(0) => Ok(format!("{shown} exited with status 0")),
        other => Err(format!("{shown} {other}")),
    }
}

/// A probe's process, as far as its attempt knows: whichever of the spawn and the
/// abandonment of the attempt comes second kills its group.
#[derive(Debug, Default)]
struct Attempt {
    pid: Option<u32>,
    abandoned: bool,
}

/// Kills a probe's process group when the attempt is abandoned.
struct KillOnDrop(Arc<std::sync::Mutex<Attempt>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let mut attempt = lock(&self.0);
        attempt.abandoned = true;
        if let Some(pid) = attempt.pid {
            let _ = signal_group(pid, Signal::SIGKILL);
        }
    }
}

fn lock(attempt: &std::sync::Mutex<Attempt>) -> std::sync::MutexGuard<'_, Attempt> {
    attempt
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
