//! The operator's endpoints: `GET /healthz` for load balancers and
//! `GET /metrics` for Prometheus. Neither needs a session or checks the
//! Host or Origin (load balancers and scrapers address a node by its own
//! address); both only read, and answer `Cache-Control: no-store`.

use warp::http::StatusCode;
use warp::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};

use super::State;
use super::reply::{self, HttpResponse};
use crate::error::ChatError;

/// The Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// GET /healthz: 200 while the store takes writes, 503 when it does not;
/// the same JSON body either way.
pub async fn healthz(state: State) -> HttpResponse {
    let report = state.health.report().await;
    let status = if report.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    no_store(reply::json(status, &report))
}

/// GET /metrics: every metric, as Prometheus text.
pub fn metrics() -> HttpResponse {
    let Some(text) = crate::telemetry::render() else {
        return reply::error(&ChatError::Internal("this process has no metrics recorder".into()));
    };
    let mut response = HttpResponse::new(text.into());
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_TEXT));
    no_store(response)
}

fn no_store(mut response: HttpResponse) -> HttpResponse {
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
