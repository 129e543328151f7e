//! What each service may ask of the process muster starts for it: its user and groups,
//! umask and limits (`user`, `group`, `limits`), the kernel's limits on its whole group
//! (`memory-max`, `cpu-max`), signals (`muster signal`, `reload-signal`), and what it
//! uses, as `status`, the API and `/metrics` show it.
//!
//! The tests run as root: a service is run as `nobody`, and `muster up` itself is run
//! as `nobody` where a test needs a supervisor without privileges (a limit the kernel
//! refuses, a user it cannot switch to, no cgroup it may make).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use hyper::Method;
use nix::unistd::User;
use serde_json::Value;

use crate::helpers::up::{Up, eventually};
use crate::helpers::{check_source, heavy, muster, muster_run, python, run};

const STATE: &str = "[settings]\nstate-dir = \"{dir}/state\"\n";

fn nobody() -> User {
    User::from_name("nobody")
        .unwrap()
        .expect("the test machine has a `nobody` user")
}

/// A temp dir `nobody` owns, for a `muster up` run as `nobody`.
fn nobodys_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let user = nobody();
    std::os::unix::fs::chown(dir.path(), Some(user.uid.as_raw()), Some(user.gid.as_raw())).unwrap();
    dir
}

/// `muster up --json` on `config` in `dir`, run as `nobody`, to its end: it ends by
/// itself once every service has failed or completed. Its events, and its stderr.
fn up_as_nobody(dir: &Path, config: &str) -> (Vec<Value>, String) {
    let file = dir.join("muster.toml");
    std::fs::write(&file, config.replace("{dir}", &dir.display().to_string())).unwrap();
    let user = nobody();
    std::os::unix::fs::chown(&file, Some(user.uid.as_raw()), None).unwrap();
    let mut command = muster(&["up", "--json", "-f", file.to_str().unwrap()]);
    std::os::unix::process::CommandExt::uid(&mut command, user.uid.as_raw());
    std::os::unix::process::CommandExt::gid(&mut command, user.gid.as_raw());
    command.env("HOME", dir).env_remove("XDG_RUNTIME_DIR");
    let ended = run(&mut command);
    let events = ended
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect();
    (events, ended.stderr)
}

fn of<'a>(events: &'a [Value], service: &str, kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["service"] == service && e["kind"] == kind)
        .collect()
}

/// Sends `READY=1` to `$NOTIFY_SOCKET` (an abstract address), as sd_notify does.
const NOTIFY_READY: &str = "import os, socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); \
     a = os.environ['NOTIFY_SOCKET']; s.sendto(b'READY=1', '\\0' + a[1:])";

