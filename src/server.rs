//! Accept loop shared by the gateway, the mock DingTalk and the demo upstream: HTTP/1 + HTTP/2, header-read timeout, graceful drain.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

/// Limits applied to every accepted connection.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Time a client has to send a complete request head (slowloris guard).
    pub header_read_timeout: Duration,
    /// Upper bound on the HTTP/1 read buffer, which bounds the total size of a request head.
    pub max_header_bytes: usize,
    /// How long in-flight connections may take to finish after shutdown is signalled.
    pub shutdown_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `handler` on `listener` until `shutdown` resolves, then drains open connections
/// for at most `limits.shutdown_timeout`.
///
/// `handler` gets every request together with the peer address; it must never fail (errors are
/// responses), which is why its error type is `Infallible`.
pub async fn serve_http<H, Fut, B>(
    listener: TcpListener,
    limits: ServerLimits,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes.max(8192) as u32)
        // Pings find dead peers; an unanswered ping closes the connection.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        // EMFILE and friends: back off instead of spinning on a hot error.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let first_request = Arc::new(AtomicBool::new(false));
                let seen = first_request.clone();
                let service = hyper::service::service_fn(move |req| {
                    seen.store(true, Ordering::Relaxed);
                    handler(req, peer)
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                let deadline = limits.header_read_timeout;
                tokio::spawn(async move {
                    tokio::pin!(conn);
                    // hyper's header_read_timeout covers an HTTP/1 head once the protocol is
                    // known; protocol detection and the HTTP/2 preface have no timer of their
                    // own, so a connection that has not produced a request by the deadline
                    // (silent, half a preface, a preface and nothing else) is closed here.
                    let result = tokio::select! {
                        r = &mut conn => r,
                        () = tokio::time::sleep(deadline) => {
                            if !first_request.load(Ordering::Relaxed) {
                                tracing::debug!(%peer, "no request within header_read_timeout; closing");
                                return;
                            }
                            conn.await
                        }
                    };
                    if let Err(err) = result {
                        tracing::debug!(error = %err, %peer, "connection ended with error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_timeout) => {
            tracing::warn!("graceful shutdown timed out; closing remaining connections");
        }
    }
}
