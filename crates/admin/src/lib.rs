//! The admin API (SPEC.md "Admin API") on its own listener: health, metrics, config,
//! validation, reload, routes, upstreams, audit and a small live dashboard.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};

use gatehouse_proxy::{ReloadSource, Runtime};

mod dashboard;

/// Largest YAML body accepted by `POST /config/validate`.
const MAX_VALIDATE_BODY: usize = 4 * 1024 * 1024;

pub struct AdminHandle {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl AdminHandle {
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn router(rt: Arc<Runtime>) -> Router {
    let api = Router::new()
        .route("/", get(dashboard::page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/config", get(config))
        .route("/config/validate", post(validate))
        .route("/reload", post(reload))
        .route("/routes", get(routes))
        .route("/upstreams", get(upstreams))
        .route("/audit", get(audit))
        .route("/status", get(status));
    // Also served under /admin/… (SPEC.md's principles call it `POST /admin/reload`).
    Router::new()
        .merge(api.clone())
        .nest("/admin", api)
        .route("/admin/", get(dashboard::page))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_VALIDATE_BODY))
        .layer(middleware::from_fn_with_state(rt.clone(), auth))
        .with_state(rt)
}

/// Binds the admin listener. The config validator already refuses a non-loopback address
/// without a token; this checks again so no code path can expose an open admin API.
pub async fn serve(rt: Arc<Runtime>, addr: SocketAddr) -> std::io::Result<AdminHandle> {
    let token = rt.gateway().snapshot().admin.token.clone();
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(std::io::Error::other(
            "admin API on a non-loopback address requires admin.token",
        ));
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(rt);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin server failed");
        }
    });
    tracing::info!(addr = %local, "admin API listening");
    Ok(AdminHandle { addr: local, task })
}

/// Paths served without the token: liveness/readiness (probes carry no credentials and the
/// answers reveal nothing) and the dashboard's static page (it holds no data; its scripts
/// call the protected endpoints with the token the operator types in).
fn is_public(path: &str) -> bool {
    let path = path.strip_prefix("/admin").unwrap_or(path);
    matches!(path, "" | "/" | "/healthz" | "/readyz")
}

async fn auth(State(rt): State<Arc<Runtime>>, req: Request, next: Next) -> Response {
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let expected = rt.gateway().snapshot().admin.token.clone();
    if let Some(expected) = expected {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compare digests, never the secrets themselves (no early-exit timing signal).
        let ok = Sha256::digest(presented.as_bytes()) == Sha256::digest(expected.as_bytes());
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"gatehouse-admin\"")],
                Json(json!({"error": "unauthorized", "message": "admin token required"})),
            )
                .into_response();
        }
    }
    next.run(req).await
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(rt): State<Arc<Runtime>>) -> Response {
    if rt.is_ready() {
        Json(json!({"status": "ready", "version": rt.gateway().snapshot().version})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready"})),
        )
            .into_response()
    }
}

async fn metrics(State(rt): State<Arc<Runtime>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        rt.gateway().metrics_text(),
    )
        .into_response()
}

async fn config(State(rt): State<Arc<Runtime>>) -> Json<serde_json::Value> {
    let snap = rt.gateway().snapshot();
    Json(json!({"version": snap.version, "config": snap.redacted}))
}

async fn validate(State(rt): State<Arc<Runtime>>, _h: HeaderMap, body: Bytes) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"valid": false, "errors": ["body is not UTF-8"]})),
        )
            .into_response();
    };
    match rt.validate_text(text) {
        Ok(version) => Json(json!({"valid": true, "version": version})).into_response(),
        Err(errors) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"valid": false, "errors": errors})),
        )
            .into_response(),
    }
}

async fn reload(State(rt): State<Arc<Runtime>>) -> Response {
    match rt.reload(ReloadSource::Admin).await {
        Ok(version) => Json(json!({"status": "ok", "version": version})).into_response(),
        Err(errors) => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "status": "rejected",
                "version": rt.gateway().snapshot().version,
                "errors": errors,
            })),
        )
            .into_response(),
    }
}

async fn status(State(rt): State<Arc<Runtime>>) -> Json<serde_json::Value> {
    Json(json!(rt.status()))
}

async fn routes(State(rt): State<Arc<Runtime>>) -> Json<serde_json::Value> {
    let snap = rt.gateway().snapshot();
    let list: Vec<_> = snap
        .routes
        .iter()
        .map(|r| {
            let backends: Vec<_> = match &r.target {
                gatehouse_core::snapshot::RouteTarget::Upstream(i) => {
                    vec![json!({"upstream": snap.upstreams[*i].name, "weight": 1})]
                }
                gatehouse_core::snapshot::RouteTarget::Weighted { backends, .. } => backends
                    .iter()
                    .map(|(i, w)| json!({"upstream": snap.upstreams[*i].name, "weight": w}))
                    .collect(),
            };
            json!({
                "name": r.name,
                "match": r.match_desc,
                "backends": backends,
                "websocket": r.websocket,
                "max_body": r.max_body,
                "timeout_ms": r.timeout.map(|t| t.as_millis() as u64),
            })
        })
        .collect();
    Json(json!({"version": snap.version, "routes": list}))
}

async fn upstreams(State(rt): State<Arc<Runtime>>) -> Json<serde_json::Value> {
    let shared = rt.gateway().shared();
    let active = shared.active.load_full();
    let clock = &shared.registry.clock;
    let list: Vec<_> = active
        .snapshot
        .upstreams
        .iter()
        .zip(&active.upstreams)
        .map(|(u, r)| {
            let targets: Vec<_> = u
                .targets
                .iter()
                .zip(&r.targets)
                .map(|(t, s)| {
                    json!({
                        "url": t.url,
                        "weight": t.weight,
                        "in_flight": t.in_flight.load(Ordering::Relaxed),
                        // "healthy" | "unhealthy" (active check failing) | "ejected" (passive)
                        "health": s.describe(clock),
                        "active_check": if u.active.is_some() {
                            if s.active_ok.load(Ordering::Relaxed) { "passing" } else { "failing" }
                        } else {
                            "off"
                        },
                        "consecutive_failures": s.failures.load(Ordering::Relaxed),
                        "ejections": s.ejections.load(Ordering::Relaxed),
                    })
                })
                .collect();
            json!({
                "name": u.name,
                "balance": u.balance.as_str(),
                "http2": u.http2,
                "tls": u.tls.is_some(),
                "in_flight": r.state.breaker.in_flight(),
                "pending": r.state.breaker.pending(),
                "targets": targets,
            })
        })
        .collect();
    Json(json!({"upstreams": list}))
}

async fn audit(State(rt): State<Arc<Runtime>>) -> Json<serde_json::Value> {
    Json(json!({"entries": rt.audit()}))
}
