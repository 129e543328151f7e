//! Fuzzes the API's request handling: any bytes a client sends on a connection go
//! through the HTTP parser, the bearer-token check, routing, path and query extraction
//! and the handlers of a real supervisor, and come back as an answer or a closed
//! connection, never a panic.
//!
//! The first byte picks the router: the socket's (no tokens) or the TCP listener's
//! (tokens required; `Bearer control` and `Bearer read` are the valid ones), so both
//! the handlers and the authorization in front of them are reached.
//!
//! The supervisor's services are not started. Their commands are `true`, so an input
//! that asks to start one costs a short-lived process and nothing else; the config
//! file does not exist, so a reload is refused the same way every time.

#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use muster::api;
use muster::supervisor::Supervisor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one input may hold a connection: long enough for every handler that
/// answers at once, short enough that `follow=true` streams do not stall the fuzzer.
const ANSWER_WINDOW: Duration = Duration::from_millis(50);

const CONFIG: &str = r#"
[services.db]
command = ["true"]
restart = "never"

[services.api]
command = ["true"]
restart = "never"
depends-on = ["db"]
autostart = false
"#;

struct Harness {
    runtime: tokio::runtime::Runtime,
    open: axum::Router,
    with_tokens: axum::Router,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("muster-fuzz-api-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("control.token"), "control").expect("token");
        std::fs::write(dir.join("read.token"), "read").expect("token");
        let path = dir.join("muster.toml");
        let mut spec = muster::config::from_source(&path, &path, CONFIG.to_owned())
            .unwrap_or_else(|_| panic!("the fuzz config is valid"))
            .spec;
        spec.settings.state_dir = dir.join("state");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let supervisor = runtime
            .block_on(async { Supervisor::new(spec) })
            .unwrap_or_else(|error| panic!("supervisor: {error}"));
        let supervisor = Arc::new(supervisor);
        let tokens = api::auth::Tokens::load(
            Some(&dir.join("control.token")),
            Some(&dir.join("read.token")),
        )
        .expect("tokens");
        Harness {
            open: api::router(Arc::clone(&supervisor)),
            with_tokens: api::router_with_tokens(supervisor, tokens),
            runtime,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, request)) = data.split_first() else {
        return;
    };
    let harness = harness();
    let router = if pick & 1 == 0 {
        harness.open.clone()
    } else {
        harness.with_tokens.clone()
    };
    harness.runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let serving = tokio::spawn(api::serve::serve_connection(server, router));
        let _ = client.write_all(request).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(ANSWER_WINDOW, client.read_to_end(&mut answer)).await;
        drop(client);
        // The connection ends once the client is gone; a panic in it surfaces here.
        if let Err(error) = serving.await
            && error.is_panic()
        {
            std::panic::resume_unwind(error.into_panic());
        }
    });
});
