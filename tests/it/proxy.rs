//! On-demand services behind muster's proxy, against a real `muster up` and a real
//! Python HTTP server: one start for many clients, idle-stop, failed starts, request
//! timeouts, a crash mid-stream, and the bound on waiting connections.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use hyper::Method;

use crate::helpers::repo;
use crate::helpers::up::{Up, WAIT, eventually, free_port};

/// The example's stand-in model server, `load` seconds to start, counting its starts in
/// `{dir}/starts`.
fn model(listen: u16, upstream: u16, load: f64, extra: &str) -> String {
    let server = repo().join("examples/llm-gateway/model_server.py");
    format!(
        r#"
[settings]
state-dir = "{{dir}}/state"

[services.model]
command = ["python3", "{server}", "--port", "{upstream}", "--load-seconds", "{load}", "--starts", "{{dir}}/starts"]
ports = ["127.0.0.1:{upstream}"]
autostart = false
ready = {{ http = "http://127.0.0.1:{upstream}/health", interval = "50ms", timeout = "20s" }}
proxy = {{ listen = "127.0.0.1:{listen}", upstream = "127.0.0.1:{upstream}"{extra} }}
"#,
        server = server.display()
    )
}

/// One HTTP exchange through `port`: the whole answer (the server closes).
fn post(port: u16, body: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(WAIT))?;
    write!(
        stream,
        "POST /v1/completions HTTP/1.1\r\nHost: model\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

fn starts(up: &Up) -> usize {
    std::fs::read_to_string(up.path("starts"))
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

fn service(up: &Up) -> serde_json::Value {
    up.call(Method::GET, "/v1/services/model").body
}

#[test]
fn two_hundred_clients_on_a_cold_service_share_one_start() {
    let listen = free_port();
    let mut up = Up::start(&model(listen, free_port(), 1.0, ""), &[]);
    up.socket();
    let clients: Vec<_> = (0..200)
        .map(|i| thread::spawn(move || post(listen, &format!("question {i}"))))
        .collect();
    let answers: Vec<String> = clients
        .into_iter()
        .map(|c| c.join().unwrap().expect("an answer"))
        .collect();
    for (i, answer) in answers.iter().enumerate() {
        assert!(answer.starts_with("HTTP/1.1 200 "), "{i}: {answer}");
        assert!(
            answer.contains(&format!("an answer to 'question {i}'")),
            "{i}: {answer}"
        );
    }
    assert_eq!(starts(&up), 1);
    let proxy = &service(&up)["proxy"];
    assert_eq!(proxy["served"], 200, "{proxy}");
    assert_eq!(proxy["refused"], 0, "{proxy}");
    assert!(proxy["bytes_out"].as_u64().unwrap() > 200 * 100, "{proxy}");
    up.wait_event("model", "ready");
    assert_eq!(
        up.events.iter().filter(|e| e["kind"] == "spawned").count(),
        1
    );
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}

#[test]
fn idle_stop_waits_for_open_connections_then_fires_and_the_next_client_restarts_it() {
    let listen = free_port();
    let config = model(listen, free_port(), 0.0, "")
        .replace("autostart = false", "autostart = false\nidle-stop = \"1s\"");
    let mut up = Up::start(&config, &[]);
    up.socket();
    // A long connection: opened (the service starts), then held.
    let mut held = TcpStream::connect(("127.0.0.1", listen)).unwrap();
    held.write_all(b"GET /").unwrap();
    up.wait_event("model", "ready");
    // Held for three idle periods: the service must still be up. (A wait for something
    // that must not happen can only be a fixed time.)
    thread::sleep(Duration::from_secs(3));
    let now = service(&up);
    assert_eq!(now["state"], "healthy", "{now}");
    assert_eq!(now["proxy"]["open_connections"], 1, "{now}");
    assert!(up.events.iter().all(|e| e["kind"] != "idle-stopped"));

    let closed = Instant::now();
    drop(held);
    up.wait_event("model", "idle-stopped");
    let after = closed.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "stopped {after:?} after the close"
    );
    up.wait_event("model", "stopped");

    // The next client starts it again.
    let answer = post(listen, "again").unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert_eq!(starts(&up), 2);
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}

#[test]
fn a_failed_start_answers_every_waiting_client_at_once() {
    let listen = free_port();
    let config = format!(
        r#"
[settings]
state-dir = "{{dir}}/state"

[services.model]
shell = 'echo "CUDA out of memory" >&2; sleep 0.5; exit 1'
autostart = false
restart = "never"
ready = {{ tcp = "127.0.0.1:{upstream}", timeout = "20s" }}
proxy = {{ listen = "127.0.0.1:{listen}", upstream = "127.0.0.1:{upstream}", http = true }}
"#,
        upstream = free_port()
    );
    let mut up = Up::start(&config, &[]);
    up.socket();
    let began = Instant::now();
    let clients: Vec<_> = (0..20)
        .map(|_| thread::spawn(move || post(listen, "question")))
        .collect();
    for client in clients {
        let answer = client.join().unwrap().expect("an answer");
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["kind"], "not-healthy", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("exited with status 1"), "{message}");
        assert!(
            body["error"]["log_tail"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l == "CUDA out of memory"),
            "{body}"
        );
    }
    // Well within the start deadline (20 s): as soon as the start failed.
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    up.wait_event("model", "failed");
    assert_eq!(service(&up)["proxy"]["refused"], 20);
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}

