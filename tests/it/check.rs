//! `muster check` on the bundled examples and on hostile input.

use std::fs;
use std::path::PathBuf;

use proptest::prelude::*;

use crate::helpers::{check_source, muster, muster_run, repo, run, stable};

/// The broken examples, each with the diagnostic code its first line promises.
fn broken_examples() -> Vec<(PathBuf, String)> {
    let mut examples: Vec<(PathBuf, String)> = fs::read_dir(repo().join("examples/broken"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .map(|path| {
            let bytes = fs::read(&path).unwrap();
            let first = String::from_utf8_lossy(&bytes)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            // `empty.toml` has no room for a comment: it is the empty file.
            let expect = first
                .strip_prefix("# expect: ")
                .map_or("no-services", str::trim)
                .to_owned();
            (path, expect)
        })
        .collect();
    examples.sort();
    examples
}

#[test]
fn every_broken_example_exits_2_with_its_diagnostic() {
    let examples = broken_examples();
    assert!(
        examples.len() >= 15,
        "only {} broken examples",
        examples.len()
    );
    for (path, expect) in examples {
        let relative = path.strip_prefix(repo()).unwrap().display().to_string();
        let out = muster_run(&["check", "--json", "-f", &relative]);
        assert_eq!(out.code, 2, "{relative}: {}", out.stderr);
        let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(report["ok"], false, "{relative}");
        let codes: Vec<&str> = report["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["code"].as_str().unwrap())
            .collect();
        assert!(
            codes.contains(&expect.as_str()),
            "{relative}: expected `{expect}`, got {codes:?}"
        );
        for diagnostic in report["diagnostics"].as_array().unwrap() {
            let unlocated = diagnostic["line"].is_null();
            // Only problems with the file as a whole may lack a place.
            assert!(
                !unlocated || ["unreadable", "no-services"].contains(&expect.as_str()),
                "{relative}: {diagnostic}"
            );
        }
    }
}

#[test]
fn broken_examples_render_like_a_compiler() {
    for (path, _) in broken_examples() {
        let relative = path.strip_prefix(repo()).unwrap().display().to_string();
        let out = muster_run(&["check", "-f", &relative]);
        assert_eq!(out.code, 2);
        assert!(out.stdout.is_empty(), "diagnostics go to stderr");
        let name = format!("check_{}", path.file_stem().unwrap().to_string_lossy());
        insta::assert_snapshot!(name, stable(&out.stderr, &[]));
    }
}

#[test]
fn the_quickstart_is_valid() {
    let out = muster_run(&["check", "-f", "examples/quickstart/muster.toml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "5 services, 4 start waves, no problems\n");
    assert_eq!(out.stderr, "");
}

#[test]
fn the_file_can_come_from_the_environment_or_a_directory() {
    let out = run(muster(&["check"]).env("MUSTER_FILE", "examples/quickstart/muster.toml"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = muster_run(&["check", "-f", "examples/quickstart"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Without either, muster.toml in the current directory.
    let out = run(muster(&["check"]).current_dir(repo().join("examples/quickstart")));
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn a_missing_file_says_how_to_point_at_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(muster(&["check"]).current_dir(dir.path()));
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("cannot read `muster.toml`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("pass its path with -f"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_huge_file_is_refused_without_reading_it_all() {
    // 50 MB of valid-looking TOML comments.
    let line = format!("# {}\n", "x".repeat(1000));
    let out = check_source(line.repeat(50_000).as_bytes(), &[]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("is larger than 4 MiB"),
        "{}",
        out.stderr
    );
}

#[test]
fn warnings_are_shown_but_do_not_fail() {
    let out = check_source(
        b"[services.web]\ncommand = \"python3 -m http.server | tee web.log\"\n",
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "1 service, 1 start wave, 1 warning\n");
    assert!(
        out.stderr.contains("warning[shell-syntax]"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("shell = \"...\""), "{}", out.stderr);
}

#[test]
fn a_state_dir_blocked_by_a_file_is_refused() {
    let source = b"[settings]\nstate-dir = \"state\"\n[services.a]\ncommand = [\"true\"]\n";
    let out = check_source(source, &[("state", "")]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("`settings.state-dir`: `state` is not a directory"),
        "{}",
        out.stderr
    );
}

#[test]
fn json_success_reports_counts() {
    let out = muster_run(&["check", "--json", "-f", "examples/quickstart/muster.toml"]);
    assert_eq!(out.code, 0);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["services"], 5);
    assert_eq!(report["waves"], 4);
    assert_eq!(report["diagnostics"], serde_json::json!([]));
}

#[test]
fn the_json_report_is_a_stable_contract() {
    let out = muster_run(&["check", "--json", "-f", "examples/broken/cycle.toml"]);
    assert_eq!(out.code, 2);
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn every_key_of_the_schema_is_documented() {
    let docs = fs::read_to_string(repo().join("docs/config.md")).unwrap();
    for (table, keys) in muster::config::schema() {
        for key in keys {
            assert!(
                docs.contains(&format!("`{key}`")),
                "docs/config.md does not mention `{key}` of {table}"
            );
        }
    }
}

/// Token soup that looks enough like a config to reach the deeper checks.
fn config_like() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("[services.a]\n".to_owned()),
        Just("[services.b]\n".to_owned()),
        Just("[settings]\n".to_owned()),
        Just("[[hooks]]\n".to_owned()),
        Just("command = [\"sh\"]\n".to_owned()),
        Just("depends-on = [\"a\", \"b\"]\n".to_owned()),
        Just("depends-on = { a = \"completed\" }\n".to_owned()),
        Just("restart = \"always\"\n".to_owned()),
        Just("ports = [1, \"127.0.0.1:1\"]\n".to_owned()),
        Just("ready = { tcp = \"x:1\", log = \"(\" }\n".to_owned()),
        Just("proxy = { listen = \"127.0.0.1:1\" }\n".to_owned()),
        Just("timeout = 5\n".to_owned()),
        Just("\u{e9}\u{0}\"'[]{}=.,\n".to_owned()),
        "[a-z\\-\\[\\]\\{\\}=\"., 0-9\n]{0,40}",
    ];
    proptest::collection::vec(token, 0..30).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_input_makes_the_loader_panic(source in config_like()) {
        let path = std::path::Path::new("/nonexistent/muster.toml");
        // Success or a report: both fine. A panic fails the test.
        if let Err(error) = muster::config::from_source(path, path, source) {
            let report = error.into_report();
            prop_assert!(report.has_errors());
            prop_assert!(report.render_plain().contains("error"));
        }
    }
}
