//! Accept loop shared by the gateway, the mock DingTalk and the demo upstream: HTTP/1 + HTTP/2, header-read and idle timeouts, connection cap, graceful drain.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;

use crate::tls_server::ServerTls;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

/// Limits applied to every accepted connection. `Default` holds the defaults of the
/// configuration's `server:` section too.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Time a client has to send a complete request head (slowloris guard).
    pub header_read_timeout: Duration,
    /// Upper bound on the HTTP/1 read buffer, which bounds the total size of a request head.
    pub max_header_bytes: usize,
    /// How long in-flight connections may take to finish after shutdown is signalled.
    pub shutdown_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/1 keep-alive: closed;
    /// HTTP/2: GOAWAY, then closed). A response still streaming counts as a request in flight.
    pub idle_timeout: Duration,
    /// Most client connections open at once; at the cap, accepting pauses until one closes.
    pub max_connections: usize,
    /// Most concurrent HTTP/2 streams per connection (advertised in SETTINGS).
    pub max_concurrent_streams: u32,
    /// Counts the connections open (a metric); the default counts into nothing exported.
    pub open_connections: Gauge,
    /// TLS termination: every connection is a TLS handshake (within `header_read_timeout`)
    /// first. `None`: plain HTTP.
    pub tls: Option<ServerTls>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 32 * 1024,
            shutdown_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 16_384,
            max_concurrent_streams: 100,
            open_connections: Gauge::default(),
            tls: None,
        }
    }
}

/// Binds a listening socket with `SO_REUSEADDR` (a restart does not wait for old connections'
/// TIME-WAIT) and a listen backlog of `backlog` (the kernel caps it at `net.core.somaxconn`).
/// Must be called inside the Tokio runtime that will serve it.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    TcpListener::from_std(bind_std(addr, backlog, false)?)
}

/// [`bind`] without a runtime: a non-blocking listening socket to hand to the runtime that will
/// serve it ([`TcpListener::from_std`]). With `reuse_port`, several sockets (one per worker)
/// may listen on `addr` and the kernel spreads new connections over them (`SO_REUSEPORT`).
pub fn bind_std(
    addr: SocketAddr,
    backlog: u32,
    reuse_port: bool,
) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

/// One listening socket per worker on `addr`, sharing the port with `SO_REUSEPORT` when there
/// are several. A port some other process already listens on is refused first: with
/// `SO_REUSEPORT` a second dinggate (same user) would otherwise bind it too, and the kernel
/// would silently split the traffic between the two.
pub fn bind_workers(
    addr: SocketAddr,
    backlog: u32,
    workers: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    if workers > 1 {
        // A plain bind fails on a port that anyone listens on, with or without SO_REUSEPORT.
        drop(std::net::TcpListener::bind(addr)?);
    }
    (0..workers.max(1))
        .map(|_| bind_std(addr, backlog, workers > 1))
        .collect()
}

/// How often, at most, reaching `max_connections` is logged.
const CAP_WARN_EVERY: Duration = Duration::from_secs(60);

