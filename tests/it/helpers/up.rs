//! A `muster up --json` running in the background for a test: its events as they come,
//! waits with deadlines, and a guard that kills it and every process group it spawned.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

use super::muster;

/// How long any one wait in these tests may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// A running `muster up`.
pub struct Up {
    child: Option<Child>,
    /// The directory holding `muster.toml`, fixtures and the state directory.
    pub dir: tempfile::TempDir,
    lines: Receiver<Value>,
    /// Every event received so far, in order.
    pub events: Vec<Value>,
    stderr: Arc<Mutex<String>>,
}

/// How `muster up` ended.
#[derive(Debug)]
pub struct Ended {
    pub code: i32,
    pub events: Vec<Value>,
    pub stderr: String,
}

impl Ended {
    pub fn of(&self, service: &str, kind: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["service"] == service && e["kind"] == kind)
            .collect()
    }
}

impl Up {
    /// Writes `config` (with `{dir}` replaced by the temp dir) to `muster.toml` and runs
    /// `muster up --json` on it with `args`.
    pub fn start(config: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, config, args)
    }

    pub fn start_in(dir: tempfile::TempDir, config: &str, args: &[&str]) -> Self {
        let config = config.replace("{dir}", &dir.path().display().to_string());
        let file = dir.path().join("muster.toml");
        std::fs::write(&file, config).expect("write muster.toml");
        let mut command = muster(&["up", "--json", "-f", file.to_str().expect("utf-8 path")]);
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().expect("spawn muster up");
        let stdout = child.stdout.take().expect("stdout");
        let stderr_pipe = child.stderr.take().expect("stderr");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON on stdout: {line:?}: {e}"));
                if sender.send(value).is_err() {
                    break;
                }
            }
        });
        let stderr = collect(stderr_pipe);
        Self {
            child: Some(child),
            dir,
            lines,
            events: Vec::new(),
            stderr,
        }
    }

    /// `muster up` on one `sleep` service `a`, with the API also on TCP `port` behind
    /// two tokens: `c0ntrol-secret` (control) and `read-secret` (read only).
    pub fn behind_tokens(port: u16) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("control.token"), "c0ntrol-secret\n").expect("token");
        std::fs::write(dir.path().join("read.token"), "read-secret\n").expect("token");
        Self::start_in(
            dir,
            &format!(
                "[settings]\nstate-dir = \"{{dir}}/state\"\n\n[settings.api]\nlisten = \"127.0.0.1:{port}\"\ntoken-file = \"control.token\"\nread-token-file = \"read.token\"\n\n[services.a]\ncommand = [\"sleep\", \"1000\"]\n"
            ),
            &[],
        )
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The API socket, once `muster up` has bound it.
    pub fn socket(&self) -> PathBuf {
        let socket = self.path("state/muster.sock");
        eventually("the socket is there", || socket.exists());
        socket
    }

    /// One API request, answered.
    pub fn call(&self, method: hyper::Method, path: &str) -> muster::api::client::Answer {
        let socket = self.socket();
        super::runtime()
            .block_on(muster::api::client::request(&socket, method, path))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits for the first event (from the start) that matches.
    pub fn wait_for(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        if let Some(found) = self.events.iter().find(|e| matches(e)) {
            return found.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(event) => {
                    self.events.push(event.clone());
                    if matches(&event) {
                        return event;
                    }
                }
                Err(error) => {
                    if error == RecvTimeoutError::Disconnected {
                        // muster ended: let the stderr reader catch its last words.
                        thread::sleep(Duration::from_millis(300));
                    }
                    panic!(
                        "no event {what} within {WAIT:?}; events: {:#?}\nstderr: {}",
                        self.events,
                        self.stderr.lock().unwrap()
                    )
                }
            }
        }
    }

    /// Waits for the `count`-th event of `kind` for `service`.
    pub fn wait_event(&mut self, service: &str, kind: &str) -> Value {
        self.wait_for(&format!("{kind} of {service}"), |e| {
            e["service"] == service && e["kind"] == kind
        })
    }

    /// Sends SIGTERM and waits for `muster up` to finish.
    pub fn stop(&mut self) -> Ended {
        let pid = Pid::from_raw(self.pid() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        self.wait_exit()
    }

    /// Waits for `muster up` to exit by itself.
    pub fn wait_exit(&mut self) -> Ended {
        let mut child = self.child.take().expect("still running");
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "muster up did not exit within {WAIT:?}; events: {:#?}\nstderr: {}",
                    self.events,
                    self.stderr.lock().unwrap()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        while let Ok(event) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.events.push(event);
        }
        Ended {
            code: status.code().unwrap_or(-1),
            events: self.events.clone(),
            stderr: self.stderr.lock().unwrap().clone(),
        }
    }

    /// SIGKILLs `muster up` alone, as a crash would, and returns its directory and the
    /// events seen. What it supervised keeps running: the caller owns those processes.
    pub fn kill_supervisor(mut self) -> (tempfile::TempDir, Vec<Value>) {
        let mut child = self.child.take().expect("still running");
        let _ = child.kill();
        let _ = child.wait();
        while let Ok(event) = self.lines.recv_timeout(Duration::from_secs(1)) {
            self.events.push(event);
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        (dir, std::mem::take(&mut self.events))
    }

    /// The stderr `muster up` has written so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn spawned_pids(&self) -> Vec<i32> {
        self.events
            .iter()
            .filter(|e| e["kind"] == "spawned")
            .filter_map(|e| e["data"]["pid"].as_i64())
            .map(|pid| pid as i32)
            .collect()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        // Only a muster that did not finish may have left process groups behind. After a
        // clean exit their ids may already belong to other tests' processes.
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
        while let Ok(event) = self.lines.try_recv() {
            self.events.push(event);
        }
        for pid in self.spawned_pids() {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Everything `pipe` yields until it closes, gathered by a thread as it comes.
pub fn collect(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let collected = Arc::clone(&text);
    thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buffer) {
            if n == 0 {
                break;
            }
            collected
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
    text
}

/// A TCP port free right now on 127.0.0.1, from the OS.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind port 0")
        .port()
}

/// Waits until `check` holds, polling every 10 ms, or panics after [`WAIT`].
pub fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: not true within {WAIT:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// A nanosecond timestamp a fixture wrote to `path`.
pub fn stamp(path: &Path) -> u128 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {text:?}: {e}", path.display()))
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let after = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
            !after.trim_start().starts_with('Z')
        })
        .unwrap_or(false)
}

