//! The proxy's cost, measured side by side with a direct connection in one run:
//!
//! - throughput: one connection streaming 256 MiB from the upstream, direct and through
//!   muster's proxy, alternated, best of 5 each;
//! - latency: 64-byte request/answer round trips on one connection, median and p99,
//!   direct and proxied;
//! - cold start: a client connecting to a stopped on-demand service whose upstream
//!   takes 0.5 s to listen: the time from its listening to the answer, and from the
//!   connection to the upstream process running its first instruction.
//!
//! The upstream for the first two is a tokio server in this process (so the upstream is
//! never the bottleneck); muster supervises a placeholder and proxies to it.
//!
//!     cargo bench --bench proxy

// A benchmark unwraps freely: a panic is how it reports a broken assumption.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime};

use hyper::Method;
use muster::api::client::request;
use support::{free_port, micros, millis, percentile, stop, up, wait_for_ready};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STREAM: u64 = 256 * 1024 * 1024;
const ROUND_TRIPS: usize = 10_000;

/// The in-process upstream: a connection that starts with `s` gets STREAM bytes; any
/// other byte is echoed.
fn upstream(runtime: &tokio::runtime::Runtime) -> SocketAddr {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap();
    runtime.spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 64 * 1024];
                let Ok(n) = stream.read(&mut buffer).await else {
                    return;
                };
                if n > 0 && buffer[0] == b's' {
                    let chunk = vec![7u8; 256 * 1024];
                    let mut left = STREAM;
                    while left > 0 {
                        let take = left.min(chunk.len() as u64) as usize;
                        if stream.write_all(&chunk[..take]).await.is_err() {
                            return;
                        }
                        left -= take as u64;
                    }
                    return;
                }
                let mut n = n;
                loop {
                    if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                    n = match stream.read(&mut buffer).await {
                        Ok(n) => n,
                        Err(_) => return,
                    };
                }
            });
        }
    });
    address
}

/// MiB/s of one streamed download.
fn throughput(port: u16) -> f64 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"s").unwrap();
    let mut buffer = vec![0u8; 256 * 1024];
    let began = Instant::now();
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    assert_eq!(total, STREAM);
    total as f64 / 1_048_576.0 / began.elapsed().as_secs_f64()
}