/// Serves `handler` on `listener` until `shutdown` resolves, then drains open connections
/// for at most `limits.shutdown_timeout`.
///
/// `handler` gets every request together with the peer address; it must never fail (errors are
/// responses), which is why its error type is `Infallible`. Response bodies must be `Unpin`
/// (they are wrapped to track when a response has really finished).
pub async fn serve_http<H, Fut, B>(
    listener: TcpListener,
    limits: ServerLimits,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
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
        .max_concurrent_streams(limits.max_concurrent_streams)
        // Pings find dead peers; an unanswered ping closes the connection. A peer that answers
        // pings but sends no request is closed by the idle timer instead.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let max_connections = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max_connections));
    let (stop, stopped) = watch::channel(false);
    let mut last_cap_warning: Option<Instant> = None;
    tokio::pin!(shutdown);

    loop {
        // At the cap, stop calling accept(): new connections wait in the kernel's listen backlog
        // (and are refused by the kernel once it is full) instead of being accepted and dropped,
        // so a burst is absorbed and served as soon as connections free up.
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if last_cap_warning.is_none_or(|t| t.elapsed() >= CAP_WARN_EVERY) {
                    last_cap_warning = Some(Instant::now());
                    tracing::warn!(
                        max_connections,
                        "connection limit reached: new connections wait in the listen backlog until one closes (server.max_connections)"
                    );
                }
                tokio::select! {
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning on a hot error.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let timers = ConnTimers {
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
        };
        let open = OpenConnection::new(&limits.open_connections);
        let handler = handler.clone();
        let stopped = stopped.clone();
        let Some(tls) = limits.tls.clone() else {
            let conn = connection(&builder, TokioIo::new(stream), handler, peer);
            tokio::spawn(async move {
                let _permit = permit;
                let _open = open;
                conn.run(timers, stopped, peer).await;
            });
            continue;
        };
        let builder = builder.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _open = open;
            // The handshake counts against the time a client has to send its request head: a
            // client that opens connections and never finishes a handshake holds nothing long.
            let stream = match tokio::time::timeout(
                timers.header_read_timeout,
                tls.acceptor().accept(stream),
            )
            .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, %peer, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "no TLS handshake within header_read_timeout");
                    return;
                }
            };
            connection(&builder, TokioIo::new(stream), handler, peer)
                .run(timers, stopped, peer)
                .await;
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every open connection holds one permit: holding them all means every connection is closed.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(all) => {}
        () = tokio::time::sleep(limits.shutdown_timeout) => {
            tracing::warn!("graceful shutdown timed out; closing remaining connections");
        }
    }
}

/// One open connection in the `open_connections` gauge, for as long as it lives.
struct OpenConnection(Gauge);

impl OpenConnection {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        OpenConnection(gauge.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One accepted connection, ready to be driven: hyper's connection and its request accounting.
struct Connection<C> {
    conn: C,
    activity: Arc<Activity>,
}

/// How a connection ended.
type ConnResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Sets up hyper on `io` with `handler`, counting requests for the idle timer.
fn connection<I, H, Fut, B>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    handler: H,
    peer: SocketAddr,
) -> Connection<impl GracefulClose<Output = ConnResult>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::new(Activity::new());
    let seen = activity.clone();
    let service = hyper::service::service_fn(move |req| {
        let guard = InFlight::start(&seen);
        let response = handler(req, peer);
        async move {
            let response = response.await?;
            Ok::<_, Infallible>(response.map(|inner| TrackedBody {
                inner,
                _guard: guard,
            }))
        }
    });
    let conn = builder
        .serve_connection_with_upgrades(io, service)
        .into_owned();
    Connection { conn, activity }
}

