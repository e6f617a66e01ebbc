//! The admin listener (`admin.listen`): Prometheus metrics, liveness and readiness, for operators and orchestrators only.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::body::GatewayBody;
use crate::pages;
use crate::server::{self, ServerLimits};
use crate::state::{AppState, Live};

/// Most connections the admin listener keeps open: scrapers and probes, not people.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown` resolves, for the
/// state in service (an `Arc<AppState>`, or a [`Live`] that reloads replace).
pub async fn serve(
    listener: TcpListener,
    live: impl Into<Live>,
    shutdown: impl Future<Output = ()>,
) {
    let live = live.into();
    let limits = ServerLimits {
        max_connections: ADMIN_MAX_CONNECTIONS,
        ..ServerLimits::default()
    };
    server::serve_http(
        listener,
        limits,
        move |req, _peer: SocketAddr| {
            let app = live.load();
            async move { Ok::<_, Infallible>(handle(&app, req).await) }
        },
        shutdown,
    )
    .await;
}

async fn handle(app: &AppState, req: Request<Incoming>) -> Response<GatewayBody> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut resp = pages::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        resp.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match req.uri().path() {
        "/metrics" => metrics(app, &req),
        "/healthz" => pages::text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let (ready, report) = readiness(app).await;
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            pages::json(status, &report)
        }
        _ => pages::text(
            StatusCode::NOT_FOUND,
            "not found: the admin listener serves /metrics, /healthz and /readyz\n",
        ),
    }
}

/// The Prometheus text format, or OpenMetrics when the scraper asks for it first.
fn metrics(app: &AppState, req: &Request<Incoming>) -> Response<GatewayBody> {
    let openmetrics = req
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next()
        .is_some_and(|first| first.trim().starts_with("application/openmetrics-text"));
    let body = app.metrics.encode(openmetrics);
    let mut resp = Response::new(GatewayBody::from(body));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Whether the gateway should get traffic, and why (JSON): the configuration and keys are
/// loaded (they are, or the process would not run), the public listener serves, shutdown has
/// not begun, and with `readiness.check_dingtalk` a DingTalk app token can be had.
pub async fn readiness(app: &AppState) -> (bool, Value) {
    let serving = app.readiness.is_serving();
    let draining = app.readiness.is_draining();
    let mut checks = serde_json::Map::new();
    let config = match app.readiness.reload_failure() {
        None => format!("loaded (hash {})", app.config.hash()),
        Some(problems) => format!(
            "loaded (hash {}); the last reload failed and this configuration stays in service: {problems}",
            app.config.hash()
        ),
    };
    checks.insert("config".into(), json!({ "ok": true, "detail": config }));
    checks.insert(
        "keys".into(),
        json!({ "ok": true, "detail": format!("{} session signing key(s)", 1 + app.config.session.previous_signing_keys.len()) }),
    );
    checks.insert(
        "listener".into(),
        json!({ "ok": serving, "detail": if serving { format!("serving on {}", app.config.listen) } else { "not serving yet".to_owned() } }),
    );
    checks.insert(
        "shutdown".into(),
        json!({ "ok": !draining, "detail": if draining { "draining: shutting down, send no new traffic" } else { "not started" } }),
    );
    if let Some(store) = &app.store {
        // Reported, never a reason to take the replica out: signed-in people keep working and
        // logins fall back to this replica's own replay protection while Redis is away.
        let detail = match store.health() {
            Ok(()) => "redis reachable: sign-outs and login states are shared".to_owned(),
            Err((since, error)) => format!(
                "redis unreachable since {since} (Unix time): {error}; sessions keep working, logins use this replica's replay protection, sign-outs made here are sent when it is back"
            ),
        };
        checks.insert("store".into(), json!({ "ok": true, "detail": detail }));
    }
    let mut ready = serving && !draining;
    if app.config.readiness.check_dingtalk {
        let token = app.dingtalk.app_token().await;
        ready &= token.is_ok();
        checks.insert(
            "dingtalk".into(),
            match token {
                Ok(_) => json!({ "ok": true, "detail": "app token available" }),
                Err(e) => json!({ "ok": false, "detail": e.to_string() }),
            },
        );
    }
    (ready, json!({ "ready": ready, "checks": checks }))
}
