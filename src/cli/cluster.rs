//! `muster cluster [--json]`: the hosts of this supervisor's cluster and its singletons
//! (owner, fence, endpoint, state); and `muster status --cluster`: every host's
//! services. Both ask the local supervisor, which reads etcd.

use std::process::ExitCode;

use clap::Args;
use hyper::Method;

use super::control::{call, exit_for, typed};
use super::out::{errln, out};
use super::{GlobalArgs, print_json};
use crate::cluster::view::{ClusterServices, ClusterView};

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 once etcd has answered; 1 when etcd or the supervisor did \
    not; 2 when the config has no [cluster]."
)]
pub struct ClusterArgs {
    /// Print the API's JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(global: &GlobalArgs, args: &ClusterArgs) -> ExitCode {
    let answer = match call(global, Method::GET, "/v1/cluster") {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    match typed::<ClusterView>(&answer) {
        Ok(Ok(view)) => {
            if args.json {
                print_json(&answer.body);
            } else {
                out!("{}", cluster_table(&view));
            }
            ExitCode::SUCCESS
        }
        Ok(Err(error)) => {
            errln!("muster: {}", error.error.message);
            exit_for(&error)
        }
        Err(code) => code,
    }
}

/// `muster status --cluster`.
pub fn services(global: &GlobalArgs, json: bool) -> ExitCode {
    let answer = match call(global, Method::GET, "/v1/cluster/services") {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    match typed::<ClusterServices>(&answer) {
        Ok(Ok(view)) => {
            if json {
                print_json(&answer.body);
            } else {
                out!("{}", services_table(&view));
            }
            ExitCode::SUCCESS
        }
        Ok(Err(error)) => {
            errln!("muster: {}", error.error.message);
            exit_for(&error)
        }
        Err(code) => code,
    }
}

fn dash<T: ToString>(value: Option<T>) -> String {
    value.map_or("-".to_owned(), |v| v.to_string())
}

fn cluster_table(view: &ClusterView) -> String {
    let mut out = format!(
        "cluster {} (asked host {}): {} of {} hosts alive\n\n",
        view.cluster,
        view.host,
        view.hosts.iter().filter(|h| h.alive).count(),
        view.hosts.len()
    );
    let width = view
        .hosts
        .iter()
        .map(|h| h.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    out.push_str(&format!(
        "{:<width$}  {:<22}  {:<5}  {:>8}\n",
        "HOST", "ADDRESS", "ALIVE", "PID"
    ));
    for host in &view.hosts {
        out.push_str(&format!(
            "{:<width$}  {:<22}  {:<5}  {:>8}\n",
            host.name,
            host.address,
            if host.alive { "yes" } else { "no" },
            dash(host.pid),
        ));
    }
    if view.singletons.is_empty() {
        out.push_str("\nno singletons\n");
        return out;
    }
    let width = view
        .singletons
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(9)
        .max(9);
    out.push_str(&format!(
        "\n{:<width$}  {:<12}  {:>8}  {:<22}  STATE\n",
        "SINGLETON", "OWNER", "FENCE", "ENDPOINT"
    ));
    for singleton in &view.singletons {
        out.push_str(&format!(
            "{:<width$}  {:<12}  {:>8}  {:<22}  {}\n",
            singleton.name,
            dash(singleton.owner.as_deref()),
            dash(singleton.fence),
            dash(singleton.endpoint.as_deref()),
            singleton.state,
        ));
    }
    out
}

fn services_table(view: &ClusterServices) -> String {
    let mut out = format!("cluster {} (asked host {})\n\n", view.cluster, view.host);
    let host_width = view
        .hosts
        .iter()
        .map(|h| h.host.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let shown = |service: &crate::cluster::view::RemoteService| {
        if service.singleton {
            format!("{} (singleton)", service.name)
        } else {
            service.name.clone()
        }
    };
    let name_width = view
        .hosts
        .iter()
        .flat_map(|h| h.services.iter().map(|s| shown(s).len()))
        .max()
        .unwrap_or(7)
        .max(7);
    out.push_str(&format!(
        "{:<host_width$}  {:<name_width$}  {:<9}  {:>5}  {:>8}  ENDPOINT\n",
        "HOST", "SERVICE", "STATE", "RUN", "PID"
    ));
    for host in &view.hosts {
        if !host.alive {
            out.push_str(&format!(
                "{:<host_width$}  {:<name_width$}  {:<9}  {:>5}  {:>8}  -\n",
                host.host, "-", "gone", "-", "-"
            ));
            continue;
        }
        for service in &host.services {
            let name = shown(service);
            out.push_str(&format!(
                "{:<host_width$}  {:<name_width$}  {:<9}  {:>5}  {:>8}  {}\n",
                host.host,
                name,
                service.state,
                service.run_id,
                dash(service.pid),
                dash(service.endpoint.as_deref()),
            ));
        }
    }
    out
}
