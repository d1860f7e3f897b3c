//! The HTTP listener of `[metrics] listen`: `/metrics`, `/healthz`, `/readyz` (axum).
//!
//! Read-only and unauthenticated: every answer is built from [`super::Telemetry`] alone, which
//! holds no secret and no task-controlled label. Nothing here can change the worker's state.

use super::Telemetry;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The media type of the exposition `prometheus-client` writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format, for every other scraper.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The routes, for `serve` and for tests.
pub fn router(telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(telemetry)
}

/// Serves on `listener` until `stop` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    telemetry: Arc<Telemetry>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(telemetry))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

/// OpenMetrics when the scraper asks for it (Prometheus does), the Prometheus text format
/// otherwise.
async fn metrics(
    State(t): State<Arc<Telemetry>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS)], t.metrics.encode())
    } else {
        (
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            t.metrics.encode_prometheus_text(),
        )
    }
}

async fn healthz(State(t): State<Arc<Telemetry>>) -> impl IntoResponse {
    match t.health.alive() {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, TEXT)],
            "ok\n".to_owned(),
        ),
        Err((late, budget)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, TEXT)],
            format!(
                "wedged: no progress within {} s (the current step's budget), {} s overdue\n",
                budget.as_secs(),
                late.as_secs()
            ),
        ),
    }
}

async fn readyz(State(t): State<Arc<Telemetry>>) -> impl IntoResponse {
    match t.health.ready() {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, TEXT)],
            "ready\n".to_owned(),
        ),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, TEXT)],
            format!("not ready: {}\n", why.0.join("; ")),
        ),
    }
}
