//! dinggate: an authentication gateway that puts internal web apps behind DingTalk login.
#![forbid(unsafe_code)]

pub mod admin;
pub mod assertion;
pub mod authz;
pub mod body;
pub mod config;
pub mod demo;
pub mod dingtalk;
pub mod directory;
pub mod doctor;
pub mod gateway;
pub mod host;
pub mod identity;
pub mod login;
pub mod metrics;
pub mod mock;
pub mod pages;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod repeats;
pub mod server;
pub mod session;
pub mod sessions;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls_server;
pub mod trusted;

use std::future::Future;

use tokio::net::TcpListener;

pub use config::Config;
pub use state::{AppState, Live};

/// Serves the gateway on `listener` until `shutdown` resolves, then drains connections: one
/// worker with every connection slot ([`serve_worker`] with `Worker::ONLY`). `state` is an
/// `Arc<AppState>`, or a [`Live`] to reload.
pub async fn serve(
    listener: TcpListener,
    state: impl Into<Live>,
    shutdown: impl Future<Output = ()>,
) {
    serve_worker(listener, state.into(), Worker::ONLY, shutdown).await;
}

/// One of the gateway's worker threads: each runs its own event loop and listening socket
/// (`SO_REUSEPORT`), and forwards over its own upstream connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    /// This worker's number, from 0; below `of` and `server.workers`.
    pub index: usize,
    /// How many workers share `server.max_connections`.
    pub of: usize,
}

impl Worker {
    /// The only worker.
    pub const ONLY: Worker = Worker { index: 0, of: 1 };
}

/// Serves the gateway as `worker` on `listener` until `shutdown` resolves, then drains its
/// connections. The worker gets its share of `server.max_connections`. Each request is served
/// by the state in service when its head arrived (`live`: a reload applies to the next request,
/// also on open connections); the listener's limits are those of the state at start.
pub async fn serve_worker(
    listener: TcpListener,
    live: Live,
    worker: Worker,
    shutdown: impl Future<Output = ()>,
) {
    let state = live.load();
    let server = &state.config.server;
    let limits = server::ServerLimits {
        header_read_timeout: server.header_read_timeout,
        max_header_bytes: server.max_header_bytes,
        shutdown_timeout: server.shutdown_timeout,
        idle_timeout: server.idle_timeout,
        max_connections: server.max_connections.div_ceil(worker.of.max(1)),
        max_concurrent_streams: server.max_concurrent_streams,
        open_connections: state.metrics.connections.clone(),
        tls: state.tls.clone(),
    };
    state.readiness.serving();
    // Only the long-lived parts are kept: a replaced state (its upstream pools) must not live
    // on in the worker.
    let repeats = state.repeats.clone();
    // One worker follows the shared store's sign-outs (the copy is shared by all).
    let follow = (worker.index == 0).then(|| {
        let (revocations, clock) = (state.revocations.clone(), state.clock.clone());
        tokio::spawn(async move { revocations.follow(move || clock.now()).await })
    });
    drop(state);
    // One worker writes the failure summaries (they are shared by all).
    let summaries = (worker.index == 0).then(|| {
        let repeats = repeats.clone();
        tokio::spawn(async move { repeats.run().await })
    });
    server::serve_http(
        listener,
        limits,
        // Boxed: the request future is several KB, and hyper and the server's in-flight wrapper
        // move it by value; a box makes each move a pointer copy (callgrind: ~16k fewer
        // instructions of memcpy per request, for one allocation).
        move |req, peer| Box::pin(gateway::handle(live.load(), worker.index, req, peer)),
        shutdown,
    )
    .await;
    if let Some(task) = follow {
        task.abort();
    }
    if let Some(task) = summaries {
        task.abort();
        repeats.log_due(std::time::Instant::now(), true);
    }
}
