//! Integration tests: the real `muster` binary on real files.
//!
//! One test binary (so cargo links once); each area in its own module, shared set-up in
//! `helpers`.

// Tests unwrap freely: a panic is exactly how a test reports a broken assumption.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod bounds;
mod chaos;
mod check;
mod check_hardening;
mod citizen;
mod cli;
mod cli_hardening;
mod cluster;
mod config_files;
mod control;
mod faults;
mod follow;
mod graph;
mod graph_owner;
mod health;
mod helpers;
mod history;
mod hooks;
mod import;
mod logs_by_time;
mod per_service;
mod process_hardening;
mod proxy;
mod reload_hardening;
mod replicas;
mod router;
mod run_once;
mod scale;
mod security;
mod signals;
mod start_paths;
mod typed_api;
mod ui;
mod up;
mod up_output;
