//! The model router's cost, measured side by side with a direct connection in one run:
//!
//! - latency: small chat-completion requests on one keep-alive connection, alternating
//!   blocks direct and through the router, p50 and p99 of each;
//! - time to first streamed byte: a streamed completion on a new connection, from the
//!   request sent to the first event received, direct and through the router;
//! - swap: two stand-in servers (`examples/models/server.py`) in an exclusive pool,
//!   asked for in turn, so that each request stops one and loads the other. The
//!   servers' stamps split each swap into muster's parts (deciding and signalling;
//!   noticing the exit and spawning; noticing readiness and forwarding) and the
//!   servers' own (stopping, loading, and the interpreter starting, measured apart).
//!
//! The upstream for the first two is a hyper server in this process, so it is never the
//! bottleneck; muster supervises a placeholder and routes its model there.
//!
//!     cargo bench --bench router

// A benchmark unwraps freely: a panic is how it reports a broken assumption.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;
use support::{free_port, micros, millis, percentile, stop, up};

const REQUESTS: usize = 4_000;
const STREAMS: usize = 300;
const SWAPS: usize = 10;

/// The in-process model server: a small JSON answer, or (with `"stream": true` in the
/// body) four server-sent events, the first at once.
fn upstream(runtime: &tokio::runtime::Runtime) -> SocketAddr {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap();
    runtime.spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                    use http_body_util::BodyExt;
                    let body = request.into_body().collect().await?.to_bytes();
                    let streamed = body.windows(14).any(|w| w == b"\"stream\": true");
                    type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;
                    let response: hyper::Response<Body> = if streamed {
                        let events = futures_util::stream::iter((0..4).map(|i| {
                            Ok::<_, hyper::Error>(Frame::data(Bytes::from(format!(
                                "data: {{\"choices\":[{{\"delta\":{{\"content\":\"t{i}\"}}}}]}}\n\n"
                            ))))
                        }));
                        hyper::Response::builder()
                            .header("content-type", "text/event-stream")
                            .body(BodyExt::boxed_unsync(StreamBody::new(events)))
                            .unwrap()
                    } else {
                        let answer = r#"{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}]}"#;
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(BodyExt::boxed_unsync(
                                Full::new(Bytes::from(answer)).map_err(|never| match never {}),
                            ))
                            .unwrap()
                    };
                    Ok::<_, hyper::Error>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

fn request_text(body: &str, keep_alive: bool) -> String {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one answer with a Content-Length from a keep-alive connection.
fn read_answer(reader: &mut BufReader<TcpStream>) {
    let mut line = String::new();
    let mut length = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    assert!(body.starts_with(b"{"), "{}", String::from_utf8_lossy(&body));
}

/// Times of `count` requests on one keep-alive connection.
fn latencies(port: u16, count: usize) -> Vec<Duration> {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let request = request_text(r#"{"model": "bench", "messages": []}"#, true);
    (0..count)
        .map(|_| {
            let began = Instant::now();
            writer.write_all(request.as_bytes()).unwrap();
            read_answer(&mut reader);
            began.elapsed()
        })
        .collect()
}

/// Time from a streamed request sent to its first event received.
fn first_byte(port: u16) -> Duration {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let request = request_text(
        r#"{"model": "bench", "stream": true, "messages": []}"#,
        false,
    );
    let began = Instant::now();
    writer.write_all(request.as_bytes()).unwrap();
    let mut line = String::new();
    let first = loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "no event");
        if line.starts_with("data: ") {
            break began.elapsed();
        }
    };
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    first
}

fn since_epoch(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// One stand-in's stamp: the latest `what` of `model` at or after `after`.
fn stamp(text: &str, model: &str, what: &str, after: f64) -> f64 {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let (m, w, t) = (parts.next()?, parts.next()?, parts.next()?);
            let t: f64 = t.parse().ok()?;
            (m == model && w == what && t >= after).then_some(t)
        })
        .next_back()
        .unwrap_or_else(|| panic!("no `{what}` of {model} after {after}:\n{text}"))
}

