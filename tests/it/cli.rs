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
