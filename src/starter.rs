//! Telling whoever started muster how it is, on the datagram socket `NOTIFY_SOCKET`
//! names (systemd's notify protocol, `sd_notify(3)`).
//!
//! Two starters listen there. **systemd**, for a unit of `Type=notify` or
//! `Type=notify-reload`, hears everything ([`tell_systemd`], [`ping_watchdog`]):
//! `STATUS=` with the one-line summary whenever it changes, `READY=1` once the bootstrap
//! has settled, `RELOADING=1` with `MONOTONIC_USEC=` when a reload begins and `READY=1`
//! when it has ended, `STOPPING=1` when the shutdown begins, and `WATCHDOG=1` at half of
//! `WATCHDOG_USEC` for as long as the graph owner's loop answers. **`muster up -d`**,
//! waiting for the background supervisor it started, hears only `READY=1` (or
//! `STOPPING=1` with the reason, when the supervisor ends first) and then goes away, so
//! the background supervisor says nothing more ([`tell_parent`], sent by the view).
//!
//! Nothing here is a reason to stop supervising: a socket that is gone or full loses
//! the message, and the first failure is said once on stderr. The socket is
//! non-blocking, so a starter that does not read cannot hold up the supervisor.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::supervisor::{Lifecycle, Supervisor, warn};

/// Watchdog pings are never further apart than this, whatever `WATCHDOG_USEC` says
/// (and a timer that far out cannot overflow).
const LONGEST_PING: Duration = Duration::from_secs(3600);
/// Nor closer together than this: `WATCHDOG_USEC=1` must not make a busy loop.
const SHORTEST_PING: Duration = Duration::from_millis(1);

/// The socket of whoever started muster, from `NOTIFY_SOCKET`.
#[derive(Debug)]
pub struct Starter {
    socket: UnixDatagram,
    target: Target,
    /// As given, for messages.
    address: String,
    /// A failure to send has been said on stderr.
    told: AtomicBool,
}

#[derive(Debug)]
enum Target {
    Path(PathBuf),
    Abstract(SocketAddr),
}

impl Starter {
    /// The starter `NOTIFY_SOCKET` names: `None` when it is unset or empty, `Err` (what
    /// to say) when it is not an address muster can send to.
    pub fn from_env() -> Option<Result<Self, String>> {
        let address = std::env::var_os("NOTIFY_SOCKET").filter(|a| !a.is_empty())?;
        Some(Self::at(address.as_bytes()))
    }

    /// The starter at `address`: an absolute path, or `@` and an abstract name.
    pub fn at(address: &[u8]) -> Result<Self, String> {
        let shown = String::from_utf8_lossy(address).into_owned();
        let target = match address.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)
                .map(Target::Abstract)
                .map_err(|error| format!("NOTIFY_SOCKET={shown}: {error}"))?,
            None if address.starts_with(b"/") => {
                Target::Path(PathBuf::from(std::ffi::OsStr::from_bytes(address)))
            }
            None => {
                return Err(format!(
                    "NOTIFY_SOCKET={shown} is neither an absolute path nor an abstract \
                     name (@name); muster cannot tell its starter how it is"
                ));
            }
        };
        let socket = UnixDatagram::unbound()
            .and_then(|socket| socket.set_nonblocking(true).map(|()| socket))
            .map_err(|error| format!("cannot open a socket to reach NOTIFY_SOCKET: {error}"))?;
        Ok(Self {
            socket,
            target,
            address: shown,
            told: AtomicBool::new(false),
        })
    }

    /// Sends one message (newline-separated `KEY=VALUE` lines). Whether it went out;
    /// the first failure is said on stderr, once.
    pub fn send(&self, message: &str) -> bool {
        let sent = match &self.target {
            Target::Path(path) => self.socket.send_to(message.as_bytes(), path),
            Target::Abstract(address) => self.socket.send_to_addr(message.as_bytes(), address),
        };
        match sent {
            Ok(_) => true,
            Err(error) => {
                if !self.told.swap(true, Ordering::Relaxed) {
                    let why = match error.kind() {
                        std::io::ErrorKind::WouldBlock => {
                            "its queue is full (nobody reads it)".to_owned()
                        }
                        _ => error.to_string(),
                    };
                    warn(format_args!(
                        "cannot tell the service manager how muster is (NOTIFY_SOCKET={}): \
                         {why}; muster keeps supervising, and will not say this again",
                        self.address
                    ));
                }
                false
            }
        }
    }
}

