//! The cluster's endpoints: `GET /v1/cluster` (hosts, singletons, owners, fences) and
//! `GET /v1/cluster/services` (every host's services), read from etcd when asked.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::model::ErrorBody;
use super::{ApiError, ErrorKind};
use crate::cluster::view::{self, ClusterServices, ClusterView};
use crate::config::ClusterSettings;
use crate::fence::Fences;
use crate::supervisor::Supervisor;

/// The `[cluster]` in force and its fences, or the error that there is none.
pub(crate) fn clustered(
    supervisor: &Supervisor,
) -> Result<(ClusterSettings, Arc<Fences>), ApiError> {
    let spec = supervisor.spec();
    match (spec.cluster.clone(), supervisor.fences()) {
        (Some(settings), Some(fences)) => Ok((settings, fences)),
        _ => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorKind::NoCluster,
            format!(
                "{} has no [cluster] section, so this supervisor is not part of a cluster; add one (name, etcd, host) to share services with other hosts",
                spec.path.display()
            ),
        )),
    }
}

fn unavailable(settings: &ClusterSettings, error: &crate::cluster::etcd::EtcdError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::EtcdUnavailable,
        format!(
            "cannot read cluster `{}` from etcd ({}): {error}",
            settings.name,
            settings.etcd.join(", ")
        ),
    )
}

/// The cluster's hosts (alive or gone) and its singletons, with their owners, fences
/// and endpoints.
#[utoipa::path(get, path = "/v1/cluster", tag = "cluster",
    responses(
        (status = 200, description = "Hosts and singletons", body = ClusterView),
        (status = 409, description = "This supervisor's config has no [cluster]", body = ErrorBody),
        (status = 503, description = "etcd did not answer", body = ErrorBody),
    ))]
pub async fn cluster(
    State(supervisor): State<Arc<Supervisor>>,
) -> Result<Json<ClusterView>, ApiError> {
    let (settings, fences) = clustered(&supervisor)?;
    let etcd = crate::cluster::client(&settings, &fences);
    view::cluster(&etcd, &settings)
        .await
        .map(Json)
        .map_err(|error| unavailable(&settings, &error))
}

/// Every host's services, as each host last published them.
#[utoipa::path(get, path = "/v1/cluster/services", tag = "cluster",
    responses(
        (status = 200, description = "Every host's services", body = ClusterServices),
        (status = 409, description = "This supervisor's config has no [cluster]", body = ErrorBody),
        (status = 503, description = "etcd did not answer", body = ErrorBody),
    ))]
pub async fn services(
    State(supervisor): State<Arc<Supervisor>>,
) -> Result<Json<ClusterServices>, ApiError> {
    let (settings, fences) = clustered(&supervisor)?;
    let etcd = crate::cluster::client(&settings, &fences);
    view::services(&etcd, &settings)
        .await
        .map(Json)
        .map_err(|error| unavailable(&settings, &error))
}
