//! The control API under load, on the real binary:
//!
//! - **ensure-fan-in**: 1,000 concurrent `ensure` calls on a healthy service, each on
//!   its own connection to the unix socket; latency of each call (p50, p99, max);
//! - **status-rps**: `GET /v1/services` requests per second over the socket, one
//!   connection per request, from 8 concurrent clients for 3 seconds (20 services).
//!
//! Run with `cargo bench --bench api`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use hyper::Method;
use muster::api::client::request;

mod support;

use support::{stop, up, wait_for_ready};

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = format!(
        "[settings]\nstate-dir = \"{}/state\"\n",
        dir.path().display()
    );
    for i in 0..20 {
        config.push_str(&format!(
            "\n[services.s{i:02}]\ncommand = [\"sleep\", \"3600\"]\n"
        ));
    }
    let file = dir.path().join("api.toml");
    std::fs::write(&file, config).unwrap();
    let (mut child, mut lines) = up(&file);
    wait_for_ready(&mut lines, 20);
    let socket = dir.path().join("state/muster.sock");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let mut latencies = runtime.block_on(async {
        let calls: Vec<_> = (0..1000)
            .map(|_| {
                let socket = socket.clone();
                tokio::spawn(async move {
                    let began = Instant::now();
                    let answer = request(&socket, Method::POST, "/v1/services/s00/ensure")
                        .await
                        .unwrap();
                    assert!(answer.status.is_success());
                    began.elapsed()
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for call in calls {
            latencies.push(call.await.unwrap());
        }
        latencies
    });
    latencies.sort();

    let window = Duration::from_secs(3);
    let served = runtime.block_on(async {
        let until = Instant::now() + window;
        let clients: Vec<_> = (0..8)
            .map(|_| {
                let socket = socket.clone();
                tokio::spawn(async move {
                    let mut served = 0u64;
                    while Instant::now() < until {
                        let answer = request(&socket, Method::GET, "/v1/services").await.unwrap();
                        assert!(answer.status.is_success());
                        served += 1;
                    }
                    served
                })
            })
            .collect();
        let mut total = 0;
        for client in clients {
            total += client.await.unwrap();
        }
        total
    });
    stop(&mut child);

    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!("muster API benchmark");
    println!();
    println!("| measure | result |");
    println!("|---|---|");
    println!(
        "| ensure-fan-in: 1,000 concurrent `ensure` on a healthy service | p50 {}, p99 {}, max {} |",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(latencies[latencies.len() - 1])
    );
    println!(
        "| status-rps: `GET /v1/services` (20 services), 8 clients | {:.0} requests/s |",
        served as f64 / window.as_secs_f64()
    );
}