/// One HTTP/1.1 request over TCP; the status code and the body.
pub fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: muster\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    // The server may reset the connection right after answering: keep what came.
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    let answer = String::from_utf8_lossy(&bytes).into_owned();
    let code = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (code, body)
}

/// A supervisor `muster up -d` left running in the background. Dropped while it is
/// still there (a failed test), it is killed with its process group, and every process
/// of the config (tagged with `MUSTER_TEST_TAG`, see [`super::evidence::TAG`]) after it.
#[derive(Debug)]
pub struct Detached {
    pub pid: u32,
    tag: String,
}

impl Detached {
    /// Runs `muster up -d -f FILE ARGS...`; what it printed, and the background
    /// supervisor it said it started, if it did.
    pub fn start(file: &Path, tag: &str, args: &[&str]) -> (super::Run, Option<Self>) {
        let mut command = muster(&["up", "-d", "-f", file.to_str().expect("utf-8 path")]);
        command.args(args);
        let started = super::run(&mut command);
        let pid = Self::pid_in(&started.stderr);
        (
            started,
            pid.map(|pid| Self {
                pid,
                tag: tag.to_owned(),
            }),
        )
    }

    /// The pid in "supervisor started in the background (pid N)".
    fn pid_in(stderr: &str) -> Option<u32> {
        let rest = stderr.split("in the background (pid ").nth(1)?;
        rest.split(')').next()?.parse().ok()
    }

    /// Waits until the background supervisor has exited.
    pub fn wait_gone(&self) {
        eventually("the background supervisor exits", || {
            !alive(self.pid as i32)
        });
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        if alive(self.pid as i32) {
            // `up -d` puts the supervisor in a process group of its own.
            let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        }
        drop(super::evidence::TagSweep(self.tag.clone()));
    }
}