/// Sends one message to `NOTIFY_SOCKET`, if it is set: what the background supervisor
/// of `up -d` tells the command that waits for it. Errors are ignored (that command
/// may have gone).
pub fn tell_parent(message: &str) {
    if let Some(Ok(starter)) = Starter::from_env() {
        // The parent's going away is its business: nothing to say.
        starter.told.store(true, Ordering::Relaxed);
        starter.send(message);
    }
}

/// How often to ping the watchdog, from `WATCHDOG_USEC` and `WATCHDOG_PID` as systemd
/// sets them (`sd_watchdog_enabled(3)`): half the deadline. `Ok(None)` without a
/// watchdog; `Err` says why the variables are ignored.
pub fn watchdog_interval(
    usec: Option<&str>,
    pid: Option<&str>,
    own_pid: u32,
) -> Result<Option<Duration>, String> {
    let Some(usec) = usec else {
        return Ok(None);
    };
    if let Some(pid) = pid {
        match pid.trim().parse::<u32>() {
            Ok(pid) if pid == own_pid => {}
            Ok(pid) => {
                return Err(format!(
                    "WATCHDOG_USEC is meant for pid {pid} (WATCHDOG_PID), not for muster \
                     (pid {own_pid}); no watchdog pings. Start muster with `exec` so that \
                     it is the service's main process"
                ));
            }
            Err(_) => {
                return Err(format!(
                    "WATCHDOG_PID={pid} is not a process id; WATCHDOG_USEC is ignored and \
                     no watchdog pings are sent"
                ));
            }
        }
    }
    match usec.trim().parse::<u64>() {
        Ok(0) => Err(
            "WATCHDOG_USEC=0 asks for no watchdog; it is ignored and no watchdog pings are sent"
                .to_owned(),
        ),
        Ok(micros) => Ok(Some(
            (Duration::from_micros(micros) / 2).clamp(SHORTEST_PING, LONGEST_PING),
        )),
        Err(_) => Err(format!(
            "WATCHDOG_USEC={usec} is not a whole number of microseconds; it is ignored and \
             no watchdog pings are sent"
        )),
    }
}

/// The watchdog interval systemd asked for in the environment, if any; what is wrong
/// with it is said on stderr.
pub fn watchdog_from_env() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    match watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id()) {
        Ok(every) => every,
        Err(why) => {
            warn(why);
            None
        }
    }
}

/// Now on `CLOCK_MONOTONIC`, in microseconds: what `RELOADING=1` carries, so that systemd
/// can tell this reload from one it asked for earlier.
pub fn monotonic_usec() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |now| {
        now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1_000
    })
}

/// `WATCHDOG=1` every `every`, each once the graph owner has answered that its loop
/// turns ([`Supervisor::alive`]): a stuck owner, or a blocked thread, stops the pings,
/// and systemd restarts muster. Runs until the owner is gone or the task is dropped.
pub async fn ping_watchdog(supervisor: Arc<Supervisor>, starter: Arc<Starter>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !supervisor.alive().await {
            return;
        }
        starter.send("WATCHDOG=1");
    }
}

/// What systemd has been told.
#[derive(Debug, Default)]
struct Told {
    ready: bool,
    reloading: bool,
    stopping: bool,
    /// Reloads begun that have been accounted for.
    reloads_seen: u64,
    status: String,
}