impl<C: GracefulClose<Output = ConnResult>> Connection<C> {
    async fn run(self, timers: ConnTimers, stopped: watch::Receiver<bool>, peer: SocketAddr) {
        let Connection { conn, activity } = self;
        tokio::pin!(conn);
        if let Err(err) = drive(conn, &activity, timers, stopped, peer).await {
            tracing::debug!(error = %err, %peer, "connection ended with error");
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct ConnTimers {
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

/// Runs one connection to its end, closing it gracefully when it produced no request within
/// the header-read timeout, stayed idle for the idle timeout, or the server shuts down.
async fn drive<C>(
    mut conn: Pin<&mut C>,
    activity: &Activity,
    timers: ConnTimers,
    mut stopped: watch::Receiver<bool>,
    peer: SocketAddr,
) -> C::Output
where
    C: Future + GracefulClose,
{
    // hyper's header_read_timeout covers an HTTP/1 head once the protocol is known; protocol
    // detection and the HTTP/2 preface have no timer of their own, so a connection that has not
    // produced a request by the deadline (silent, half a preface, a preface and nothing else)
    // is dropped here.
    let head_deadline = activity.origin + timers.header_read_timeout;
    let mut wake = head_deadline.min(activity.origin + timers.idle_timeout);
    // Set once the connection was asked to close: stop watching for shutdown, stop idling.
    let mut closing = false;
    let mut stopping = false;
    // After an idle close, how long the client gets to complete the close (HTTP/2: GOAWAY and
    // its ping round trip) before the connection is dropped.
    let mut linger_until: Option<Instant> = None;
    loop {
        tokio::select! {
            result = conn.as_mut() => return result,
            _ = stopped.wait_for(|s| *s), if !stopping => {
                stopping = true;
                if !closing {
                    conn.as_mut().close_gracefully();
                    closing = true;
                }
            }
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if !activity.started.load(Ordering::Acquire) {
                    if now < head_deadline {
                        wake = head_deadline;
                        continue;
                    }
                    tracing::debug!(%peer, "no request within header_read_timeout; closing");
                    return conn.as_mut().abandon();
                }
                let idle = activity.idle_since();
                if let Some(until) = linger_until {
                    if now >= until && idle.is_some() {
                        tracing::debug!(%peer, "idle connection did not finish closing; dropping it");
                        return conn.as_mut().abandon();
                    }
                    wake = now + timers.header_read_timeout;
                    continue;
                }
                if closing {
                    // Shutting down: the drain deadline of `serve_http` applies.
                    wake = now + Duration::from_secs(24 * 3600);
                    continue;
                }
                match idle {
                    Some(since) if now.duration_since(since) >= timers.idle_timeout => {
                        tracing::debug!(%peer, "connection idle for idle_timeout; closing");
                        conn.as_mut().close_gracefully();
                        closing = true;
                        linger_until = Some(now + timers.header_read_timeout);
                        wake = now + timers.header_read_timeout;
                    }
                    Some(since) => wake = since + timers.idle_timeout,
                    // A request is in flight: look again one idle period from now.
                    None => wake = now + timers.idle_timeout,
                }
            }
        }
    }
}

/// A connection that can be asked to finish its in-flight requests and close.
trait GracefulClose: Future {
    fn close_gracefully(self: Pin<&mut Self>);
    /// The value to report for a connection dropped without serving anything.
    fn abandon(self: Pin<&mut Self>) -> Self::Output;
}

impl<I, S, E> GracefulClose for auto::UpgradeableConnection<'_, I, S, E>
where
    Self: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>>,
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: Body + Send + 'static,
    <S::ResBody as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn close_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }

    fn abandon(self: Pin<&mut Self>) -> Self::Output {
        Ok(())
    }
}

/// Per-connection request accounting: how many requests are in flight and when the last one
/// started or finished. Shared by the service (one `Arc` per connection, no allocation per
/// request) and the connection's idle timer.
struct Activity {
    origin: Instant,
    started: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds after `origin` of the last request start or end.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            started: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Release);
    }

    /// When the connection became idle, or `None` while a request is in flight.
    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.origin + Duration::from_millis(self.last_ms.load(Ordering::Acquire)))
    }
}

/// One request in flight, from the moment its head is read until its response body has been
/// sent completely (or dropped).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.started.store(true, Ordering::Release);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.touch();
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Stamp first, then leave: the idle timer never sees zero in flight with a stale stamp.
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until it is finished or
/// dropped, so a long stream is never taken for an idle connection.
struct TrackedBody<B> {
    inner: B,
    _guard: InFlight,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_without_requests_in_flight() {
        let activity = Arc::new(Activity::new());
        assert!(activity.idle_since().is_some());
        let guard = InFlight::start(&activity);
        assert!(activity.idle_since().is_none(), "busy while a request runs");
        let second = InFlight::start(&activity);
        drop(guard);
        assert!(activity.idle_since().is_none(), "still one in flight");
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(second);
        let since = activity.idle_since().expect("idle once all are done");
        assert!(
            since.elapsed() < Duration::from_millis(10),
            "idle from the end of the last one"
        );
    }
}
