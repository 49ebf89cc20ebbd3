//! Latrexa (stub).
use super::SandboxConfig;
use axum::Router;
use tokio_util::sync::CancellationToken;
pub(crate) fn router(_cfg: &SandboxConfig, _s: CancellationToken) -> Router {
    Router::new()
}