/// Tells systemd where the supervisor is, as it changes (see the module's
/// documentation), until the supervisor is done: `STOPPING=1` is always the last.
pub async fn tell_systemd(supervisor: Arc<Supervisor>, starter: Arc<Starter>) {
    let mut graph = supervisor.watch_graph();
    let mut reloads = supervisor.watch_reloads();
    let mut feed = supervisor.bus().feed();
    let mut feed_open = true;
    let mut ownership = supervisor.fences().map(|fences| fences.changes.subscribe());
    let mut told = Told::default();
    loop {
        // Whatever else has happened meanwhile is in the statuses already.
        while feed_open && feed.try_recv().is_some() {}
        let lifecycle = supervisor.lifecycle();
        let now = *reloads.borrow_and_update();
        let status = summary(&supervisor, lifecycle);
        let mut message = Vec::new();
        if matches!(lifecycle, Lifecycle::ShuttingDown | Lifecycle::Done) {
            if !told.stopping {
                told.stopping = true;
                message.push("STOPPING=1".to_owned());
            }
        } else if !told.ready {
            if supervisor.booted() {
                told.ready = true;
                // A reload during the bootstrap is part of it.
                told.reloads_seen = now.begun;
                message.push("READY=1".to_owned());
            }
        } else {
            if now.begun > told.reloads_seen && !told.reloading {
                told.reloading = true;
                message.push("RELOADING=1".to_owned());
                message.push(format!("MONOTONIC_USEC={}", monotonic_usec()));
            }
            told.reloads_seen = now.begun;
            if told.reloading && now.active == 0 {
                // A reload that began and ended between two looks is told whole, in
                // its own message: RELOADING=1 first, then READY=1.
                if !message.is_empty() {
                    message.push("STATUS=reloading the config".to_owned());
                    starter.send(&message.join("\n"));
                    message.clear();
                }
                told.reloading = false;
                message.push("READY=1".to_owned());
            }
        }
        // Until every service the bootstrap starts has taken its first step, some read
        // "stopped" only because their turn has not come: nothing to tell yet.
        let begun = lifecycle != Lifecycle::Booting || supervisor.graph().launched;
        if (begun && status != told.status) || !message.is_empty() {
            message.push(format!("STATUS={status}"));
            told.status = status;
        }
        if !message.is_empty() {
            starter.send(&message.join("\n"));
        }
        if lifecycle == Lifecycle::Done {
            return;
        }
        let owners = async {
            match &mut ownership {
                Some(changes) => changes.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = feed.recv(), if feed_open => feed_open = event.is_some(),
            changed = graph.changed() => if changed.is_err() { return },
            changed = reloads.changed() => if changed.is_err() { return },
            // A singleton found running elsewhere ends the bootstrap without an event.
            ok = owners => if !ok { return },
        }
    }
}

/// The one-line summary, naming the services that failed.
fn summary(supervisor: &Supervisor, lifecycle: Lifecycle) -> String {
    let graph = supervisor.graph();
    crate::supervisor::summary::line(
        lifecycle,
        supervisor.booted(),
        graph
            .services
            .iter()
            .map(|(name, handle)| (name.as_str(), handle.phase())),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_interval_is_half_the_deadline() {
        assert_eq!(watchdog_interval(None, None, 7), Ok(None));
        assert_eq!(
            watchdog_interval(Some("1000000"), None, 7),
            Ok(Some(Duration::from_millis(500)))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("7"), 7),
            Ok(Some(Duration::from_secs(15)))
        );
        // Bounded both ways.
        assert_eq!(
            watchdog_interval(Some("1"), None, 7),
            Ok(Some(SHORTEST_PING))
        );
        assert_eq!(
            watchdog_interval(Some(&u64::MAX.to_string()), None, 7),
            Ok(Some(LONGEST_PING))
        );
    }

    #[test]
    fn a_watchdog_for_someone_else_or_garbage_is_refused_with_the_reason() {
        for (usec, pid, says) in [
            ("0", None, "WATCHDOG_USEC=0"),
            ("abc", None, "WATCHDOG_USEC=abc is not a whole number"),
            ("-5", None, "WATCHDOG_USEC=-5 is not a whole number"),
            ("10s", None, "WATCHDOG_USEC=10s is not a whole number"),
            ("", None, "WATCHDOG_USEC= is not a whole number"),
            (
                "1000",
                Some("8"),
                "meant for pid 8 (WATCHDOG_PID), not for muster (pid 7)",
            ),
            ("1000", Some("x"), "WATCHDOG_PID=x is not a process id"),
        ] {
            let error = watchdog_interval(Some(usec), pid, 7).unwrap_err();
            assert!(error.contains(says), "{usec:?} {pid:?}: {error}");
        }
    }

    #[test]
    fn notify_socket_addresses() {
        assert!(Starter::at(b"@muster-test").is_ok());
        assert!(Starter::at(b"/run/systemd/notify").is_ok());
        let error = Starter::at(b"vsock:2:1234").unwrap_err();
        assert!(
            error.contains("neither an absolute path nor an abstract name"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_socket_is_a_failed_send_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.sock");
        let starter = Starter::at(path.as_os_str().as_bytes()).unwrap();
        assert!(!starter.send("READY=1"));
        assert!(!starter.send("READY=1"));
        assert!(starter.told.load(Ordering::Relaxed));
    }

    #[test]
    fn messages_arrive_on_a_bound_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let starter = Starter::at(path.as_os_str().as_bytes()).unwrap();
        assert!(starter.send("READY=1\nSTATUS=ok"));
        let mut buffer = [0u8; 64];
        let n = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1\nSTATUS=ok");
        assert!(monotonic_usec() > 0);
    }
}