#[test]
fn a_service_run_as_nobody_has_its_ids_and_still_logs_notifies_and_heartbeats() {
    let user = nobody();
    let groups: Vec<String> = nix::unistd::getgrouplist(c"nobody", user.gid)
        .unwrap()
        .iter()
        .map(|g| g.as_raw().to_string())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    // The heartbeat file is reachable only through directories the user may pass.
    for path in [
        dir.path().to_path_buf(),
        dir.path().join("state"),
        dir.path().join("state/run"),
    ] {
        std::fs::create_dir_all(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let Some(python) = python_for_anyone() else {
        return;
    };
    let mut up = Up::start_in(
        dir,
        &format!(
            r#"{STATE}
[services.app]
shell = '''echo "ids $(id -u) $(id -g) $(id -G)"; echo "env $USER $HOME"; echo "umask $(umask)"
{python} -c "{NOTIFY_READY}"
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do touch "$MUSTER_HEARTBEAT_FILE"; sleep 0.1; done
echo done'''
user = "nobody"
umask = "0027"
watchdog = "1s"
restart = "never"
ready = {{ notify = true, timeout = "20s" }}
"#
        ),
        &[],
    );
    let ready = up.wait_event("app", "ready");
    assert!(
        ready["message"].as_str().unwrap().contains("READY=1"),
        "{ready}"
    );
    up.wait_event("app", "completed");
    let log = std::fs::read_to_string(up.path("state/logs/app.log")).unwrap();
    let ids = format!("ids {} {} {}", user.uid, user.gid, groups.join(" "));
    assert!(log.contains(&ids), "want {ids:?} in:\n{log}");
    assert!(
        log.contains(&format!("env nobody {}", user.dir.display())),
        "{log}"
    );
    assert!(log.contains("umask 0027"), "{log}");
    assert!(log.contains("stdout done"), "{log}");
    // 1.5 s of touches against a 1 s deadline: the heartbeats reached muster.
    assert!(
        of(&up.events, "app", "unhealthy").is_empty(),
        "{:#?}",
        up.events
    );
    assert!(!log.contains("cannot reach"), "{log}");
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}

#[test]
fn a_heartbeat_file_out_of_the_users_reach_is_said_in_its_log() {
    let mut up = Up::start(
        &format!(
            "{STATE}\n[services.app]\ncommand = [\"true\"]\nuser = \"nobody\"\nrestart = \"never\"\n"
        ),
        &[],
    );
    up.wait_event("app", "completed");
    let log = std::fs::read_to_string(up.path("state/logs/app.log")).unwrap();
    // The temp dir and the state directory are private to root.
    assert!(
        log.contains("user `nobody` cannot reach $MUSTER_HEARTBEAT_FILE"),
        "{log}"
    );
    up.stop();
}

#[test]
fn a_muster_that_is_not_root_says_it_cannot_switch_users() {
    let dir = nobodys_dir();
    let (events, stderr) = up_as_nobody(
        dir.path(),
        &format!("{STATE}\n[services.app]\ncommand = [\"true\"]\nuser = \"root\"\n"),
    );
    let failed = of(&events, "app", "failed");
    assert_eq!(failed.len(), 1, "{events:#?}\n{stderr}");
    assert_eq!(
        failed[0]["message"],
        format!(
            "cannot run as user `root`: muster runs as uid {} and is not privileged to switch users; run muster as root, or remove `user`",
            nobody().uid
        ),
        "{events:#?}"
    );
    assert!(of(&events, "app", "spawned").is_empty());
}

#[test]
fn a_limit_the_kernel_refuses_is_said_at_the_start_with_its_errno() {
    let dir = nobodys_dir();
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK).unwrap();
    // A process that is not root may lower its hard limits, never raise them.
    let memlock = if hard == nix::sys::resource::RLIM_INFINITY {
        ""
    } else {
        "\n[services.locked]\ncommand = [\"true\"]\nlimits = { memlock = \"unlimited\" }\n"
    };
    let (events, stderr) = up_as_nobody(
        dir.path(),
        &format!("{STATE}\n[services.eager]\ncommand = [\"true\"]\nnice = -5\n{memlock}"),
    );
    let eager = of(&events, "eager", "failed");
    assert_eq!(eager.len(), 1, "{events:#?}\n{stderr}");
    assert_eq!(
        eager[0]["message"],
        "nice: cannot set it to -5: Permission denied (EACCES); a priority above muster's own needs root"
    );
    if !memlock.is_empty() {
        let locked = of(&events, "locked", "failed");
        assert_eq!(
            locked[0]["message"],
            "limits.memlock: cannot set it to unlimited: Operation not permitted (EPERM); a hard limit above muster's own needs root",
            "{events:#?}"
        );
    }
}

#[test]
fn nofile_is_what_the_child_reads_from_proc_self_limits() {
    let mut up = Up::start(
        &format!(
            r#"{STATE}
[services.files]
command = ["cat", "/proc/self/limits"]
limits = {{ nofile = "1000:2000", core = 0, stack = "16MiB" }}
restart = "never"
"#
        ),
        &[],
    );
    up.wait_event("files", "completed");
    let log = std::fs::read_to_string(up.path("state/logs/files.log")).unwrap();
    let limit = |name: &str| -> Vec<String> {
        let line = log
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{log}"));
        line.split(name)
            .nth(1)
            .unwrap()
            .split_whitespace()
            .take(2)
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(limit("Max open files"), ["1000", "2000"]);
    assert_eq!(limit("Max core file size"), ["0", "0"]);
    assert_eq!(limit("Max stack size"), ["16777216", "16777216"]);
    up.stop();
}

/// A python interpreter every user may run: the test's own (`python3` on PATH) when
/// every directory on its way is open to all, else a system one. The test's may live
/// under root's home (pyenv), which `nobody` cannot enter. `None` (said on stderr, or a
/// failure with `MUSTER_REQUIRE_ALL=1`) when there is none.
fn python_for_anyone() -> Option<String> {
    let open_to_all = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
            && path.ancestors().skip(1).all(|dir| {
                std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
            })
    };
    let found = [
        python(),
        "/usr/bin/python3".to_owned(),
        "/usr/local/bin/python3".to_owned(),
    ]
    .into_iter()
    .find(|path| open_to_all(Path::new(path)));
    if found.is_none() {
        let test = std::thread::current().name().unwrap_or("a test").to_owned();
        assert!(
            std::env::var("MUSTER_REQUIRE_ALL").as_deref() != Ok("1"),
            "{test}: no python3 that every user may run, and MUSTER_REQUIRE_ALL=1 requires one"
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: it runs python3 as `nobody`, and no python3 here is open to every \
             user; install one in /usr/bin (apt-get install python3)"
        );
    }
    found
}

/// A program that allocates 128 MiB, touching every page, and then waits.
fn hog(python: &str) -> String {
    format!(
        r#"command = ["{python}", "-c", "import time\nb = bytearray(128 * 1024 * 1024)\nprint('allocated', flush=True)\ntime.sleep(60)"]
memory-max = "64MiB"
backoff = {{ initial = "100ms" }}
restart-limit = {{ count = 1, within = "1m" }}"#
    )
}

#[test]
fn a_service_past_memory_max_is_oom_killed_or_restarted_and_recorded_as_such() {
    let _heavy = heavy();
    let mut up = Up::start(
        &format!("{STATE}\n[services.hog]\n{}\n", hog(&python())),
        &[],
    );
    let failed = up.wait_event("hog", "failed");
    let stderr = up.stderr();
    let kernel = stderr.contains("memory-max is enforced by the kernel");
    println!(
        "memory-max was enforced {}: {}",
        if kernel {
            "by the kernel"
        } else {
            "by muster's sampling"
        },
        stderr
            .lines()
            .find(|l| l.contains("memory-max"))
            .unwrap_or("")
    );
    if kernel {
        let exits = of(&up.events, "hog", "exited");
        assert_eq!(exits.len(), 2, "one run and its one restart: {exits:#?}");
        for exit in &exits {
            assert_eq!(exit["data"]["cause"], "oom-killed", "{exit}");
            assert_eq!(exit["data"]["signal"], "SIGKILL", "{exit}");
            assert_eq!(
                exit["message"],
                "killed by the kernel's OOM killer (out of memory)"
            );
        }
        let restarting = of(&up.events, "hog", "restarting");
        assert_eq!(
            restarting[0]["data"]["cause"], "oom-killed",
            "{restarting:#?}"
        );
        let log = std::fs::read_to_string(up.path("state/logs/hog.log")).unwrap();
        assert!(
            log.contains("the kernel's OOM killer killed a process of this run"),
            "{log}"
        );
        // The history has it too.
        let history = run(muster(&[
            "history",
            "hog",
            "-f",
            up.path("muster.toml").to_str().unwrap(),
        ])
        .arg("--json"));
        assert!(history.stdout.contains("OOM killer"), "{}", history.stdout);
    } else {
        assert_memory_restarts(&up.events);
    }
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("restart-limit"),
        "{failed}"
    );
    up.stop();
}

