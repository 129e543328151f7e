//! `GET /metrics`: the supervisor's numbers in Prometheus text format, written from one
//! table of metric families.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::response::IntoResponse;

use crate::supervisor::{Phase, ServiceHandle, Status, Supervisor};

/// Services by state, per-service health, restarts, probe failures and resource use
/// (read from `/proc` as the scrape is answered), ensure calls and the time callers
/// waited in them.
#[utoipa::path(get, path = "/metrics", tag = "supervisor",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(supervisor): State<Arc<Supervisor>>) -> impl IntoResponse {
    let handles = supervisor.services();
    let statuses: Vec<_> = handles.iter().map(|h| h.status()).collect();
    let used = supervisor.resource_use(&handles).await;
    // One sample per running service: a stopped one uses nothing worth a line.
    let per_running = |value: &dyn Fn(&crate::supervisor::resources::Use) -> Option<String>| {
        handles
            .iter()
            .filter_map(|h| {
                let value = value(used.get(h.name())?)?;
                Some((format!("{{service=\"{}\"}}", h.name()), value))
            })
            .collect::<Vec<(String, String)>>()
    };
    let per_service = |value: &dyn Fn(&Status) -> String| -> Vec<(String, String)> {
        statuses
            .iter()
            .map(|s| (format!("{{service=\"{}\"}}", s.service), value(s)))
            .collect()
    };
    let by_state: Vec<(String, String)> = Phase::ALL
        .iter()
        .map(|&phase| {
            let count = statuses.iter().filter(|s| s.phase == phase).count();
            (format!("{{state=\"{phase}\"}}"), count.to_string())
        })
        .collect();
    // Proxies: one sample per proxied service (two for bytes, one per direction).
    let proxied: Vec<_> = handles
        .iter()
        .filter(|h| h.service.proxy.is_some())
        .collect();
    let per_proxy = |value: &dyn Fn(&ServiceHandle) -> String| -> Vec<(String, String)> {
        proxied
            .iter()
            .map(|h| (format!("{{service=\"{}\"}}", h.name()), value(h)))
            .collect()
    };
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Relaxed).to_string();
    // Routed services: one sample per service that serves models.
    let routed: Vec<_> = handles
        .iter()
        .filter(|h| h.service.routing.is_some())
        .collect();
    let per_model = |value: &dyn Fn(&ServiceHandle) -> String| -> Vec<(String, String)> {
        routed
            .iter()
            .map(|h| (format!("{{service=\"{}\"}}", h.name()), value(h)))
            .collect()
    };
    let seconds =
        |counter: &std::sync::atomic::AtomicU64| (counter.load(Relaxed) as f64 / 1e6).to_string();
    let bytes: Vec<(String, String)> = proxied
        .iter()
        .flat_map(|h| {
            let counters = &h.usage.proxy;
            [
                (
                    format!("{{service=\"{}\",direction=\"in\"}}", h.name()),
                    load(&counters.bytes_in),
                ),
                (
                    format!("{{service=\"{}\",direction=\"out\"}}", h.name()),
                    load(&counters.bytes_out),
                ),
            ]
        })
        .collect();
    let counters = &supervisor.counters;
    let single = |value: String| vec![(String::new(), value)];
    let families = [
        ("muster_services", "gauge", "Services by state.", by_state),
        (
            "muster_service_up",
            "gauge",
            "1 when the service is healthy.",
            per_service(&|s| u8::from(s.phase == Phase::Healthy).to_string()),
        ),
        (
            "muster_restarts_total",
            "counter",
            "Restarts of each service.",
            per_service(&|s| s.restarts.to_string()),
        ),
        (
            "muster_probe_failures_total",
            "counter",
            "Failed probe attempts of each service.",
            per_service(&|s| s.probe_failures.to_string()),
        ),
        (
            "muster_service_cpu_percent",
            "gauge",
            "CPU use of each running service's process group, in percent of one CPU, since the previous reading (by a scrape or a status request); for a run not read before, since its start if under 2 s ago, else over a 0.25 s sample.",
            per_running(&|u| Some(format!("{:.1}", u.cpu_percent))),
        ),
        (
            "muster_service_memory_rss_bytes",
            "gauge",
            "Resident memory of each running service's process group, summed over its processes.",
            per_running(&|u| Some(u.rss.to_string())),
        ),
        (
            "muster_service_memory_pss_bytes",
            "gauge",
            "Proportional memory (PSS) of each running service's process group: shared pages divided among their sharers.",
            per_running(&|u| u.pss.map(|pss| pss.to_string())),
        ),
        (
            "muster_service_processes",
            "gauge",
            "Live processes in each running service's process group.",
            per_running(&|u| Some(u.processes.to_string())),
        ),
        (
            "muster_ensure_calls_total",
            "counter",
            "ensure requests answered.",
            single(counters.ensure_calls.load(Relaxed).to_string()),
        ),
        (
            "muster_ensure_failures_total",
            "counter",
            "ensure requests that did not end healthy.",
            single(counters.ensure_failures.load(Relaxed).to_string()),
        ),
        (
            "muster_ensure_wait_seconds_total",
            "counter",
            "Time callers spent waiting in ensure.",
            single((counters.ensure_wait_micros.load(Relaxed) as f64 / 1e6).to_string()),
        ),
        (
            "muster_proxy_connections_open",
            "gauge",
            "Proxied connections open now, waiting or forwarded.",
            per_proxy(&|h| h.usage.activity().open.to_string()),
        ),
        (
            "muster_proxy_connections_waiting",
            "gauge",
            "Proxied connections waiting for a start now.",
            per_proxy(&|h| load(&h.usage.proxy.waiting)),
        ),
        (
            "muster_proxy_connections_total",
            "counter",
            "Proxied connections forwarded to the service.",
            per_proxy(&|h| load(&h.usage.proxy.served)),
        ),
        (
            "muster_proxy_refused_total",
            "counter",
            "Proxied connections turned away: start failed or timed out, or too many waiting.",
            per_proxy(&|h| load(&h.usage.proxy.refused)),
        ),
        (
            "muster_proxy_bytes_total",
            "counter",
            "Bytes through each proxy, by direction (in: to the service).",
            bytes,
        ),
        (
            "muster_proxy_start_wait_seconds_total",
            "counter",
            "Time proxied connections spent waiting for starts.",
            per_proxy(&|h| (h.usage.proxy.wait_micros.load(Relaxed) as f64 / 1e6).to_string()),
        ),
        (
            "muster_model_requests_total",
            "counter",
            "Requests the router sent toward each service that serves models.",
            per_model(&|h| load(&h.usage.route.requests)),
        ),
        (
            "muster_model_failed_total",
            "counter",
            "Requests the router answered with an error itself (queue full, load failed, timed out).",
            per_model(&|h| load(&h.usage.route.failed)),
        ),
        (
            "muster_model_in_flight",
            "gauge",
            "Routed requests being answered now.",
            per_model(&|h| load(&h.usage.route.in_flight)),
        ),
        (
            "muster_model_queued",
            "gauge",
            "Routed requests waiting now: for room in the pool, the load, or a slot.",
            per_model(&|h| load(&h.usage.route.queued)),
        ),
        (
            "muster_model_queue_seconds_total",
            "counter",
            "Time routed requests waited before they were sent.",
            per_model(&|h| seconds(&h.usage.route.queue_micros)),
        ),
        (
            "muster_model_loads_total",
            "counter",
            "Starts that routed requests waited for.",
            per_model(&|h| load(&h.usage.route.loads)),
        ),
        (
            "muster_model_load_seconds_total",
            "counter",
            "Time those starts took.",
            per_model(&|h| seconds(&h.usage.route.load_micros)),
        ),
        (
            "muster_model_evictions_total",
            "counter",
            "Times a service was stopped to make room for another member of its pool.",
            per_model(&|h| load(&h.usage.route.evictions)),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, samples) in families {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
}