#[test]
fn a_request_with_no_answer_gets_504_after_the_request_timeout() {
    let listen = free_port();
    let upstream = free_port();
    // Accepts, reads, never answers.
    let silent = format!(
        "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('127.0.0.1',{upstream}))\ns.listen(64)\nheld=[]\nwhile True:\n    c,_=s.accept()\n    held.append(c)\n"
    );
    let config = format!(
        r#"
[settings]
state-dir = "{{dir}}/state"

[services.model]
command = ["python3", "-c", '''{silent}''']
autostart = false
ready = {{ tcp = "127.0.0.1:{upstream}", interval = "50ms", timeout = "20s" }}
proxy = {{ listen = "127.0.0.1:{listen}", upstream = "127.0.0.1:{upstream}", http = true, request-timeout = "1s" }}
"#
    );
    let mut up = Up::start(&config, &[]);
    up.socket();
    // Started first: on a loaded machine python's own start can take longer than the
    // request timeout, which then (rightly) bounds the wait for the start instead.
    let ensured = up.call(Method::POST, "/v1/services/model/ensure?timeout=20s");
    assert_eq!(ensured.status, 200, "{}", ensured.body);
    let began = Instant::now();
    let answer = post(listen, "question").unwrap();
    assert!(answer.starts_with("HTTP/1.1 504 "), "{answer}");
    assert!(answer.contains("proxy.request-timeout"), "{answer}");
    // The start (python's own) plus one second, not the client's 30 s.
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "{:?}",
        began.elapsed()
    );
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}

#[test]
fn a_crash_mid_stream_closes_the_connection_and_the_next_client_waits_for_the_restart() {
    let listen = free_port();
    let config = model(listen, free_port(), 0.0, "").replace(
        "autostart = false",
        "autostart = false\nrestart = \"always\"\nbackoff = { initial = \"200ms\" }",
    );
    let mut up = Up::start(&config, &[]);
    up.socket();
    let mut open = TcpStream::connect(("127.0.0.1", listen)).unwrap();
    open.write_all(
        b"POST /v1/completions HTTP/1.1\r\nHost: model\r\nContent-Length: 100\r\n\r\nhalf",
    )
    .unwrap();
    let spawned = up.wait_event("model", "spawned");
    up.wait_event("model", "ready");
    // Killed once the waiting connection is through to this run, not merely ready.
    eventually("the connection is forwarded", || {
        service(&up)["proxy"]["served"] == 1
    });
    let pid = spawned["data"]["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    open.set_read_timeout(Some(WAIT)).unwrap();
    let mut rest = Vec::new();
    let began = Instant::now();
    let _ = open.read_to_end(&mut rest);
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));

    // The next client comes once muster has seen the crash. One that connects while the
    // dying process's listening socket still exists is accepted by the kernel and then
    // reset, before muster can know; that window is the kernel's, not the proxy's.
    up.wait_event("model", "exited");
    let answer = post(listen, "after the crash").unwrap();
    if !answer.starts_with("HTTP/1.1 200 ") {
        let view = service(&up);
        let log = up.call(Method::GET, "/v1/services/model/logs?tail=30").body;
        let ended = up.stop();
        panic!(
            "answer {answer:?}\nservice {view:#}\nlog {log:#}\nevents {:#?}",
            ended.events
        );
    }
    assert_eq!(starts(&up), 2);
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}

#[test]
fn past_max_pending_connections_are_refused_at_once() {
    let listen = free_port();
    let upstream = free_port();
    // Ready only once the test opens the gate: the two clients wait however slow the
    // machine is.
    let config = model(listen, upstream, 0.0, ", http = true, max-pending = 2").replace(
        &format!("ready = {{ http = \"http://127.0.0.1:{upstream}/health\", interval = \"50ms\", timeout = \"20s\" }}"),
        "ready = { exec = [\"test\", \"-f\", \"{dir}/gate\"], interval = \"50ms\", timeout = \"60s\" }",
    );
    assert!(config.contains("/gate"), "{config}");
    let mut up = Up::start(&config, &[]);
    up.socket();
    let waiting: Vec<_> = (0..2)
        .map(|_| thread::spawn(move || post(listen, "patient")))
        .collect();
    crate::helpers::up::eventually("two connections wait", || {
        service(&up)["proxy"]["waiting"] == 2
    });
    let began = Instant::now();
    let refused = post(listen, "one too many").unwrap();
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    assert!(refused.contains("proxy.max-pending"), "{refused}");
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    std::fs::write(up.path("gate"), "").unwrap();
    for client in waiting {
        let answer = client.join().unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    }
    up.wait_event("model", "ready");
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}
