//! The notify socket: one datagram socket speaking systemd's `sd_notify` protocol for
//! every service, passed to children as `NOTIFY_SOCKET`.
//!
//! The socket has an abstract name (`@muster-<pid>-<nonce>`), so no path length or
//! stale file can get in the way. The kernel attaches the sender's credentials
//! (`SO_PASSCRED`); a message is routed to the service whose process group holds the
//! sender, so `systemd-notify` run from a service's shell script counts, not only the
//! main process. File descriptors that arrive (`systemd-notify` sends one with
//! `BARRIER=1` and waits until it is closed) are closed at once. Malformed datagrams
//! are counted and dropped, never fatal.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram as StdDatagram};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg, setsockopt, sockopt,
};
use nix::unistd::{Pid, getpgid};
use tokio::io::Interest;
use tokio::net::UnixDatagram;

/// The longest datagram read; systemd uses the same limit.
const MAX_DATAGRAM: usize = 4096;

/// A parsed notify message: the fields muster acts on. Unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub ready: bool,
    pub status: Option<String>,
    pub stopping: bool,
    pub reloading: bool,
    /// `WATCHDOG=1`.
    pub watchdog: bool,
    /// `WATCHDOG=trigger`.
    pub watchdog_trigger: bool,
    pub watchdog_usec: Option<u64>,
    pub extend_timeout_usec: Option<u64>,
    pub main_pid: Option<u32>,
}

/// Why a datagram was not a notify message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not UTF-8")]
    NotUtf8,
    #[error("line {0} is not KEY=VALUE")]
    NotAssignment(usize),
    #[error("{key}={value} is not a number")]
    NotNumber { key: String, value: String },
    #[error("longer than {MAX_DATAGRAM} bytes")]
    TooLong,
}

/// Parses one datagram: newline-separated `KEY=VALUE` assignments.
pub fn parse(datagram: &[u8]) -> Result<Message, ParseError> {
    let text = std::str::from_utf8(datagram).map_err(|_| ParseError::NotUtf8)?;
    let mut message = Message::default();
    for (index, line) in text.split('\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or(ParseError::NotAssignment(index + 1))?;
        let number = || {
            value.parse::<u64>().map_err(|_| ParseError::NotNumber {
                key: key.to_owned(),
                value: value.to_owned(),
            })
        };
        match key {
            "READY" => message.ready = value == "1",
            "STATUS" => message.status = Some(value.to_owned()),
            "STOPPING" => message.stopping = value == "1",
            "RELOADING" => message.reloading = value == "1",
            "WATCHDOG" if value == "trigger" => message.watchdog_trigger = true,
            "WATCHDOG" => message.watchdog = value == "1",
            "WATCHDOG_USEC" => message.watchdog_usec = Some(number()?),
            "EXTEND_TIMEOUT_USEC" => message.extend_timeout_usec = Some(number()?),
            "MAINPID" => message.main_pid = Some(number()? as u32),
            _ => {}
        }
    }
    Ok(message)
}

/// Receives a service's notify messages.
pub type Route = Box<dyn Fn(Message) + Send + Sync>;

/// The socket's address for children and the routing table from process groups to
/// services.
pub struct NotifySocket {
    /// The `NOTIFY_SOCKET` value: `@` and the abstract name.
    pub address: String,
    routes: Mutex<HashMap<i32, Route>>,
    malformed: AtomicU64,
}

