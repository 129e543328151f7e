//! `muster graph`: waves as text, dot and JSON.

use crate::helpers::muster_run;

#[test]
fn the_quickstart_graph_as_text() {
    let out = muster_run(&["graph", "-f", "examples/quickstart/muster.toml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn the_quickstart_graph_as_dot() {
    let out = muster_run(&["graph", "--dot", "-f", "examples/quickstart/muster.toml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn the_json_graph_orders_every_service_after_its_dependencies() {
    let out = muster_run(&["graph", "--json", "-f", "examples/quickstart/muster.toml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let graph: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let services = graph["services"].as_array().unwrap();
    assert_eq!(services.len(), 5);
    let wave_of = |name: &str| {
        services.iter().find(|s| s["name"] == name).unwrap()["wave"]
            .as_u64()
            .unwrap()
    };
    for service in services {
        for dep in service["depends_on"].as_array().unwrap() {
            let dep_name = dep["service"].as_str().unwrap();
            assert!(wave_of(dep_name) < service["wave"].as_u64().unwrap());
        }
    }
    assert_eq!(graph["waves"][0], serde_json::json!(["store"]));
}

#[test]
fn a_broken_config_has_no_graph() {
    let out = muster_run(&["graph", "-f", "examples/broken/cycle.toml"]);
    assert_eq!(out.code, 2);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr.contains("dependency cycle: `a -> b -> c -> a`"),
        "{}",
        out.stderr
    );
}