/// What muster's own sampling leaves: a stop and a restart for `memory-max`, then the
/// failure once the restart limit is spent.
fn assert_memory_restarts(events: &[Value]) {
    let restarting = of(events, "hog", "restarting");
    assert_eq!(restarting.len(), 1, "{events:#?}");
    assert_eq!(
        restarting[0]["data"]["cause"], "memory-max",
        "{restarting:#?}"
    );
    assert!(
        restarting[0]["message"]
            .as_str()
            .unwrap()
            .contains("over memory-max 64MiB"),
        "{restarting:#?}"
    );
    let stopped = of(events, "hog", "stopped");
    assert!(
        stopped.iter().all(|s| s["data"]["cause"] == "memory-max"),
        "{stopped:#?}"
    );
    let failed = of(events, "hog", "failed");
    assert!(
        failed[0]["message"]
            .as_str()
            .unwrap()
            .contains("over memory-max 64MiB"),
        "{failed:#?}"
    );
}

#[test]
fn memory_max_falls_back_to_muster_sampling_where_it_may_make_no_cgroup() {
    // `nobody` may write no cgroup here (they belong to root), as on a machine without
    // a delegated cgroup.
    let Some(python) = python_for_anyone() else {
        return;
    };
    let _heavy = heavy();
    let dir = nobodys_dir();
    let (events, stderr) = up_as_nobody(
        dir.path(),
        &format!("{STATE}\n[services.hog]\n{}\n", hog(&python)),
    );
    let line = stderr
        .lines()
        .find(|l| l.contains("memory-max"))
        .unwrap_or_default();
    println!("as nobody: {line}");
    assert!(
        line.contains("memory-max is not enforced by the kernel here")
            && line.contains("not writable by uid"),
        "{stderr}"
    );
    assert_memory_restarts(&events);
}

