//! Port pre-flight: before a spawn, every port the service declares must be free on its
//! address. When one is not, the reason names the holder, found through
//! `/proc/net/tcp{,6}` (listening sockets and their inodes) and `/proc/*/fd` (which
//! process has that socket open): "port 18080 is in use by pid 4242 (`llama-server
//! --port 18080`), started 3h ago".

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::time::Duration;

use super::procfs;
use crate::config::Port;

/// `Ok` when every port can be bound now; otherwise why not, naming the holder and
/// adding what `known` says of it (a leftover of an earlier supervisor, say).
/// A port free on loopback now, for a service with `port = "auto"`: the kernel picks
/// it, as for any ephemeral port, and the socket is closed at once so that the
/// service can bind it.
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

pub fn check_free(ports: &[Port], known: &dyn Fn(u32) -> Option<String>) -> Result<(), String> {
    for port in ports {
        let ip = port.ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        match TcpListener::bind((ip, port.port)) {
            Ok(listener) => drop(listener),
            Err(error) if error.kind() == ErrorKind::AddrInUse => return Err(in_use(port, known)),
            Err(error) if error.kind() == ErrorKind::AddrNotAvailable => {
                return Err(format!("port {port}: {ip} is not an address of this host"));
            }
            Err(error) => return Err(format!("cannot check port {port}: {error}")),
        }
    }
    Ok(())
}

pub fn in_use(port: &Port, known: &dyn Fn(u32) -> Option<String>) -> String {
    match holder(port.port) {
        Some(holder) => {
            let mut text = format!(
                "port {port} is in use by pid {} (`{}`)",
                holder.pid, holder.command
            );
            if let Some(age) = holder.age {
                text.push_str(&format!(", started {} ago", coarse(age)));
            }
            if let Some(note) = known(holder.pid) {
                text.push_str("; ");
                text.push_str(&note);
            }
            text
        }
        None => format!(
            "port {port} is in use by a process muster cannot see (another user or namespace); \
             `ss -ltnp 'sport = :{}'` shows it",
            port.port
        ),
    }
}

/// The process holding a listening TCP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Its command line, shortened.
    pub command: String,
    /// How long it has been running.
    pub age: Option<Duration>,
}

/// Who listens on TCP `port` (any address), if visible.
pub fn holder(port: u16) -> Option<Holder> {
    let inodes: Vec<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| listening_inodes(&text, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let targets: Vec<String> = inodes
        .iter()
        .map(|inode| format!("socket:[{inode}]"))
        .collect();
    let pids = std::fs::read_dir("/proc").ok()?;
    for entry in pids.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|link| targets.iter().any(|t| link.as_os_str() == t.as_str()))
        });
        if holds {
            return Some(Holder {
                pid,
                command: procfs::command_line(pid),
                age: procfs::age(pid),
            });
        }
    }
    None
}

/// Inodes of sockets in state LISTEN on `port` in a `/proc/net/tcp` table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode = fields.get(9)?.parse::<u64>().ok()?;
            let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (*state == LISTEN && local_port == port && inode != 0).then_some(inode)
        })
        .collect()
}

/// "3h", "12m", "40s": the largest unit only.
fn coarse(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_read_from_the_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(listening_inodes(table, 8080), [12345]);
        assert!(listening_inodes(table, 8081).is_empty());
    }

    #[test]
    fn a_held_port_names_this_very_process() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let declared = Port {
            ip: Some("127.0.0.1".parse().unwrap()),
            port,
        };
        let reason = check_free(&[declared], &|_| None).unwrap_err();
        let expected = format!(
            "port 127.0.0.1:{port} is in use by pid {} (`",
            std::process::id()
        );
        assert!(reason.starts_with(&expected), "{reason}");
        drop(listener);
        assert_eq!(check_free(&[declared], &|_| None), Ok(()));
    }

    #[test]
    fn ages_are_coarse() {
        assert_eq!(coarse(Duration::from_secs(3 * 3600 + 5)), "3h");
        assert_eq!(coarse(Duration::from_secs(59)), "59s");
    }
}
