//! The model router: one OpenAI-compatible front door (`[router] listen`) that sends
//! each request to the service serving the model it names, starting that service on
//! demand and stopping others to keep a pool within its budget.
//!
//! A request's way: its body is read (up to `max-body`), its model found
//! ([`request`]), its service looked up in the config in force. It then holds a
//! [`budget::Ticket`]: it queues (up to `max-queued`), is admitted once its service runs
//! or has room in its pool, waits for the service to be healthy through the same
//! single-flight `ensure` as every client, takes a `max-concurrent` permit, and is
//! forwarded ([`forward`]). The answer streams back as the server produces it; the
//! ticket (which counts the request in flight, and as use for `idle-stop`) ends with
//! the last byte or when the client goes away. Whatever the router answers itself is in
//! OpenAI's error shape ([`openai`]), with muster's cause chain and the log tail.

mod budget;
mod forward;
mod openai;
mod request;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::api::serve::AcceptLoop as Serving;
use crate::config::{Routing, Service, Spec};
use crate::supervisor::{Failure, Lifecycle, Phase, Supervisor};
use budget::{NotAdmitted, Scheduler};
use openai::{Refusal, json_response};

/// Every answer's body: a whole one the router wrote, or a server's, streamed.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The router's listener, bound before any service starts so that a clash is known at
/// once.
pub async fn bind(spec: &Spec) -> Result<Option<TcpListener>, String> {
    let Some(router) = &spec.router else {
        return Ok(None);
    };
    TcpListener::bind(router.listen)
        .await
        .map(Some)
        .map_err(|error| listen_error(router.listen, &error))
}

fn listen_error(address: SocketAddr, error: &std::io::Error) -> String {
    let why = if error.kind() == std::io::ErrorKind::AddrInUse {
        crate::supervisor::ports::in_use(
            &crate::config::Port {
                ip: Some(address.ip()),
                port: address.port(),
            },
            &|_| None,
        )
    } else {
        error.to_string()
    };
    format!("cannot listen on {address} (router.listen): {why}")
}

/// Serves the router and keeps its listener in step with the config in force: a reload
/// that adds `[router]` or moves its `listen` binds it, one that removes it closes it;
/// once the supervisor is done, it closes.
pub async fn manage(supervisor: Arc<Supervisor>, bound: Option<TcpListener>) {
    let router = Arc::new(Router {
        scheduler: Scheduler::new(Arc::clone(&supervisor)),
        client: forward::client(),
        supervisor: Arc::clone(&supervisor),
    });
    let mut serving: Option<(SocketAddr, Serving)> = bound.and_then(|listener| {
        let address = listener.local_addr().ok()?;
        Some((address, start_serving(listener, &router)))
    });
    let mut graph = supervisor.watch_graph();
    loop {
        let current = Arc::clone(&graph.borrow_and_update());
        if current.lifecycle == Lifecycle::Done {
            if let Some((_, serving)) = serving.take() {
                serving.close().await;
            }
            return;
        }
        let wanted = current.spec.router.as_ref().map(|r| r.listen);
        if serving.as_ref().map(|(address, _)| *address) != wanted {
            if let Some((_, old)) = serving.take() {
                old.close().await;
            }
            if let Some(address) = wanted {
                match TcpListener::bind(address).await {
                    Ok(listener) => serving = Some((address, start_serving(listener, &router))),
                    Err(error) => crate::supervisor::warn(format_args!(
                        "{}; clients cannot reach the router until the address is free and \
                         the config is reloaded",
                        listen_error(address, &error)
                    )),
                }
            }
        }
        if graph.changed().await.is_err() {
            return;
        }
    }
}

/// Starts the router's accept loop.
fn start_serving(listener: TcpListener, router: &Arc<Router>) -> Serving {
    let router = Arc::clone(router);
    Serving::start(listener, "the router".to_owned(), move |client| {
        tokio::spawn(connection(Arc::clone(&router), client));
    })
}

/// What every request needs.
#[derive(Debug)]
struct Router {
    supervisor: Arc<Supervisor>,
    scheduler: Arc<Scheduler>,
    client: forward::Client,
}

