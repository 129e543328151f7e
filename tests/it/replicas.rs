//! `replicas = N`: instances `NAME.0` … each with its number, its port and its own
//! environment; a dependent waits for all of them; the proxy spreads clients over the
//! healthy ones; `muster scale` changes the count at runtime without losing a client
//! the proxy accepted, and the count holds over a reload until the file changes it.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use hyper::Method;

use crate::helpers::up::{Up, WAIT, eventually, free_port};
use crate::helpers::{check_source, muster, run};

/// An HTTP server on `$PORT` answering each request with its replica number and `GPU`,
/// after `?delay=SECONDS`.
const SERVER: &str = r#"
import http.server, os, time, urllib.parse
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        time.sleep(float(query.get("delay", ["0"])[0]))
        body = ("%s %s %s\n" % (os.environ["MUSTER_REPLICA"], os.environ["GPU"], os.environ["PORT"])).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
server.daemon_threads = True
server.serve_forever()
"#;

fn config(replicas: u32, proxy: u16) -> String {
    format!(
        r#"
[settings]
state-dir = "{{dir}}/state"

[services.web]
command = ["python3", "{{dir}}/server.py"]
replicas = {replicas}
port = "auto"
env = {{ GPU = "cuda{{replica:02}}" }}
ready = {{ http = "http://127.0.0.1:{{port}}/" }}
proxy = {{ listen = "127.0.0.1:{proxy}", upstream = "127.0.0.1:{{port}}" }}
stop-timeout = "5s"

[services.client]
shell = "echo run >> client.runs; exec sleep 1000"
cwd = "{{dir}}"
depends-on = ["web"]
"#
    )
}

fn start(replicas: u32, proxy: u16) -> Up {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("server.py"), SERVER).expect("write the server");
    let mut up = Up::start_in(dir, &config(replicas, proxy), &[]);
    up.wait_event("client", "spawned");
    up
}

/// One request through the proxy on its own connection: the body, or why not.
fn get(port: u16, path: &str) -> Result<String, String> {
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(WAIT))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("read: {e} after {answer:?}"))?;
    if !answer.starts_with("HTTP/1.0 200") {
        return Err(format!("answer: {answer:?}"));
    }
    Ok(answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned())
}

fn scale(up: &Up, count: u32) -> crate::helpers::Run {
    let file = up.path("muster.toml");
    run(&mut muster(&[
        "scale",
        "web",
        &count.to_string(),
        "-f",
        file.to_str().unwrap(),
    ]))
}

