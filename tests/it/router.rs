//! The model router against a real `muster up` and the example's stand-in
//! OpenAI-compatible server (`examples/models/server.py`): routing by model, one start
//! per load, a budget that is kept without stopping a model mid-request, streaming that
//! is not buffered, and OpenAI-shaped errors for what the router answers itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::SystemTime;

use hyper::Method;
use serde_json::Value;

use crate::helpers::up::{Up, WAIT, eventually, free_port};
use crate::helpers::{Need, repo, require};

/// A config with `[router]` on `listen` and `models` services, each a stand-in server
/// loading for `load` seconds and recording its in-flight requests when stopped.
fn config(listen: u16, router_extra: &str, pools: &str, models: &[(&str, &str)]) -> String {
    let server = repo().join("examples/models/server.py");
    let mut text = format!(
        "[settings]\nstate-dir = \"{{dir}}/state\"\n\n[router]\nlisten = \"127.0.0.1:{listen}\"\n{router_extra}\n{pools}\n"
    );
    for (name, extra) in models {
        text.push_str(&format!(
            r#"
[services.{name}]
command = ["python3", "{server}", "--port", "{{port}}", "--model", "{name}-model", "--record", "{{dir}}/stops", "--load", "0.3", "--token-delay", "0.01"]
port = "auto"
models = ["{name}-model", "{name}"]
ready = {{ http = "http://127.0.0.1:{{port}}/health", interval = "20ms", timeout = "20s" }}
autostart = false
{extra}
"#,
            server = server.display()
        ));
    }
    text
}

/// One HTTP/1.1 exchange on a new connection: status, head and body as text.
fn exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the router");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: router\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("an answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    (status, head.to_owned(), body.to_owned())
}

fn chat(port: u16, model: &str, stream: bool, content: &str) -> (u16, String, String) {
    let body = serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [{ "role": "user", "content": content }],
    })
    .to_string();
    exchange(
        port,
        "POST",
        "/v1/chat/completions",
        "Content-Type: application/json\r\n",
        body.as_bytes(),
    )
}

/// The error object of an OpenAI-shaped error answer.
fn error_of(body: &str) -> Value {
    let value: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{body:?}: {e}"));
    value["error"].clone()
}

fn models_view(up: &Up, service: &str) -> Value {
    up.call(Method::GET, &format!("/v1/services/{service}"))
        .body["models"]
        .clone()
}