/// One client connection: HTTP/1.1 with keep-alive.
async fn connection(router: Arc<Router>, stream: tokio::net::TcpStream) {
    let service = hyper::service::service_fn(move |request| {
        let router = Arc::clone(&router);
        async move { Ok::<_, std::convert::Infallible>(handle(router, request).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn handle(router: Arc<Router>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let method = request.method().clone();
    match (method, path.as_str()) {
        (Method::GET, "/v1/models" | "/models") => list_models(&router),
        (Method::GET, one) if one.starts_with("/v1/models/") => {
            let id = one.trim_start_matches("/v1/models/");
            one_model(&router, id)
        }
        (Method::GET, "/health") => json_response(StatusCode::OK, &json!({ "status": "ok" })),
        _ => match route(&router, request).await {
            Ok(response) => response,
            Err(refusal) => refusal.response(),
        },
    }
}

/// `GET /v1/models`: every model name (aliases included) with its service's state.
fn list_models(router: &Router) -> Response<Body> {
    let spec = router.supervisor.spec();
    let data: Vec<serde_json::Value> = spec
        .services
        .values()
        .filter_map(|service| Some((service, service.routing.as_ref()?)))
        .flat_map(|(service, routing)| {
            routing
                .models
                .iter()
                .map(move |model| model_entry(router, service, routing, model))
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "object": "list", "data": data }))
}

fn one_model(router: &Router, id: &str) -> Response<Body> {
    let spec = router.supervisor.spec();
    match spec.route_of(id) {
        Some((service, routing)) => {
            json_response(StatusCode::OK, &model_entry(router, service, routing, id))
        }
        None => unknown_model(&spec, id).response(),
    }
}

fn model_entry(
    router: &Router,
    service: &Service,
    routing: &Routing,
    model: &str,
) -> serde_json::Value {
    let handle = router.supervisor.service(service.name.as_str());
    let status = handle.as_ref().map(|h| h.status());
    let (queued, in_flight, evicting) = router.scheduler.figures(&service.name);
    let route = handle.as_ref().map(|h| &h.usage.route);
    let last_used_ms = route.map_or(0, |r| r.last_used_ms.load(Relaxed));
    let last_load = route.map_or(0, |r| r.last_load_micros.load(Relaxed));
    json!({
        "id": model,
        "object": "model",
        "created": 0,
        "owned_by": "muster",
        "service": service.name.as_str(),
        "aliases": routing.models.iter().filter(|m| *m != model).collect::<Vec<_>>(),
        "state": status.as_ref().map_or("stopped", |s| s.phase.as_str()),
        "evicting": evicting,
        "in_flight": in_flight,
        "queued": queued,
        "last_used": (last_used_ms > 0).then(|| {
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + Duration::from_millis(last_used_ms),
            )
            .to_string()
        }),
        "load_seconds": (last_load > 0).then(|| last_load as f64 / 1e6),
        "pool": service.member.as_ref().map(|m| m.pool.as_str()),
    })
}

fn unknown_model(spec: &Spec, model: &str) -> Refusal {
    let names: Vec<&str> = spec
        .services
        .values()
        .filter_map(|s| s.routing.as_ref())
        .flat_map(|r| r.models.iter().map(String::as_str))
        .collect();
    let nearest = crate::suggest::nearest_few(model, names.iter().copied(), 3);
    let message = if nearest.is_empty() {
        format!("The model `{model}` does not exist: no model is served here")
    } else {
        let listed: Vec<String> = nearest.iter().map(|m| format!("`{m}`")).collect();
        format!(
            "The model `{model}` does not exist; the nearest served here: {}",
            listed.join(", ")
        )
    };
    Refusal::new(StatusCode::NOT_FOUND, "model_not_found", message).param("model")
}

/// Routes one request by its model.
async fn route(router: &Router, request: Request<Incoming>) -> Result<Response<Body>, Refusal> {
    let supervisor = &router.supervisor;
    if *supervisor.closing().borrow() {
        return Err(shutting_down());
    }
    let spec = supervisor.spec();
    let Some(settings) = spec.router.clone() else {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_router",
            "the router was removed from the config",
        ));
    };
    let (parts, body) = request.into_parts();
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!(
                "the request body is larger than {} (router.max-body)",
                crate::config::values::human_size(settings.max_body)
            ),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > settings.max_body) {
        return Err(too_large());
    }
    let limit = usize::try_from(settings.max_body).unwrap_or(usize::MAX);
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(error) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                format!("the request body could not be read: {error}"),
            ));
        }
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let model = request::model_of(parts.uri.query(), content_type, &body).map_err(|why| {
        Refusal::new(StatusCode::BAD_REQUEST, "invalid_model", why.message()).param("model")
    })?;
    let (service, routing) = spec
        .route_of(&model)
        .ok_or_else(|| unknown_model(&spec, &model))?;
    let name = service.name.clone();
    let routing = routing.clone();
    let handle = supervisor
        .service(name.as_str())
        .ok_or_else(|| unknown_model(&spec, &model))?;
    // Use, for idle-stop, from arrival to the end of the answer.
    let in_use = handle.usage.connection();
    let mut ticket = router
        .scheduler
        .enter(
            &name,
            std::sync::Arc::clone(&handle.usage),
            routing.max_queued,
        )
        .map_err(|refusal| refused(&handle.usage, not_admitted(&model, &name, refusal)))?;
    let began = Instant::now();
    let deadline = began
        + settings
            .request_timeout
            .unwrap_or_else(|| spec.start_budget(&name));
    router
        .scheduler
        .admit(&mut ticket, deadline)
        .await
        .map_err(|refusal| refused(&handle.usage, not_admitted(&model, &name, refusal)))?;
    let now = handle.status();
    let loading = now.phase != Phase::Healthy;
    let left = deadline.saturating_duration_since(Instant::now());
    // Healthy: no need to ask the owner (a server that died meanwhile is found when the
    // connection is refused, and waited for like a crash).
    let ensured = if loading {
        supervisor.ensure(name.as_str(), left).await
    } else {
        Ok(now)
    };
    let status = match ensured {
        Ok(status) => {
            if loading {
                router
                    .scheduler
                    .loaded(&name, status.run_id, began.elapsed());
            } else {
                router.scheduler.loaded(&name, 0, Duration::ZERO);
            }
            status
        }
        Err(failure) => {
            router.scheduler.loaded(&name, 0, Duration::ZERO);
            // A load cut short by the shutdown says so, not that the model failed.
            let refusal = if *supervisor.closing().borrow() {
                shutting_down()
            } else {
                not_loaded(&model, failure)
            };
            return Err(refused(&handle.usage, refusal));
        }
    };
    let permit = match routing.max_concurrent {
        None => None,
        Some(max) => {
            let permits = router.scheduler.permits(&name, max);
            match tokio::time::timeout_at(deadline, permits.acquire_owned()).await {
                Ok(Ok(permit)) => Some(permit),
                _ => {
                    return Err(refused(
                        &handle.usage,
                        Refusal::new(
                            StatusCode::TOO_MANY_REQUESTS,
                            "model_busy",
                            format!(
                                "`{model}` is answering {max} requests (max-concurrent) and no slot \
                                 came free in time"
                            ),
                        )
                        .retry_after(1),
                    ));
                }
            }
        }
    };
    ticket.forwarding();
    let sent = forward::send(router, &parts, body, &routing, status, &handle, deadline).await;
    match sent {
        Ok(response) => Ok(forward::tracked(response, ticket, in_use, permit)),
        Err(refusal) => Err(refused(&handle.usage, refusal)),
    }
}

