//! `muster ui` driven for real in a terminal: each test starts a tmux server of its own
//! (a unique `-L` socket, killed on drop), runs the dashboard in a shell there, types
//! keys with `send-keys` and reads the screen with `capture-pane`. Without tmux the
//! tests say they were skipped (a failure with `MUSTER_REQUIRE_ALL=1`).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::helpers::up::{Up, WAIT, free_port};
use crate::helpers::{Need, require};

/// A tmux server with one window running `sh`, removed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// A server with a `width` x `height` window, or None (said) without tmux.
    fn start(width: u16, height: u16) -> Option<Self> {
        if !require(Need::Program("tmux"), "the dashboard in a real terminal") {
            return None;
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let socket = format!(
            "muster-ui-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let tmux = Self { socket };
        tmux.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "env",
            "-u",
            "TMUX",
            "PS1=$ ",
            "NO_COLOR=1",
            "sh",
        ]);
        tmux.run(&["set-option", "-g", "status", "off"]);
        tmux.wait_for("the shell's prompt", |screen| screen.contains('$'));
        Some(tmux)
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux");
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Types a command line and Enter.
    fn line(&self, text: &str) {
        self.run(&["send-keys", "-l", text]);
        self.run(&["send-keys", "Enter"]);
    }

    /// Presses keys, as tmux names them (`q`, `Enter`, `Down`).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p"])
    }

    /// What tmux knows of the pane: `#{alternate_on}` and the like.
    fn format(&self, format: &str) -> String {
        self.run(&["display-message", "-p", format])
            .trim()
            .to_owned()
    }

    /// Waits until the screen satisfies `check`; gives back that screen.
    fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not on the screen within {WAIT:?}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `muster ui ARGS` in the shell, and waits for its first frame.
    fn ui(&self, args: &str) -> String {
        self.line(&format!(
            "{} ui {args}; echo ui-exited-$?",
            env!("CARGO_BIN_EXE_muster")
        ));
        self.wait_for("the dashboard", |s| {
            s.contains("muster ui") && s.contains("NAME")
        })
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The table row of `service`: its line, split into columns.
fn row(screen: &str, service: &str) -> Option<Vec<String>> {
    screen.lines().find_map(|line| {
        let cells: Vec<String> = line
            .trim_matches(|c| c == '│' || c == ' ')
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        (cells.first().map(String::as_str) == Some(service) && cells.len() > 3).then_some(cells)
    })
}

fn state_of(screen: &str, service: &str) -> Option<String> {
    row(screen, service).and_then(|cells| cells.get(1).cloned())
}

const TWO: &str = r#"
[settings]
state-dir = "{dir}/state"

[services.alpha]
command = ["sleep", "1000"]
restart = "never"

[services.beta]
command = ["sh", "-c", "echo beta says hello; printf 'raw \\033[2J\\033[31mred\\n'; exec sleep 1000"]
depends-on = ["alpha"]
"#;

fn file(up: &Up) -> String {
    up.path("muster.toml").display().to_string()
}

#[test]
fn ui_table_shows_the_states_after_a_kill() {
    let Some(tmux) = Tmux::start(130, 36) else {
        return;
    };
    let mut up = Up::start(TWO, &[]);
    let alpha = up.wait_event("alpha", "spawned")["data"]["pid"]
        .as_i64()
        .unwrap();
    up.wait_event("beta", "ready");
    tmux.ui(&format!("-f {}", file(&up)));
    tmux.wait_for("both healthy", |s| {
        state_of(s, "alpha").as_deref() == Some("healthy")
            && state_of(s, "beta").as_deref() == Some("healthy")
    });
    kill(Pid::from_raw(alpha as i32), Signal::SIGKILL).unwrap();
    up.wait_event("alpha", "exited");
    let screen = tmux.wait_for("alpha shown failed after its kill", |s| {
        state_of(s, "alpha").as_deref() == Some("failed")
    });
    assert_eq!(
        state_of(&screen, "beta").as_deref(),
        Some("healthy"),
        "{screen}"
    );
    // The feed has the exit, and the killed run has no pid any more.
    assert!(screen.contains("exited"), "{screen}");
    let cells = row(&screen, "alpha").unwrap();
    assert_eq!(cells[2], "-", "{screen}");
    // The log pane shows beta's escape sequences as text, not interpreted.
    tmux.keys(&["j"]);
    let screen = tmux.wait_for("beta's log", |s| s.contains("beta says hello"));
    assert!(screen.contains(r"raw \e[2J\e[31mred"), "{screen}");
    tmux.keys(&["q"]);
    tmux.wait_for("the shell again", |s| s.contains("ui-exited-0"));
}

#[test]
fn ui_restart_action_restarts_the_selected_service() {
    let Some(tmux) = Tmux::start(130, 36) else {
        return;
    };
    let mut up = Up::start(TWO, &[]);
    let first = up.wait_event("beta", "spawned")["run_id"].as_u64().unwrap();
    up.wait_event("beta", "ready");
    let alpha_runs = up
        .events
        .iter()
        .filter(|e| e["service"] == "alpha" && e["kind"] == "spawned")
        .count();
    tmux.ui(&format!("-f {}", file(&up)));
    tmux.wait_for("beta healthy", |s| {
        state_of(s, "beta").as_deref() == Some("healthy")
    });
    let before = row(&tmux.screen(), "beta").unwrap()[2].clone();
    // Select beta with the filter, restart it, confirm.
    tmux.keys(&["/", "b", "e", "t", "Enter"]);
    tmux.wait_for("the filtered table", |s| {
        row(s, "alpha").is_none() && row(s, "beta").is_some()
    });
    tmux.keys(&["r"]);
    tmux.wait_for("the confirmation", |s| s.contains("restart beta?"));
    tmux.keys(&["y"]);
    let spawned = up.wait_for("beta's second run", |e| {
        e["service"] == "beta" && e["kind"] == "spawned" && e["run_id"].as_u64() > Some(first)
    });
    let pid = spawned["data"]["pid"].as_i64().unwrap().to_string();
    assert_ne!(pid, before);
    let screen = tmux.wait_for("beta's new pid and the outcome", |s| {
        row(s, "beta").is_some_and(|cells| cells[2] == pid && cells[1] == "healthy")
            && s.contains("restart beta: healthy")
    });
    assert!(screen.contains("restarting"), "{screen}");
    // Only the selected service was restarted.
    let alpha_now = up
        .events
        .iter()
        .filter(|e| e["service"] == "alpha" && e["kind"] == "spawned")
        .count();
    assert_eq!(alpha_runs, alpha_now);
    tmux.keys(&["q"]);
    tmux.wait_for("the shell again", |s| s.contains("ui-exited-0"));
}

#[test]
fn ui_redraws_on_resize_and_says_when_the_terminal_is_too_small() {
    let Some(tmux) = Tmux::start(130, 36) else {
        return;
    };
    let mut up = Up::start(TWO, &[]);
    up.wait_event("beta", "ready");
    tmux.ui(&format!("-f {}", file(&up)));
    let width = |s: &str| {
        s.lines()
            .filter(|l| l.starts_with('┌') || l.starts_with('└'))
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(0)
    };
    tmux.wait_for("the table 130 wide", |s| width(s) == 130);
    tmux.run(&["resize-window", "-x", "80", "-y", "24"]);
    let screen = tmux.wait_for("the table redrawn 80 wide", |s| {
        width(s) == 80 && row(s, "beta").is_some()
    });
    assert!(!screen.contains("too small"), "{screen}");
    tmux.run(&["resize-window", "-x", "40", "-y", "10"]);
    tmux.wait_for("the too-small message", |s| {
        s.contains("too small") && s.contains("40x10") && row(s, "beta").is_none()
    });
    tmux.run(&["resize-window", "-x", "100", "-y", "30"]);
    tmux.wait_for("the table back, 100 wide", |s| {
        width(s) == 100 && row(s, "beta").is_some()
    });
    tmux.keys(&["q"]);
    tmux.wait_for("the shell again", |s| s.contains("ui-exited-0"));
}

#[test]
fn ui_quit_restores_the_terminal() {
    let Some(tmux) = Tmux::start(120, 30) else {
        return;
    };
    let mut up = Up::start(TWO, &[]);
    up.wait_event("beta", "ready");
    tmux.line("echo before-the-ui");
    tmux.wait_for("the shell's output", |s| s.contains("before-the-ui"));
    assert_eq!(tmux.format("#{alternate_on}"), "0");
    let screen = tmux.ui(&format!("-f {}", file(&up)));
    assert!(!screen.contains("before-the-ui"), "{screen}");
    assert_eq!(tmux.format("#{alternate_on}"), "1");
    // The help overlay first: `q` quits from there too.
    tmux.keys(&["?"]);
    tmux.wait_for("the help", |s| s.contains("this help"));
    tmux.keys(&["q"]);
    let screen = tmux.wait_for("the shell again", |s| s.contains("ui-exited-0"));
    assert!(screen.contains("before-the-ui"), "{screen}");
    assert!(!screen.contains("NAME"), "{screen}");
    assert_eq!(tmux.format("#{alternate_on}"), "0");
    assert_eq!(tmux.format("#{cursor_flag}"), "1", "the cursor is hidden");
    // Cooked mode is back: a line typed is read as a line, Enter and all.
    tmux.line("echo after-$((20 + 22))");
    tmux.wait_for("the shell reading lines again", |s| s.contains("after-42"));
}

#[test]
fn ui_with_a_read_token_cannot_stop_anything() {
    let Some(tmux) = Tmux::start(130, 36) else {
        return;
    };
    let port = free_port();
    let mut up = Up::behind_tokens(port);
    let pid = up.wait_event("a", "spawned")["data"]["pid"].clone();
    up.wait_event("a", "ready");
    let url = format!(
        "--url http://127.0.0.1:{port} --token-file {}",
        up.path("read.token").display()
    );
    let screen = tmux.ui(&url);
    assert!(screen.contains("READ-ONLY"), "{screen}");
    tmux.wait_for("a healthy", |s| {
        state_of(s, "a").as_deref() == Some("healthy")
    });
    for key in ["x", "r", "u", "e", "K", "=", "R"] {
        tmux.keys(&[key]);
        // A confirmation would take the `y`: there must be none.
        tmux.keys(&["y"]);
    }
    let screen = tmux.wait_for("the refusals", |s| s.matches("refused").count() >= 7);
    assert!(!screen.contains("confirm"), "{screen}");
    // Nothing happened to `a`.
    let view = up.call(hyper::Method::GET, "/v1/services/a");
    assert_eq!(view.body["state"], "healthy");
    assert_eq!(view.body["pid"], pid);
    assert!(
        !up.events.iter().any(|e| e["kind"] == "stopping"),
        "{:?}",
        up.events
    );
    tmux.keys(&["q"]);
    tmux.wait_for("the shell again", |s| s.contains("ui-exited-0"));

    // The control token, same keys: the stop is asked, confirmed and carried out.
    let url = format!(
        "--url http://127.0.0.1:{port} --token-file {}",
        up.path("control.token").display()
    );
    let screen = tmux.ui(&url);
    assert!(!screen.contains("READ-ONLY"), "{screen}");
    tmux.wait_for("a healthy", |s| {
        state_of(s, "a").as_deref() == Some("healthy")
    });
    tmux.keys(&["x"]);
    tmux.wait_for("the confirmation", |s| s.contains("stop a?"));
    tmux.keys(&["y"]);
    up.wait_event("a", "stopped");
    tmux.wait_for("a stopped", |s| {
        state_of(s, "a").as_deref() == Some("stopped")
    });
    tmux.keys(&["q"]);
}

#[test]
fn ui_reconnects_when_the_supervisor_goes_away() {
    let Some(tmux) = Tmux::start(130, 36) else {
        return;
    };
    let mut up = Up::start(TWO, &[]);
    up.wait_event("beta", "ready");
    let file = file(&up);
    tmux.ui(&format!("-f {file}"));
    tmux.wait_for("beta healthy", |s| {
        state_of(s, "beta").as_deref() == Some("healthy")
    });
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    tmux.wait_for("the reconnect message", |s| {
        s.contains("reconnecting") && s.contains("disconnected")
    });
    // The same config brought up again: the dashboard finds it by itself.
    let dir = std::mem::replace(&mut up.dir, tempfile::tempdir().unwrap());
    let mut again = Up::start_in(dir, TWO, &[]);
    let spawned = again.wait_event("beta", "spawned");
    again.wait_event("beta", "ready");
    let pid = spawned["data"]["pid"].as_i64().unwrap().to_string();
    let screen = tmux.wait_for("the new supervisor's services", |s| {
        row(s, "beta").is_some_and(|cells| cells[1] == "healthy" && cells[2] == pid)
            && !s.contains("unreachable")
    });
    assert!(screen.contains("reconnected"), "{screen}");
    tmux.keys(&["q"]);
    tmux.wait_for("the shell again", |s| s.contains("ui-exited-0"));
}

#[test]
fn ui_refuses_a_bad_token_and_a_missing_supervisor_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "wrong\n").unwrap();
    let port = free_port();
    let mut up = Up::behind_tokens(port);
    up.wait_event("a", "ready");
    // Without a terminal: refused before anything is drawn.
    let run = crate::helpers::muster_run(&[
        "ui",
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "--token-file",
        token.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("terminal"), "{run:?}");
    let Some(tmux) = Tmux::start(100, 30) else {
        return;
    };
    tmux.line(&format!(
        "{} ui --url http://127.0.0.1:{port} --token-file {}; echo ui-exited-$?",
        env!("CARGO_BIN_EXE_muster"),
        token.display()
    ));
    let screen = tmux.wait_for("the refusal", |s| s.contains("ui-exited-2"));
    assert!(screen.contains("the token is not valid"), "{screen}");
    tmux.line(&format!(
        "{} ui -f {}/nothing.toml --state-dir {}/none; echo ui-exited-$?",
        env!("CARGO_BIN_EXE_muster"),
        dir.path().display(),
        dir.path().display()
    ));
    let screen = tmux.wait_for("no supervisor", |s| s.contains("ui-exited-1"));
    assert!(screen.contains("no supervisor is running"), "{screen}");
}
