//! The command line itself: help, version, usage errors.

use crate::helpers::muster_run;

#[test]
fn help_and_version_succeed() {
    let out = muster_run(&["--help"]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("check"), "{}", out.stdout);
    assert!(out.stdout.contains("graph"), "{}", out.stdout);
    let out = muster_run(&["--version"]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.starts_with("muster "), "{}", out.stdout);
}

#[test]
fn bad_usage_exits_2() {
    assert_eq!(muster_run(&["no-such-command"]).code, 2);
    assert_eq!(muster_run(&["graph", "--dot", "--json"]).code, 2);
    assert_eq!(muster_run(&[]).code, 2);
}

#[test]
fn colour_only_when_asked_or_on_a_terminal() {
    // The test harness's stderr is a pipe: no colour by default, even without NO_COLOR.
    let plain = crate::helpers::run(
        crate::helpers::muster(&["check", "-f", "examples/broken/cycle.toml"])
            .env_remove("NO_COLOR"),
    );
    assert!(!plain.stderr.contains('\x1b'), "{:?}", plain.stderr);
    // An explicit --color always wins over NO_COLOR.
    let coloured = muster_run(&[
        "check",
        "--color",
        "always",
        "-f",
        "examples/broken/cycle.toml",
    ]);
    assert_eq!(coloured.code, 2);
    assert!(coloured.stderr.contains("\x1b["), "{:?}", coloured.stderr);
}
