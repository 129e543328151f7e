//! muster: bring up a graph of long-running services on one host in dependency order,
//! keep exactly one shared instance of each, know whether each is healthy, and say in
//! one line why something is not up.
//!
//! The library holds everything; the `muster` binary only parses arguments and calls in.
//! `config` turns `muster.toml` into a validated [`config::Spec`]; `graph` orders it;
//! `diagnostic` renders problems; `supervisor` runs the services; `daemon` is `muster
//! up` as a library and `starter` what it tells systemd; `cli` implements the
//! subcommands, and `ui` is the terminal dashboard of `muster ui`.

pub mod account;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod diagnostic;
pub mod event;
pub mod fence;
pub mod graph;
pub mod import;
pub mod name;
pub mod proxy;
pub mod router;
pub mod starter;
pub mod store;
pub mod suggest;
pub mod supervisor;
pub mod ui;