fn chat(port: u16, model: &str) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = format!(r#"{{"model": "{model}", "messages": []}}"#);
    stream
        .write_all(request_text(&body, false).as_bytes())
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let upstream = upstream(&runtime);
    let router = free_port();
    let dir = tempfile::tempdir().unwrap();
    let server = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models/server.py");
    let stamps = dir.path().join("stamps");
    let swapper = |name: &str| {
        format!(
            r#"
[services.{name}]
command = ["python3", "{server}", "--port", "{{port}}", "--model", "{name}", "--load", "0.2", "--token-delay", "0", "--stamps", "{stamps}"]
port = "auto"
models = ["{name}"]
ready = {{ http = "http://127.0.0.1:{{port}}/health", interval = "5ms", timeout = "20s" }}
autostart = false
pool = "one"
"#,
            server = server.display(),
            stamps = stamps.display()
        )
    };
    let config = format!(
        r#"[settings]
state-dir = "{dir}/state"

[router]
listen = "127.0.0.1:{router}"

[pools.one]
exclusive = true

[services.placeholder]
command = ["sleep", "3600"]
models = ["bench"]
upstream = "{upstream}"
{a}{b}"#,
        dir = dir.path().display(),
        a = swapper("a"),
        b = swapper("b"),
    );
    let file = dir.path().join("router.toml");
    std::fs::write(&file, config).unwrap();
    let (mut child, _lines) = up(&file);
    // Ready once the router answers (the placeholder starts with it).
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", router)).is_err() {
        assert!(Instant::now() < deadline, "the router never listened");
        std::thread::sleep(Duration::from_millis(10));
    }
    let direct = upstream.port();
    latencies(direct, 200);
    latencies(router, 200);
    let (mut plain, mut routed) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        plain.extend(latencies(direct, REQUESTS / 4));
        routed.extend(latencies(router, REQUESTS / 4));
    }
    plain.sort();
    routed.sort();
    let (mut plain_first, mut routed_first) = (Vec::new(), Vec::new());
    for _ in 0..STREAMS {
        plain_first.push(first_byte(direct));
        routed_first.push(first_byte(router));
    }
    plain_first.sort();
    routed_first.sort();

    // Swaps: `a` first, then each request for the other stops one and loads the other.
    // Each swap's way, from the stand-ins' stamps: asked -> old server told to stop ->
    // old server exits -> new server's first instruction -> new server loaded -> answer.
    chat(router, "a");
    let mut phases: [Vec<Duration>; 6] = Default::default();
    for i in 0..SWAPS {
        let (old, new) = if i % 2 == 0 { ("a", "b") } else { ("b", "a") };
        let asked = since_epoch(SystemTime::now());
        chat(router, new);
        let answered = since_epoch(SystemTime::now());
        let text = std::fs::read_to_string(&stamps).unwrap();
        let told = stamp(&text, old, "stopping", asked);
        let exited = stamp(&text, old, "exiting", asked);
        let began = stamp(&text, new, "began", asked);
        let loaded = stamp(&text, new, "loaded", asked);
        for (phase, (from, to)) in phases.iter_mut().zip([
            (asked, answered),
            (asked, told),
            (told, exited),
            (exited, began),
            (began, loaded),
            (loaded, answered),
        ]) {
            phase.push(Duration::from_secs_f64((to - from).max(0.0)));
        }
    }
    stop(&mut child);
    for phase in &mut phases {
        phase.sort();
    }
    let mut interpreter: Vec<Duration> = (0..5)
        .map(|_| {
            let began = Instant::now();
            let status = std::process::Command::new("python3")
                .args([
                    "-c",
                    "import argparse, json, os, signal, sys, threading, time, http.server",
                ])
                .status()
                .unwrap();
            assert!(status.success());
            began.elapsed()
        })
        .collect();
    interpreter.sort();
    let median = |v: &[Duration]| v[v.len() / 2];

    println!("| measure | direct | through the router | added |");
    println!("|---|---|---|---|");
    for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (d, r) = (percentile(&plain, p), percentile(&routed, p));
        println!(
            "| request, keep-alive, {label} of {REQUESTS} | {} | {} | +{} |",
            micros(d),
            micros(r),
            micros(r.saturating_sub(d))
        );
    }
    for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (d, r) = (percentile(&plain_first, p), percentile(&routed_first, p));
        println!(
            "| first streamed byte, new connection, {label} of {STREAMS} | {} | {} | +{} |",
            micros(d),
            micros(r),
            micros(r.saturating_sub(d))
        );
    }
    let rows = [
        "swap in an exclusive pool: request to answer",
        "request to the old server told to stop (muster: the decision, SIGTERM)",
        "old server's own stop (its stamps)",
        "old server gone to the new one's first instruction (muster: noticing the exit, spawning; the interpreter starting)",
        "new server's own load (its stamps)",
        "loaded to answered (muster: readiness noticed at a 5 ms interval, the request forwarded)",
    ];
    for (label, phase) in rows.iter().zip(&phases) {
        println!(
            "| {label} (median of {SWAPS}) | | {} | |",
            millis(median(phase))
        );
    }
    println!(
        "| of which python3 starting up with the stand-in's imports (measured apart, median of 5) | | {} | |",
        millis(median(&interpreter))
    );
}