/// Round-trip times of 64-byte exchanges on one connection, sorted.
fn round_trips(port: u16) -> Vec<Duration> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_nodelay(true).unwrap();
    let message = [b'x'; 64];
    let mut answer = [0u8; 64];
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let began = Instant::now();
        stream.write_all(&message).unwrap();
        stream.read_exact(&mut answer).unwrap();
        times.push(began.elapsed());
    }
    times.sort();
    times
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let upstream = upstream(&runtime);
    let listen = free_port();
    let cold_listen = free_port();
    let cold_upstream = free_port();
    let dir = tempfile::tempdir().unwrap();
    let stamps = dir.path().join("stamps");
    // The cold service writes when it began and when it listens, then answers "ok".
    let cold = format!(
        "import socket,time\nbegan=time.time()\ntime.sleep(0.5)\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('127.0.0.1',{cold_upstream}))\ns.listen(64)\nopen('{}','a').write(f'{{began}} {{time.time()}}\\n')\nwhile True:\n    c,_=s.accept()\n    c.recv(10)\n    c.sendall(b'ok')\n    c.close()\n",
        stamps.display()
    );
    let config = format!(
        r#"[settings]
state-dir = "{dir}/state"

[services.placeholder]
command = ["sleep", "3600"]
proxy = {{ listen = "127.0.0.1:{listen}", upstream = "{upstream}" }}

[services.cold]
command = ["python3", "-c", '''{cold}''']
autostart = false
ready = {{ tcp = "127.0.0.1:{cold_upstream}", interval = "5ms", timeout = "20s" }}
proxy = {{ listen = "127.0.0.1:{cold_listen}", upstream = "127.0.0.1:{cold_upstream}" }}
"#,
        dir = dir.path().display()
    );
    let file = dir.path().join("proxy.toml");
    std::fs::write(&file, config).unwrap();
    let (mut child, mut lines) = up(&file);
    wait_for_ready(&mut lines, 1);
    let direct_port = upstream.port();

    // Warm both paths once.
    throughput(direct_port);
    throughput(listen);
    let (mut direct, mut proxied) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        direct.push(throughput(direct_port));
        proxied.push(throughput(listen));
    }
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let (direct_best, proxied_best) = (best(&direct), best(&proxied));

    let direct_rtt = round_trips(direct_port);
    let proxied_rtt = round_trips(listen);
    let direct_p50 = percentile(&direct_rtt, 0.5);
    let proxied_p50 = percentile(&proxied_rtt, 0.5);

    // Cold starts: connect, get the answer, then stop the service through the API.
    let socket = dir.path().join("state/muster.sock");
    let mut overheads = Vec::new();
    let mut spawns = Vec::new();
    for _ in 0..5 {
        let asked = SystemTime::now();
        let mut stream = TcpStream::connect(("127.0.0.1", cold_listen)).unwrap();
        stream.write_all(b"hi").unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let answered = SystemTime::now();
        assert_eq!(answer, b"ok");
        let text = std::fs::read_to_string(&stamps).unwrap();
        let last = text.lines().last().unwrap();
        let mut parts = last.split(' ').map(|t| t.parse::<f64>().unwrap());
        let (began, listening) = (parts.next().unwrap(), parts.next().unwrap());
        let since_epoch = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        };
        // Before the upstream's first instruction: muster's spawn and the interpreter's
        // start-up. After it listens: readiness noticed, the waiting client forwarded.
        spawns.push(Duration::from_secs_f64(
            (began - since_epoch(asked)).max(0.0),
        ));
        overheads.push(Duration::from_secs_f64(
            (since_epoch(answered) - listening).max(0.0),
        ));
        runtime
            .block_on(request(&socket, Method::POST, "/v1/services/cold/stop"))
            .unwrap();
    }
    overheads.sort();
    spawns.sort();
    stop(&mut child);
    // Part of each cold start is the interpreter starting before it takes its first
    // timestamp; shown on its own so it is not mistaken for muster's.
    let mut interpreter: Vec<Duration> = (0..5)
        .map(|_| {
            let began = Instant::now();
            let status = std::process::Command::new("python3")
                .args(["-c", "import socket,time"])
                .status()
                .unwrap();
            assert!(status.success());
            began.elapsed()
        })
        .collect();
    interpreter.sort();

    println!("| measure | direct | through muster | ratio / added |");
    println!("|---|---|---|---|");
    println!(
        "| throughput, one connection, 256 MiB (best of 5) | {direct_best:.0} MiB/s | {proxied_best:.0} MiB/s | {:.0} % |",
        proxied_best / direct_best * 100.0
    );
    println!(
        "| round trip, 64 B, median of {ROUND_TRIPS} | {} | {} | +{} |",
        micros(direct_p50),
        micros(proxied_p50),
        micros(proxied_p50.saturating_sub(direct_p50))
    );
    println!(
        "| round trip, p99 | {} | {} | +{} |",
        micros(percentile(&direct_rtt, 0.99)),
        micros(percentile(&proxied_rtt, 0.99)),
        micros(percentile(&proxied_rtt, 0.99).saturating_sub(percentile(&direct_rtt, 0.99)))
    );
    println!(
        "| cold start: upstream listening to the waiting client answered (median of 5) | | {} | |",
        millis(overheads[overheads.len() / 2])
    );
    println!(
        "| cold start: client connected to the upstream's first instruction (median of 5) | | {} | |",
        millis(spawns[spawns.len() / 2])
    );
    println!(
        "| of which python3 starting up (measured apart, median of 5) | | {} | |",
        millis(interpreter[interpreter.len() / 2])
    );
}