/// Counts a request the router answered itself.
fn refused(usage: &crate::supervisor::usage::Usage, refusal: Refusal) -> Refusal {
    usage.route.failed.fetch_add(1, Relaxed);
    refusal
}

fn shutting_down() -> Refusal {
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        Failure::ShuttingDown.to_string(),
    )
}

fn not_admitted(model: &str, name: &crate::config::ServiceName, why: NotAdmitted) -> Refusal {
    match why {
        NotAdmitted::QueueFull(limit) => Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            format!(
                "{limit} requests for `{model}` are already waiting (services.{name}.max-queued)"
            ),
        )
        .retry_after(1),
        NotAdmitted::Timeout { waiting_for } => {
            let held = waiting_for
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ");
            Refusal::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!("`{model}` found no room in its pool in time: {held} still held it"),
            )
        }
        NotAdmitted::Gone => Refusal::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("`{model}` was removed from the config"),
        )
        .param("model"),
    }
}

fn not_loaded(model: &str, failure: Failure) -> Refusal {
    match failure {
        Failure::ShuttingDown => shutting_down(),
        Failure::Refused(why) => {
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "model_unavailable", why)
        }
        Failure::Unknown(name) => Refusal::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("`{name}` was removed from the config"),
        ),
        Failure::NotHealthy(explanation) => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "model_unavailable",
            format!("`{model}` could not be loaded"),
        )
        .cause(
            crate::supervisor::chain(&explanation.cause),
            explanation.log_tail.clone(),
        ),
        Failure::Timeout { after, explanation } => Refusal::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "`{model}` was not ready within {}",
                crate::supervisor::machine::human(after)
            ),
        )
        .cause(
            crate::supervisor::chain(&explanation.cause),
            explanation.log_tail.clone(),
        ),
    }
}
