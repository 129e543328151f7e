//! Which live processes belong to a test: each test's services carry
//! `MUSTER_TEST_TAG=<its directory>`. Shared by the test binaries (`it`, `library`).

use muster::supervisor::procfs;

/// The environment variable a test gives every service of its config (with a value of
/// its own, such as its temp dir), so that `/proc` tells that config's processes from
/// everyone else's, whatever supervisor (foreground, background, a second one) spawned
/// them, and whatever they forked.
pub const TAG: &str = "MUSTER_TEST_TAG";

/// Every live (not zombie) process carrying `MUSTER_TEST_TAG=tag`, with the service it
/// belongs to (`MUSTER_SERVICE`, empty if it has none).
///
/// The environment is read once: a process that exits between two reads is not
/// counted at all, rather than counted with no service.
pub fn tagged(tag: &str) -> Vec<(u32, String)> {
    let entry = format!("{TAG}={tag}");
    let mut found = Vec::new();
    for (pid, stat) in procfs::processes() {
        if stat.is_zombie() {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let mut entries = environ.split(|&b| b == 0);
        if !entries.clone().any(|e| e == entry.as_bytes()) {
            continue;
        }
        // A zombie by now: not a live process.
        if procfs::stat(pid).is_none_or(|stat| stat.is_zombie()) {
            continue;
        }
        let service = entries
            .find_map(|e| e.strip_prefix(b"MUSTER_SERVICE="))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        found.push((pid, service));
    }
    found
}