fn runs(up: &Up) -> usize {
    std::fs::read_to_string(up.path("client.runs"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn replicas_are_numbered_instances_each_with_its_number_port_and_environment() {
    let proxy = free_port();
    let mut up = start(3, proxy);
    // The dependent started once every instance was ready.
    let spawned_at = up
        .events
        .iter()
        .position(|e| e["service"] == "client" && e["kind"] == "spawned")
        .unwrap();
    for i in 0..3 {
        let ready = up
            .events
            .iter()
            .position(|e| e["service"] == format!("web.{i}") && e["kind"] == "ready");
        assert!(
            ready.is_some_and(|at| at < spawned_at),
            "client spawned before web.{i} was ready: {:#?}",
            up.events
        );
    }
    let mut ports = std::collections::BTreeSet::new();
    for i in 0..3 {
        let view = up.call(Method::GET, &format!("/v1/services/web.{i}")).body;
        assert_eq!(view["state"], "healthy", "{view}");
        ports.insert(view["port"].as_u64().unwrap());
    }
    assert_eq!(ports.len(), 3, "each instance has its own port: {ports:?}");
    // The set's name is not an instance's: the API says which names it takes.
    let answer = up.call(Method::GET, "/v1/services/web");
    assert_eq!(answer.status, 404);
    assert_eq!(
        answer.body["error"]["instances"],
        serde_json::json!(["web.0", "web.1", "web.2"])
    );
    // Idle instances take clients in turn; each sees its own number, GPU and port.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let body = get(proxy, "/").unwrap();
        let fields: Vec<&str> = body.split_whitespace().collect();
        assert_eq!(
            fields[1],
            format!("cuda{:02}", fields[0].parse::<u32>().unwrap())
        );
        assert!(ports.contains(&fields[2].parse().unwrap()), "{body}");
        seen.insert(fields[0].to_owned());
    }
    assert_eq!(seen.len(), 3, "every instance served: {seen:?}");
    // `status web` shows the instances.
    let file = up.path("muster.toml");
    let status = run(&mut muster(&[
        "status",
        "web",
        "-f",
        file.to_str().unwrap(),
    ]));
    assert_eq!(status.code, 0, "{status:?}");
    for i in 0..3 {
        assert!(status.stdout.contains(&format!("web.{i}")), "{status:?}");
    }
    up.stop();
}

#[test]
fn scale_under_load_through_the_proxy_loses_no_accepted_connection() {
    let proxy = free_port();
    let mut up = start(4, proxy);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let served = Arc::clone(&served);
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match get(proxy, "/?delay=0.02") {
                        Ok(_) => {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(why) => failures.push(why),
                    }
                }
                failures
            })
        })
        .collect();
    let served_by_now = |at_least: usize| {
        let served = Arc::clone(&served);
        eventually("clients are served", move || {
            served.load(Ordering::Relaxed) >= at_least
        });
    };
    served_by_now(20);
    for count in [1, 4, 2, 4] {
        let scaled = scale(&up, count);
        assert_eq!(scaled.code, 0, "{scaled:?}");
        assert!(
            scaled
                .stdout
                .contains(&format!("web runs {count} instance")),
            "{scaled:?}"
        );
        let now = served.load(Ordering::Relaxed);
        served_by_now(now + 20);
    }
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:?}",
        failures.len(),
        served.load(Ordering::Relaxed) + failures.len()
    );
    // The first scale, to one, stopped the highest first.
    up.wait_event("web.1", "stopped");
    let stopped: Vec<String> = up
        .events
        .iter()
        .filter(|e| e["kind"] == "stopped")
        .filter_map(|e| e["service"].as_str().map(str::to_owned))
        .take(3)
        .collect();
    assert_eq!(stopped, ["web.3", "web.2", "web.1"], "{:#?}", up.events);
    // Scaling changed what `client` waits for, never its process.
    assert_eq!(runs(&up), 1);
    up.stop();
}

#[test]
fn a_scaled_count_holds_over_a_reload_until_the_file_changes_it() {
    let proxy = free_port();
    let mut up = start(2, proxy);
    let file = up.path("muster.toml");
    let file = file.to_str().unwrap().to_owned();
    assert_eq!(scale(&up, 3).code, 0);
    up.wait_event("web.2", "ready");
    let reload = run(&mut muster(&["reload", "-f", &file]));
    assert_eq!(reload.code, 0, "{reload:?}");
    let members = |up: &Up| {
        up.call(Method::GET, "/v1/services").body["services"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["name"].as_str().map(str::to_owned))
            .filter(|n| n.starts_with("web."))
            .collect::<Vec<_>>()
    };
    assert_eq!(members(&up), ["web.0", "web.1", "web.2"]);
    // The file's own count changes: it wins.
    let edited = std::fs::read_to_string(&file)
        .unwrap()
        .replace("replicas = 2", "replicas = 1");
    std::fs::write(&file, edited).unwrap();
    let reload = run(&mut muster(&["reload", "-f", &file]));
    assert_eq!(reload.code, 0, "{reload:?}");
    assert_eq!(members(&up), ["web.0"]);
    eventually("web.1 and web.2 are gone", || {
        up.call(Method::GET, "/v1/services/web.1").status == 404
    });
    assert_eq!(runs(&up), 1, "the dependent was not restarted");
    up.stop();
}