impl std::fmt::Debug for NotifySocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifySocket")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl NotifySocket {
    /// Binds the socket and starts the task that receives on it.
    pub fn start() -> io::Result<Arc<Self>> {
        let name = format!("muster-{}-{:016x}", std::process::id(), fastrand::u64(..));
        let socket = StdDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?;
        setsockopt(&socket, sockopt::PassCred, &true).map_err(io::Error::from)?;
        socket.set_nonblocking(true)?;
        let socket = UnixDatagram::from_std(socket)?;
        let notify = Arc::new(Self {
            address: format!("@{name}"),
            routes: Mutex::new(HashMap::new()),
            malformed: AtomicU64::new(0),
        });
        let task = Arc::clone(&notify);
        tokio::spawn(async move { task.receive(socket).await });
        Ok(notify)
    }

    /// Routes messages from process group `pgid` to `route` until [`Self::unregister`].
    pub fn register(&self, pgid: u32, route: Route) {
        self.lock().insert(pgid as i32, route);
    }

    pub fn unregister(&self, pgid: u32) {
        self.lock().remove(&(pgid as i32));
    }

    /// How many datagrams could not be parsed.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Route>> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn receive(&self, socket: UnixDatagram) {
        let mut buffer = vec![0u8; MAX_DATAGRAM];
        loop {
            if socket.readable().await.is_err() {
                return;
            }
            let fd = socket.as_raw_fd();
            match socket.try_io(Interest::READABLE, || receive_one(fd, &mut buffer)) {
                Ok(Some((pid, length, truncated))) => {
                    self.deliver(pid, &buffer[..length], truncated)
                }
                Ok(None) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => super::say::warn(format_args!("notify socket: {error}")),
            }
        }
    }

    fn deliver(&self, pid: i32, datagram: &[u8], truncated: bool) {
        let parsed = if truncated {
            Err(ParseError::TooLong)
        } else {
            parse(datagram)
        };
        let message = match parsed {
            Ok(message) => message,
            Err(error) => {
                let count = self.malformed.fetch_add(1, Ordering::Relaxed) + 1;
                // Logged, but a sender that floods garbage cannot flood the log.
                if count <= 10 || count.is_power_of_two() {
                    super::say::warn(format_args!(
                        "notify socket: ignored a malformed datagram from pid {pid} ({error}); {count} so far"
                    ));
                }
                return;
            }
        };
        let routes = self.lock();
        // The sender's group; a sender that is already gone may still be a main pid.
        let group = getpgid(Some(Pid::from_raw(pid))).map_or(pid, Pid::as_raw);
        if let Some(route) = routes.get(&group).or_else(|| routes.get(&pid)) {
            route(message);
        }
    }
}

/// Reads one datagram: the sender's pid, the length and whether it was cut short, or
/// `None` when it carried no credentials. Closes any file descriptors that came with it.
fn receive_one(fd: RawFd, buffer: &mut [u8]) -> io::Result<Option<(i32, usize, bool)>> {
    let mut control = nix::cmsg_space!(UnixCredentials, [RawFd; 16]);
    let mut iov = [IoSliceMut::new(buffer)];
    let message = recvmsg::<()>(fd, &mut iov, Some(&mut control), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    let length = message.bytes;
    let truncated = message.flags.contains(MsgFlags::MSG_TRUNC);
    let mut sender = None;
    for cmsg in message.cmsgs().map_err(io::Error::from)? {
        match cmsg {
            ControlMessageOwned::ScmCredentials(credentials) => sender = Some(credentials.pid()),
            ControlMessageOwned::ScmRights(fds) => {
                for fd in fds {
                    let _ = nix::unistd::close(fd);
                }
            }
            _ => {}
        }
    }
    Ok(sender.map(|pid| (pid, length, truncated)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_and_unknown_ones_ignored() {
        let message =
            parse(b"READY=1\nSTATUS=loading model 3/7\nX_CUSTOM=1\nWATCHDOG=1\nMAINPID=42\n")
                .unwrap();
        assert!(message.ready && message.watchdog);
        assert_eq!(message.status.as_deref(), Some("loading model 3/7"));
        assert_eq!(message.main_pid, Some(42));
        assert!(parse(b"WATCHDOG=trigger").unwrap().watchdog_trigger);
        assert_eq!(
            parse(b"EXTEND_TIMEOUT_USEC=5000000")
                .unwrap()
                .extend_timeout_usec,
            Some(5_000_000)
        );
    }

    #[test]
    fn malformed_datagrams_are_errors_not_panics() {
        assert_eq!(parse(b"READY"), Err(ParseError::NotAssignment(1)));
        assert_eq!(parse(&[0xff, 0xfe]), Err(ParseError::NotUtf8));
        assert!(matches!(
            parse(b"WATCHDOG_USEC=soon"),
            Err(ParseError::NotNumber { .. })
        ));
        assert_eq!(parse(b""), Ok(Message::default()));
    }
}