/// What the stand-ins recorded when they were stopped: one JSON line per stop.
fn stops(up: &Up) -> Vec<Value> {
    std::fs::read_to_string(up.path("stops"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

#[test]
fn a_hundred_requests_over_three_models_in_a_budget_of_two() {
    let listen = free_port();
    let member = "pool = \"gpu\"\nmemory = \"8GiB\"";
    let mut up = Up::start(
        &config(
            listen,
            "",
            "[pools.gpu]\ncapacity = \"16GiB\"\n",
            &[("a", member), ("b", member), ("c", member)],
        ),
        &[],
    );
    up.socket();
    let clients: Vec<_> = (0..100)
        .map(|i| {
            let model = ["a", "b", "c"][i % 3];
            thread::spawn(move || (model, chat(listen, model, i % 2 == 0, &format!("q{i}"))))
        })
        .collect();
    for client in clients {
        let (model, (status, head, body)) = client.join().expect("client thread");
        assert_eq!(status, 200, "{model}: {head}\n{body}");
        assert!(
            body.contains(&format!("Hello from {model}-model"))
                || body.contains(&format!("{model}-model")),
            "{model}: {body}"
        );
    }
    let ended = up.stop();
    // No member was stopped with a request in flight: the stand-ins say so at each stop.
    let recorded = stops(&up);
    assert!(!recorded.is_empty());
    for stop in &recorded {
        assert_eq!(stop["in_flight"], 0, "stopped mid-request: {recorded:?}");
    }
    let mut evictions = 0;
    for name in ["a", "b", "c"] {
        let spawned = ended.of(name, "spawned").len();
        let evicted = ended.of(name, "evicted").len();
        evictions += evicted;
        assert!(spawned >= 1, "{name} never started");
        // One start per load: a model starts again only after it was evicted.
        assert!(
            spawned <= evicted + 1,
            "{name}: {spawned} starts for {evicted} evictions"
        );
    }
    assert!(evictions >= 1, "three models fit a budget of two");
    // Never more than two ran at once: replay the events.
    let mut running = std::collections::BTreeSet::new();
    for event in &ended.events {
        let service = event["service"].as_str().unwrap_or_default().to_owned();
        match event["kind"].as_str() {
            Some("spawned") => {
                running.insert(service);
                assert!(running.len() <= 2, "three running at once: {running:?}");
            }
            Some("stopped" | "exited" | "failed") => {
                running.remove(&service);
            }
            _ => {}
        }
    }
    // Each eviction names what it made room for.
    let evicted = ended
        .events
        .iter()
        .find(|e| e["kind"] == "evicted")
        .expect("an eviction");
    assert!(
        evicted["message"]
            .as_str()
            .unwrap()
            .contains("to make room for"),
        "{evicted}"
    );
}

#[test]
fn a_flood_for_five_models_in_a_budget_of_two_does_not_thrash() {
    let _heavy = crate::helpers::heavy();
    let listen = free_port();
    let member = "pool = \"gpu\"\nmemory = \"1GiB\"";
    let names = ["m1", "m2", "m3", "m4", "m5"];
    let models: Vec<(&str, &str)> = names.iter().map(|n| (*n, member)).collect();
    let mut up = Up::start(
        &config(listen, "", "[pools.gpu]\ncapacity = \"2GiB\"\n", &models),
        &[],
    );
    up.socket();
    let clients: Vec<_> = (0..150)
        .map(|i| {
            let model = names[(i * 7 + i / 5) % 5];
            thread::spawn(move || (model, chat(listen, model, false, &format!("q{i}"))))
        })
        .collect();
    for client in clients {
        let (model, (status, _, body)) = client.join().expect("client thread");
        assert_eq!(status, 200, "{model}: {body}");
        assert!(
            body.contains(&format!("Hello from {model}-model")),
            "{model}: {body}"
        );
    }
    let ended = up.stop();
    let recorded = stops(&up);
    // Every stop found nothing in flight, and every run served requests before it was
    // stopped: no model was evicted before it had answered those that made it load.
    for stop in &recorded {
        assert_eq!(stop["in_flight"], 0, "stopped mid-request: {recorded:?}");
        assert!(
            stop["served"].as_u64().unwrap() >= 1,
            "a load that served nothing: {recorded:?}"
        );
    }
    let loads: usize = names.iter().map(|n| ended.of(n, "spawned").len()).sum();
    // All 150 arrive at once: each model loads once for its waiting requests, and at
    // most once more for those that came after its eviction began.
    assert!(
        loads <= 2 * names.len(),
        "{loads} loads for 150 requests: thrashing"
    );
}

#[test]
fn streamed_tokens_reach_the_client_as_the_server_sends_them() {
    let listen = free_port();
    let mut up = Up::start(
        &config(listen, "", "", &[("s", "")])
            .replace("\"--token-delay\", \"0.01\"", "\"--token-delay\", \"0.4\""),
        &[],
    );
    up.socket();
    let body = r#"{"model": "s", "stream": true, "messages": []}"#;
    let mut stream = TcpStream::connect(("127.0.0.1", listen)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut first_at = None;
    let mut sent: Vec<f64> = Vec::new();
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        if let Some(data) = line.trim().strip_prefix("data: ") {
            first_at.get_or_insert_with(SystemTime::now);
            if let Ok(event) = serde_json::from_str::<Value>(data)
                && let Some(at) = event["sent_at"].as_f64()
            {
                sent.push(at);
            }
        }
        line.clear();
    }
    let first_at = first_at
        .expect("a streamed event")
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!(sent.len(), 4, "four tokens");
    let last_sent = sent[sent.len() - 1];
    assert!(
        first_at < last_sent,
        "the first token arrived at {first_at}, after the last was sent at {last_sent}: buffered"
    );
    let _ = up.stop();
}

#[test]
fn what_the_router_answers_itself_is_in_openai_error_shape() {
    let listen = free_port();
    let mut up = Up::start(
        &config(
            listen,
            "max-body = \"1KiB\"",
            "",
            &[("llama3", ""), ("qwen", "")],
        ),
        &[],
    );
    up.socket();
    let json = "Content-Type: application/json\r\n";
    let (status, _, body) = exchange(listen, "POST", "/v1/chat/completions", json, b"{not json");
    assert_eq!(status, 400, "{body}");
    let error = error_of(&body);
    assert_eq!(error["type"], "invalid_request_error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{error}"
    );

    let (status, _, body) = exchange(
        listen,
        "POST",
        "/v1/chat/completions",
        json,
        br#"{"messages": []}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_of(&body)["param"], "model");

    let (status, _, body) = chat(listen, "lama3", false, "hi");
    assert_eq!(status, 404, "{body}");
    let error = error_of(&body);
    assert_eq!(error["code"], "model_not_found");
    assert!(
        error["message"].as_str().unwrap().contains("`llama3`"),
        "{error}"
    );

    let big = format!(r#"{{"model": "llama3", "prompt": "{}"}}"#, "x".repeat(4096));
    let (status, _, body) = exchange(listen, "POST", "/v1/completions", json, big.as_bytes());
    assert_eq!(status, 413, "{body}");
    assert!(
        error_of(&body)["message"]
            .as_str()
            .unwrap()
            .contains("router.max-body")
    );

    // Nothing was started for any of them.
    let (status, _, body) = exchange(listen, "GET", "/v1/models", "", b"");
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["llama3-model", "llama3", "qwen-model", "qwen"]);
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["state"] == "stopped"),
        "{list}"
    );

    // A multipart form (audio transcription) names its model in a field.
    let form = "--XB\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF\r\n--XB\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nqwen\r\n--XB--\r\n";
    let (status, _, body) = exchange(
        listen,
        "POST",
        "/v1/audio/transcriptions",
        "Content-Type: multipart/form-data; boundary=XB\r\n",
        form.as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("transcribed by qwen-model"), "{body}");
    let ended = up.stop();
    assert!(ended.of("llama3", "spawned").is_empty());
    assert_eq!(ended.of("qwen", "spawned").len(), 1);
}

#[test]
fn a_client_that_goes_away_mid_stream_is_no_longer_in_flight() {
    let listen = free_port();
    let mut up = Up::start(
        &config(listen, "", "", &[("s", "")])
            .replace("\"--token-delay\", \"0.01\"", "\"--token-delay\", \"2\""),
        &[],
    );
    up.socket();
    let body = r#"{"model": "s", "stream": true, "messages": []}"#;
    let stream = TcpStream::connect(("127.0.0.1", listen)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    (&stream)
        .write_all(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 && !line.starts_with("data: ") {
        line.clear();
    }
    assert!(line.starts_with("data: "), "no first token: {line:?}");
    assert_eq!(models_view(&up, "s")["in_flight"], 1);
    drop(reader);
    drop(stream);
    eventually("the request is no longer in flight", || {
        models_view(&up, "s")["in_flight"] == 0
    });
    // The server saw its client go: the generation was cancelled, not left running.
    let port = up.call(Method::GET, "/v1/services/s").body["port"]
        .as_u64()
        .unwrap() as u16;
    eventually("the server's own request ended", || {
        let (status, _, body) = exchange(port, "GET", "/stats", "", b"");
        status == 200 && serde_json::from_str::<Value>(&body).unwrap()["in_flight"] == 0
    });
    let _ = up.stop();
}

#[test]
fn a_server_that_dies_mid_stream_sends_an_error_event_and_restarts() {
    let listen = free_port();
    let mut up = Up::start(&config(listen, "", "", &[("s", "")]), &[]);
    up.socket();
    let (status, _, body) = chat(listen, "s", true, "please crash-mid-stream");
    assert_eq!(status, 200);
    assert!(body.contains("Hello"), "the first token: {body}");
    assert!(body.contains("event: error"), "{body}");
    assert!(body.contains("stopped answering mid-stream"), "{body}");
    up.wait_event("s", "exited");
    // Restarted by its policy; the next request is answered.
    let (status, _, body) = chat(listen, "s", false, "again");
    assert_eq!(status, 200, "{body}");
    let _ = up.stop();
}

#[test]
fn past_max_concurrent_requests_queue_and_past_the_queue_get_429() {
    let listen = free_port();
    let mut up = Up::start(
        &config(
            listen,
            "",
            "",
            &[("s", "max-concurrent = 1\nmax-queued = 1")],
        )
        .replace("\"--token-delay\", \"0.01\"", "\"--token-delay\", \"0.5\""),
        &[],
    );
    up.socket();
    let first = thread::spawn(move || chat(listen, "s", false, "one"));
    eventually("the first request is in flight", || {
        models_view(&up, "s")["in_flight"] == 1
    });
    let second = thread::spawn(move || chat(listen, "s", false, "two"));
    eventually("the second request waits", || {
        models_view(&up, "s")["queued"] == 1
    });
    let (status, head, body) = chat(listen, "s", false, "three");
    assert_eq!(status, 429, "{body}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    assert_eq!(error_of(&body)["type"], "rate_limit_error");
    assert_eq!(first.join().unwrap().0, 200);
    assert_eq!(second.join().unwrap().0, 200);
    let view = models_view(&up, "s");
    assert_eq!(view["requests"], 3, "{view}");
    assert_eq!(view["failed"], 1, "{view}");
    let _ = up.stop();
}

#[test]
fn idle_stop_counts_from_the_end_of_the_last_request() {
    let listen = free_port();
    let mut up = Up::start(
        &config(listen, "", "", &[("s", "idle-stop = \"1s\"")])
            .replace("\"--token-delay\", \"0.01\"", "\"--token-delay\", \"0.7\""),
        &[],
    );
    up.socket();
    // About 2.8 s of answer (four tokens 0.7 s apart), longer than the idle time.
    let asked = std::time::SystemTime::now();
    let (status, _, body) = chat(listen, "s", true, "long");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("[DONE]"), "{body}");
    // The stop comes a whole idle time after the answer ended, not during it: compared
    // by the clock from before the request, so that a slow test cannot count against
    // muster (stopped during the answer, it would be about 1 s after `asked`).
    let stopped = up.wait_event("s", "idle-stopped");
    let at = humantime::parse_rfc3339_weak(stopped["time"].as_str().unwrap_or_default())
        .expect("the event's time");
    let after = at.duration_since(asked).map_or(0.0, |d| d.as_secs_f64());
    assert!(
        after >= 3.6,
        "stopped {after:.3} s after the request (a 2.8 s answer, idle-stop 1s): {stopped}"
    );
    let _ = up.stop();
}

#[test]
fn an_exclusive_pool_runs_one_member_at_a_time() {
    let listen = free_port();
    let member = "pool = \"gpu\"";
    let mut up = Up::start(
        &config(
            listen,
            "",
            "[pools.gpu]\nexclusive = true\n",
            &[("a", member), ("b", member)],
        ),
        &[],
    );
    up.socket();
    assert_eq!(chat(listen, "a", false, "1").0, 200);
    assert_eq!(chat(listen, "b", false, "2").0, 200);
    assert_eq!(chat(listen, "a", false, "3").0, 200);
    let ended = up.stop();
    let order: Vec<String> = ended
        .events
        .iter()
        .filter(|e| matches!(e["kind"].as_str(), Some("spawned" | "evicted")))
        .map(|e| {
            format!(
                "{} {}",
                e["service"].as_str().unwrap(),
                e["kind"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            "a spawned",
            "a evicted",
            "b spawned",
            "b evicted",
            "a spawned"
        ],
        "{:#?}",
        ended.events
    );
}

#[test]
fn check_refuses_routing_that_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("muster.toml");
    std::fs::write(
        &file,
        r#"
[pools.gpu]
capacity = "8GiB"

[services.a]
command = ["sleep", "100", "{port}"]
models = ["m"]
upstream = "127.0.0.1:9000"
pool = "gpu"
memory = "16GiB"

[services.b]
command = ["sleep", "100"]
port = "auto"
models = ["m"]
pool = "gpx"
"#,
    )
    .unwrap();
    let out = crate::helpers::run(&mut crate::helpers::muster(&[
        "check",
        "-f",
        file.to_str().unwrap(),
    ]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    for expected in [
        "uses `{port}` but the service has no `port`",
        "model `m` is served by both `a` and `b`",
        "there is no pool `gpx`",
        "needs 16GiB but pool `gpu` holds 8GiB in all",
        "no [router] to route them",
    ] {
        assert!(
            out.stderr.contains(expected),
            "missing {expected:?} in:\n{}",
            out.stderr
        );
    }
}

#[test]
fn openais_own_python_client_works_against_the_router() {
    if !require(
        Need::PythonModule("openai"),
        "the router against OpenAI's own Python client",
    ) {
        return;
    }
    let listen = free_port();
    let mut up = Up::start(&config(listen, "", "", &[("a", ""), ("b", "")]), &[]);
    up.socket();
    let script = repo().join("tests/fixtures/openai_client.py");
    let mut command = std::process::Command::new("python3");
    command.arg(&script).arg(listen.to_string());
    let out = crate::helpers::run(&mut command);
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    assert_eq!(out.stdout.trim(), "ok");
    let _ = up.stop();
}

#[test]
fn a_model_that_cannot_load_is_answered_503_with_its_cause_and_log() {
    let listen = free_port();
    let mut up = Up::start(
        &format!(
            r#"
[settings]
state-dir = "{{dir}}/state"

[router]
listen = "127.0.0.1:{listen}"

[services.broken]
shell = "echo 'CUDA error: out of memory' >&2; exit 1"
port = "auto"
models = ["broken"]
restart = "never"
autostart = false
ready = {{ http = "http://127.0.0.1:{{port}}/health", timeout = "10s" }}
"#
        ),
        &[],
    );
    up.socket();
    let (status, _, body) = chat(listen, "broken", false, "hi");
    assert_eq!(status, 503, "{body}");
    let error = error_of(&body);
    assert_eq!(error["type"], "server_error");
    assert!(
        error["cause"]
            .as_str()
            .unwrap()
            .contains("exited with status 1"),
        "{error}"
    );
    assert!(
        error["log_tail"]
            .to_string()
            .contains("CUDA error: out of memory"),
        "{error}"
    );
    // The next request asks again: one start per request that finds it down.
    let (status, _, _) = chat(listen, "broken", false, "again");
    assert_eq!(status, 503);
    let ended = up.stop();
    assert_eq!(ended.of("broken", "spawned").len(), 2);
}

#[test]
fn a_reload_that_edits_routes_restarts_nothing() {
    let listen = free_port();
    let moved = free_port();
    let mut up = Up::start(&config(listen, "", "", &[("a", "")]), &[]);
    up.socket();
    assert_eq!(chat(listen, "a", false, "1").0, 200);
    let file = up.path("muster.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let edited = text
        .replace(
            "models = [\"a-model\", \"a\"]",
            "models = [\"a-model\", \"a\", \"alpha\"]\nmax-concurrent = 2",
        )
        .replace(
            &format!("127.0.0.1:{listen}"),
            &format!("127.0.0.1:{moved}"),
        );
    assert_ne!(text, edited);
    std::fs::write(&file, edited).unwrap();
    let out = crate::helpers::run(&mut crate::helpers::muster(&[
        "reload",
        "-f",
        file.to_str().unwrap(),
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The router moved and routes the new alias, to the same process.
    eventually("the router listens on its new address", || {
        TcpStream::connect(("127.0.0.1", moved)).is_ok()
    });
    let (status, _, body) = chat(moved, "alpha", false, "2");
    assert_eq!(status, 200, "{body}");
    assert!(
        TcpStream::connect(("127.0.0.1", listen)).is_err(),
        "the old address still listens"
    );
    let view = models_view(&up, "a");
    assert_eq!(
        view["names"],
        serde_json::json!(["a-model", "a", "alpha"]),
        "{view}"
    );
    let ended = up.stop();
    assert_eq!(
        ended.of("a", "spawned").len(),
        1,
        "restarted by a reload of its routes"
    );
}