#[test]
fn scale_refuses_what_it_cannot_do_with_the_reason() {
    let proxy = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("server.py"), SERVER).unwrap();
    let pinned = config(3, proxy).replace(
        "depends-on = [\"web\"]",
        "depends-on = [\"web\", \"web.2\"]",
    );
    let mut up = Up::start_in(dir, &pinned, &[]);
    up.wait_event("client", "spawned");
    let file = up.path("muster.toml");
    let file = file.to_str().unwrap();
    let scale_to = |name: &str, count: &str| run(&mut muster(&["scale", name, count, "-f", file]));
    let cases = [
        ("client", "2", 1, "has no `replicas`"),
        ("web.1", "2", 1, "one instance of `web`: scale `web`"),
        ("nope", "2", 2, "no service named `nope`"),
        ("web", "0", 2, "from 1 to 1000"),
        ("web", "1001", 2, "from 1 to 1000"),
        ("web", "many", 2, "not a number of instances"),
        // `client` names `web.2`, which two instances would not have.
        ("web", "2", 1, "web.2"),
    ];
    for (name, count, code, says) in cases {
        let answer = scale_to(name, count);
        assert_eq!(answer.code, code, "scale {name} {count}: {answer:?}");
        assert!(
            answer.stderr.contains(says),
            "scale {name} {count}: {answer:?}"
        );
    }
    // Nothing changed.
    assert_eq!(
        up.call(Method::GET, "/v1/services/web.2").body["state"],
        "healthy"
    );
    up.stop();
}

#[test]
fn bad_replicas_are_refused_by_check_with_the_reason() {
    let service = |extra: &str| format!("[services.web]\ncommand = [\"sleep\", \"1\"]\n{extra}\n");
    let cases = [
        (service("replicas = 0"), "at least one instance"),
        (service("replicas = 5000"), "more than 1000"),
        (service("replicas = \"two\""), "whole number of instances"),
        (
            service("replicas = 2\nmodels = [\"m\"]\nport = \"auto\""),
            "both `replicas` and `models`",
        ),
        (
            "[services.\"web.1\"]\ncommand = [\"sleep\", \"1\"]\n".to_owned(),
            "kept for the instances",
        ),
    ];
    for (source, says) in cases {
        let checked = check_source(source.as_bytes(), &[]);
        assert_eq!(checked.code, 2, "{source}: {checked:?}");
        let text = format!("{}{}", checked.stdout, checked.stderr);
        assert!(text.contains(says), "{source}: {text}");
    }
    // One port for every instance is a clash, said once, at the port.
    let checked = check_source(service("replicas = 3\nports = [18000]").as_bytes(), &[]);
    assert_eq!(checked.code, 2, "{checked:?}");
    let text = format!("{}{}", checked.stdout, checked.stderr);
    assert_eq!(text.matches("error[").count(), 1, "{text}");
    // A number `port` is the first instance's; the others follow it.
    let checked = check_source(service("replicas = 3\nport = 18000").as_bytes(), &[]);
    assert_eq!(checked.code, 0, "{checked:?}");
    assert!(checked.stdout.contains("web ×3"), "{checked:?}");
}

#[test]
fn run_takes_the_service_name_for_its_first_instance_or_an_instance_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("muster.toml");
    std::fs::write(
        &file,
        "[services.web]\ncommand = [\"sleep\", \"1\"]\nreplicas = 3\nenv = { GPU = \"cuda{replica:02}\" }\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let show = "echo $MUSTER_SERVICE $MUSTER_REPLICA $GPU";
    for (name, says) in [("web", "web.0 0 cuda00"), ("web.2", "web.2 2 cuda02")] {
        let ran = run(&mut muster(&[
            "run", name, "-f", file, "--", "sh", "-c", show,
        ]));
        assert_eq!(ran.code, 0, "{ran:?}");
        assert_eq!(ran.stdout.trim(), says, "{ran:?}");
    }
}

#[test]
fn the_replicas_example_is_a_valid_config() {
    let checked = crate::helpers::muster_run(&["check", "-f", "examples/replicas"]);
    assert_eq!(checked.code, 0, "{checked:?}");
    assert!(checked.stdout.contains("worker ×4"), "{checked:?}");
}
