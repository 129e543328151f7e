//! Reload blind spots: what a reload must see and do, through the real binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::helpers::muster_run;
use crate::helpers::up::{Up, free_port};

/// One HTTP GET through `port`; the status line, or why there was none.
fn get(port: u16) -> Result<String, String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|error| format!("connect: {error}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|error| error.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(|error| format!("write: {error}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|error| format!("read: {error}"))?;
    Ok(answer.lines().next().unwrap_or_default().to_owned())
}

fn config(proxy: Option<(u16, u16)>) -> String {
    let mut text = String::from(
        "[settings]\nstate-dir = \"{dir}/state\"\n\n[services.a]\ncommand = [\"sleep\", \"1000\"]\n",
    );
    if let Some((listen, upstream)) = proxy {
        text.push_str(&format!(
            "\n[services.web]\ncommand = [\"python3\", \"-m\", \"http.server\", \"{upstream}\", \
             \"--bind\", \"127.0.0.1\"]\nautostart = false\n\
             ready = {{ tcp = \"127.0.0.1:{upstream}\", timeout = \"20s\" }}\n\
             proxy = {{ listen = \"127.0.0.1:{listen}\", upstream = \"127.0.0.1:{upstream}\" }}\n"
        ));
    }
    text
}

#[test]
fn reload_blind_spots_a_proxy_added_by_a_reload_listens_when_the_reload_returns() {
    let (listen, upstream) = (free_port(), free_port());
    let mut up = Up::start(&config(None), &[]);
    up.wait_event("a", "ready");
    assert!(
        TcpStream::connect(("127.0.0.1", listen)).is_err(),
        "nothing listens on {listen} before the reload"
    );
    let file = up.path("muster.toml");
    let dir = up.path("");
    std::fs::write(
        &file,
        config(Some((listen, upstream))).replace("{dir}", &dir.display().to_string()),
    )
    .unwrap();
    let reloaded = muster_run(&["reload", "-f", file.to_str().unwrap()]);
    assert_eq!(reloaded.code, 0, "{}{}", reloaded.stdout, reloaded.stderr);
    // At once: the proxy listens, and its first connection starts the service.
    let status = get(listen).unwrap_or_else(|error| panic!("through the new proxy: {error}"));
    assert!(status.contains("200"), "{status}");
    up.wait_event("web", "ready");

    // Removed by the next reload: its listener closes with it.
    std::fs::write(
        &file,
        config(None).replace("{dir}", &dir.display().to_string()),
    )
    .unwrap();
    let reloaded = muster_run(&["reload", "-f", file.to_str().unwrap()]);
    assert_eq!(reloaded.code, 0, "{}{}", reloaded.stdout, reloaded.stderr);
    assert!(
        TcpStream::connect(("127.0.0.1", listen)).is_err(),
        "the proxy of a removed service still listens on {listen}"
    );
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}

#[test]
fn reload_blind_spots_a_reload_that_moves_the_state_directory_is_refused() {
    let mut up = Up::start(&config(None), &[]);
    up.wait_event("a", "ready");
    let file = up.path("muster.toml");
    let dir = up.path("");
    let moved = config(None)
        .replace("{dir}/state", &format!("{}/elsewhere", dir.display()))
        .replace("{dir}", &dir.display().to_string());
    std::fs::write(&file, moved).unwrap();
    let state = format!("{}/state", dir.display());
    let reloaded = muster_run(&[
        "reload",
        "-f",
        file.to_str().unwrap(),
        "--state-dir",
        &state,
    ]);
    assert_eq!(reloaded.code, 1, "{}{}", reloaded.stdout, reloaded.stderr);
    assert!(
        reloaded.stderr.contains("cannot move it") && reloaded.stderr.contains("elsewhere"),
        "{}",
        reloaded.stderr
    );
    // Nothing changed: the service kept its process.
    let status = muster_run(&[
        "status",
        "a",
        "-f",
        file.to_str().unwrap(),
        "--state-dir",
        &state,
    ]);
    assert_eq!(status.code, 0, "{}{}", status.stdout, status.stderr);
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}