#[test]
fn cpu_max_holds_a_busy_service_to_its_share() {
    let mut up = Up::start(
        &format!("{STATE}\n[services.spin]\nshell = \"while :; do :; done\"\ncpu-max = \"20%\"\n"),
        &[],
    );
    up.wait_event("spin", "ready");
    let stderr = up.stderr();
    if !stderr.contains("cpu-max is enforced by the kernel") {
        println!("cpu-max is not enforced here: {stderr}");
        return;
    }
    // Two readings: the first leaves one for the second, a second later.
    let first = up.call(Method::GET, "/v1/services/spin");
    assert!(
        first.body["resources"]["cpu_percent"].is_number(),
        "{:?}",
        first.body
    );
    // Not a wait for something: the interval the share is measured over.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let second = up.call(Method::GET, "/v1/services/spin");
    let percent = second.body["resources"]["cpu_percent"].as_f64().unwrap();
    let interval = second.body["resources"]["cpu_interval_seconds"]
        .as_f64()
        .unwrap();
    println!("spin used {percent}% of a CPU over {interval}s under cpu-max 20%");
    assert!(interval >= 0.9, "{:?}", second.body);
    assert!(percent < 30.0, "{:?}", second.body);
    up.stop();
}

/// A python program that records each signal it gets, as "WHO SIGNAME", in `record`;
/// the main process starts a child (in its process group) that does the same.
fn signal_recorder(record: &Path) -> String {
    format!(
        r#"command = ["{python}", "-c", """
import os, signal, sys, time
record = {record:?}
def on(who):
    def handler(number, frame):
        with open(record, "a") as f:
            f.write(who + " " + signal.Signals(number).name + "\\n")
    return handler
who = "main"
if os.fork() == 0:
    who = "child"
for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
    signal.signal(s, on(who))
with open(record, "a") as f:
    f.write(who + " up\\n")
while True:
    time.sleep(1)
"""]"#,
        python = python(),
        record = record.display().to_string(),
    )
}

fn recorded(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_signal_reaches_the_process_group_or_only_the_main_process() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let mut up = Up::start_in(
        dir,
        &format!(
            "{STATE}\n[services.app]\n{}\n\n[services.idle]\ncommand = [\"sleep\", \"1000\"]\nautostart = false\n",
            signal_recorder(&record)
        ),
        &[],
    );
    up.wait_event("app", "ready");
    eventually("both processes are up", || {
        let seen = recorded(&record);
        seen.contains(&"main up".to_owned()) && seen.contains(&"child up".to_owned())
    });
    let file = up.path("muster.toml");
    let cli = |args: &[&str]| run(muster(args).args(["-f", file.to_str().unwrap()]));

    let sent = cli(&["signal", "app", "USR1"]);
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert!(
        sent.stdout
            .starts_with("signal: sent SIGUSR1 to app's process group (pid "),
        "{}",
        sent.stdout
    );
    eventually("both got SIGUSR1", || {
        let seen = recorded(&record);
        seen.contains(&"main SIGUSR1".to_owned()) && seen.contains(&"child SIGUSR1".to_owned())
    });

    let sent = cli(&["signal", "app", "SIGUSR2", "--main"]);
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    assert!(
        sent.stdout.contains("to app's main process"),
        "{}",
        sent.stdout
    );
    eventually("the main process got SIGUSR2", || {
        recorded(&record).contains(&"main SIGUSR2".to_owned())
    });
    // Signals to one process arrive in order: once the child has a later one, it is
    // certain it never got SIGUSR2.
    let sent = cli(&["signal", "app", "hup"]);
    assert_eq!(sent.code, 0, "{}", sent.stderr);
    eventually("the child got SIGHUP", || {
        recorded(&record).contains(&"child SIGHUP".to_owned())
    });
    assert!(
        !recorded(&record).contains(&"child SIGUSR2".to_owned()),
        "{:?}",
        recorded(&record)
    );

    // Each is recorded, with whom it was for.
    let answer = up.call(Method::GET, "/v1/events?service=app&kind=signaled");
    let signaled = answer.body["events"].as_array().unwrap();
    let targets: Vec<(&str, &str)> = signaled
        .iter()
        .map(|e| {
            (
                e["data"]["signal"].as_str().unwrap(),
                e["data"]["target"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        targets,
        [
            ("SIGUSR1", "group"),
            ("SIGUSR2", "main"),
            ("SIGHUP", "group")
        ]
    );

    // What cannot be sent is said, with the exit status of its kind.
    let stopped = cli(&["signal", "idle", "HUP"]);
    assert_eq!(stopped.code, 1);
    assert!(
        stopped.stderr.contains("`idle` is stopped"),
        "{}",
        stopped.stderr
    );
    assert!(
        stopped.stderr.contains("it has no process to signal"),
        "{}",
        stopped.stderr
    );
    let unknown = cli(&["signal", "app", "SIGFOO"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("`SIGFOO` is not a signal"),
        "{}",
        unknown.stderr
    );
    let nobody_there = cli(&["signal", "ap", "HUP"]);
    assert_eq!(nobody_there.code, 2);
    assert!(
        nobody_there.stderr.contains("did you mean `app`?"),
        "{}",
        nobody_there.stderr
    );
    let bad = up.call(Method::POST, "/v1/services/app/signal?signal=99");
    assert_eq!(bad.status, hyper::StatusCode::BAD_REQUEST, "{:?}", bad.body);
    up.stop();
}

#[test]
fn reload_signal_makes_reload_name_signal_the_service_instead_of_restarting_it() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let mut up = Up::start_in(
        dir,
        &format!(
            "{STATE}\n[services.app]\n{}\nreload-signal = \"SIGHUP\"\n\n[services.plain]\ncommand = [\"sleep\", \"1000\"]\n",
            signal_recorder(&record)
        ),
        &[],
    );
    let app = up.wait_event("app", "ready");
    let plain = up.wait_event("plain", "ready");
    eventually("both processes are up", || {
        let seen = recorded(&record);
        seen.contains(&"main up".to_owned()) && seen.contains(&"child up".to_owned())
    });
    let file = up.path("muster.toml");
    let cli = |args: &[&str]| run(muster(args).args(["-f", file.to_str().unwrap()]));

    let reloaded = cli(&["reload", "app"]);
    assert_eq!(reloaded.code, 0, "{}", reloaded.stderr);
    assert!(
        reloaded
            .stdout
            .starts_with("reload: sent SIGHUP to app's process group"),
        "{}",
        reloaded.stdout
    );
    eventually("the group got SIGHUP", || {
        let seen = recorded(&record);
        seen.contains(&"main SIGHUP".to_owned()) && seen.contains(&"child SIGHUP".to_owned())
    });
    let signaled = up.wait_event("app", "signaled");
    assert_eq!(signaled["data"]["reason"], "reload");
    assert_eq!(
        signaled["run_id"], app["run_id"],
        "the same run: not restarted"
    );

    // Without a reload-signal, reloading a service restarts it.
    let reloaded = cli(&["reload", "plain"]);
    assert_eq!(reloaded.code, 0, "{}", reloaded.stderr);
    assert!(
        reloaded.stdout.contains("restarted (no reload-signal)"),
        "{}",
        reloaded.stdout
    );
    let again = up.wait_for("plain's next run", |e| {
        e["service"] == "plain"
            && e["kind"] == "ready"
            && e["run_id"].as_u64() > plain["run_id"].as_u64()
    });
    assert!(again["run_id"].as_u64() > plain["run_id"].as_u64());
    let app_now = up.call(Method::GET, "/v1/services/app");
    assert_eq!(app_now.body["run_id"], app["run_id"]);
    assert_eq!(app_now.body["reload_signal"], "SIGHUP");
    up.stop();
}

#[test]
fn status_shows_what_a_busy_and_an_idle_service_use() {
    // A busy loop takes a whole CPU while it is measured.
    let _heavy = heavy();
    let mut up = Up::start(
        &format!(
            "{STATE}\n[services.busy]\nshell = \"while :; do :; done\"\n\n[services.idle]\nshell = \"sleep 1000 & sleep 1000 & wait\"\n\n[services.off]\ncommand = [\"true\"]\nautostart = false\n"
        ),
        &[],
    );
    up.wait_event("busy", "ready");
    up.wait_event("idle", "ready");
    eventually("idle's children are up", || {
        up.call(Method::GET, "/v1/services/idle").body["resources"]["processes"] == 3
    });
    // The first answer samples for a moment; the next measures since it.
    let _ = up.call(Method::GET, "/v1/services");
    // Not a wait for something: the interval the share is measured over.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let list = up.call(Method::GET, "/v1/services");
    let service = |name: &str| {
        list.body["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
            .clone()
    };
    let (busy, idle, off) = (service("busy"), service("idle"), service("off"));
    println!("busy: {}\nidle: {}", busy["resources"], idle["resources"]);
    let cpu = |s: &Value| s["resources"]["cpu_percent"].as_f64().unwrap();
    // Loose: the machine's other work takes its share of the CPU too.
    assert!(cpu(&busy) > 20.0, "{busy}");
    assert!(cpu(&idle) < 5.0, "{idle}");
    assert!(
        busy["resources"]["cpu_interval_seconds"].as_f64().unwrap() >= 0.4,
        "{busy}"
    );
    let rss = |s: &Value| s["resources"]["memory_rss_bytes"].as_u64().unwrap();
    let pss = |s: &Value| s["resources"]["memory_pss_bytes"].as_u64().unwrap();
    for s in [&busy, &idle] {
        assert!(rss(s) > 100_000 && pss(s) > 0 && pss(s) <= rss(s), "{s}");
    }
    assert_eq!(idle["resources"]["processes"], 3);
    assert!(off.get("resources").is_none(), "{off}");

    let file = up.path("muster.toml");
    let status = muster_run(&["status", "-f", file.to_str().unwrap()]);
    let line = |name: &str| {
        status
            .stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{}", status.stdout))
            .to_owned()
    };
    assert!(
        status.stdout.contains("CPU      MEMORY"),
        "{}",
        status.stdout
    );
    assert!(
        line("busy").contains('%') && line("busy").contains("iB"),
        "{}",
        status.stdout
    );
    assert!(
        line("off").contains("       -           -  "),
        "{}",
        status.stdout
    );
    let one = muster_run(&["status", "idle", "-f", file.to_str().unwrap()]);
    assert!(
        one.stdout.contains("PSS,") && one.stdout.contains("3 processes"),
        "{}",
        one.stdout
    );

    let metrics = up.call(Method::GET, "/metrics");
    let text = metrics.body.as_str().unwrap_or_default();
    for family in [
        "muster_service_cpu_percent{service=\"busy\"}",
        "muster_service_memory_rss_bytes{service=\"idle\"}",
        "muster_service_memory_pss_bytes{service=\"idle\"}",
        "muster_service_processes{service=\"idle\"} 3",
    ] {
        assert!(text.contains(family), "{family} in {text}");
    }
    up.stop();
}

#[test]
fn bad_process_settings_are_refused_by_check_with_exit_2() {
    let out = check_source(
        br#"
[pools.gpu0]
exclusive = true

[services.a]
command = ["true"]
user = "no-such-user-here"

[services.b]
command = ["true"]
user = "nobody"
group = "no-such-group-here"

[services.c]
command = ["true"]
user = "nobody"
group = "root"

[services.d]
command = ["true"]
limits = { nofile = "99999999", core = "2:1", nproc = "lots", stack = 1.5 }

[services.e]
command = ["true"]
memory-max = "10KiB"
cpu-max = "0%"
umask = "0999"
nice = 20
oom-score-adj = -1001
reload-signal = "SIGKILL"

[services.f]
command = ["true"]
group = "gpu0"
memory = "8GiB"
"#,
        &[],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    for expected in [
        "`services.a.user`: user `no-such-user-here` does not exist",
        "`services.b.group`: group `no-such-group-here` does not exist",
        "`services.c.group`: user `nobody` is not in group `root`",
        "usermod -aG root nobody",
        "`services.d.limits.nofile` is 99999999, above the",
        "(fs.nr_open)",
        "`services.d.limits.core`: the soft limit 2 is above the hard limit 1",
        "`services.d.limits.nproc`: `lots` is not a limit",
        "`services.d.limits.stack`: `1.5` is not a limit",
        "`services.e.memory-max` is 10KiB, too little for any program to start",
        "`services.e.cpu-max` is \"0%\", not a share of CPU time",
        "`services.e.umask` is \"0999\", not a umask",
        "`services.e.nice` is 20, it must be from -20 to 19",
        "`services.e.oom-score-adj` is -1001, it must be from -1000 to 1000",
        "`services.e.reload-signal` cannot be SIGKILL",
        "`services.f.group`: group `gpu0` does not exist",
        "write pool = \"gpu0\"",
    ] {
        assert!(
            out.stderr.contains(expected),
            "{expected:?} in:\n{}",
            out.stderr
        );
    }
    // `memory` under the old name of a budget gets the one error that says what to do.
    assert!(
        !out.stderr.contains("services.f.memory` needs a `pool`"),
        "{}",
        out.stderr
    );
}

#[test]
fn check_says_how_memory_max_and_cpu_max_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("muster.toml");
    std::fs::write(
        &file,
        "[services.a]\ncommand = [\"true\"]\nmemory-max = \"1GiB\"\ncpu-max = 1.5\n",
    )
    .unwrap();
    let out = muster_run(&["check", "-f", file.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let line = out.stdout.lines().next().unwrap();
    assert!(line.starts_with("limits: memory-max is "), "{}", out.stdout);
    assert!(line.contains("; cpu-max "), "{}", out.stdout);
    let json = muster_run(&["check", "--json", "-f", file.to_str().unwrap()]);
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["limits"].as_str(), line.strip_prefix("limits: "));
    // Without either, nothing is said.
    std::fs::write(&file, "[services.a]\ncommand = [\"true\"]\n").unwrap();
    let out = muster_run(&["check", "-f", file.to_str().unwrap()]);
    assert!(!out.stdout.contains("limits:"), "{}", out.stdout);
}
