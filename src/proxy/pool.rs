//! Upstream connections: per worker and upstream origin, a LIFO stack of idle HTTP/1 connections.
//!
//! Built on `hyper::client::conn::http1` rather than hyper-util's legacy client: a worker only
//! ever uses its own stack (no shared pool, no background task per request), a connection goes
//! back to the stack when its response body ends, and a request that a pooled connection closed
//! before writing is retried on another one.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::proxy::tls::UpstreamTls;

/// Why no connection to the upstream could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The upstream's host name did not resolve.
    #[error("cannot resolve the upstream host `{host}`")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// No address of the upstream accepted the connection (refused, unreachable, reset).
    #[error("cannot connect to the upstream")]
    Connect(#[source] io::Error),
    /// Connecting (TCP and TLS) took longer than `upstream_connect_timeout`.
    #[error("connecting to the upstream took longer than {0:?}")]
    Timeout(Duration),
    /// The TLS handshake failed; the rustls error is inside the io::Error.
    #[error("TLS handshake with the upstream failed")]
    Tls(#[source] io::Error),
}

/// Why a request got no response from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No connection could be made.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection failed while the request was sent or the response head read.
    #[error("the upstream connection failed")]
    Request(#[source] hyper::Error),
}

/// Where a pool connects to: one upstream origin (scheme, host, port) with one TLS setting.
pub struct Origin {
    /// Host name or address literal, without brackets.
    host: String,
    port: u16,
    /// For https: the connector and the name sent as SNI and verified.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.as_ref().map(|(_, name)| name))
            .finish()
    }
}

/// Why an origin could not be made from a (validated) upstream URL.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OriginError(String);

impl Origin {
    /// The origin of `url` (http or https with a host); `tls` is required for https.
    pub fn new(url: &url::Url, tls: Option<&UpstreamTls>) -> Result<Self, OriginError> {
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(OriginError(format!("{url} has no host"))),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| OriginError(format!("{url} has no port")))?;
        let tls = match (url.scheme(), tls) {
            ("http", _) => None,
            ("https", Some(tls)) => {
                let name = tls.verified_name(url);
                let name = match name.parse::<IpAddr>() {
                    Ok(ip) => ServerName::IpAddress(ip.into()),
                    Err(_) => ServerName::try_from(name.trim_matches(['[', ']']).to_owned())
                        .map_err(|e| OriginError(format!("TLS name `{name}`: {e}")))?,
                };
                Some((TlsConnector::from(tls.config.clone()), name))
            }
            (scheme, _) => return Err(OriginError(format!("{url}: no TLS for {scheme}"))),
        };
        Ok(Self { host, port, tls })
    }
}

/// The idle connections to one origin, used by one worker.
pub struct Pool {
    origin: Origin,
    /// Most recently used on top: the bottom ones age out first.
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

struct Idle {
    sender: SendRequest<Incoming>,
    since: Instant,
}

impl Pool {
    /// An empty pool for `origin`, keeping at most `max_idle` idle connections, each for at
    /// most `idle_timeout`.
    pub fn new(
        origin: Origin,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            origin,
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            connect_timeout,
        }
    }

    /// Sends `req` (URI in origin form, `Host` set) over an idle connection, or a new one.
    ///
    /// A request that a pooled connection closed before writing any of it is sent again on
    /// the next connection; one that was (even partly) written is never sent twice.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
    ) -> Result<Response<PooledBody>, PoolError> {
        while let Some(mut sender) = self.checkout() {
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.attach(resp, sender)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(PoolError::Request(e.into_error())),
                },
            }
        }
        let mut sender = self.connect().await?;
        let resp = sender.send_request(req).await.map_err(PoolError::Request)?;
        Ok(self.attach(resp, sender))
    }

    /// The most recently used idle connection still open; expired ones are dropped (closed).
    fn checkout(&self) -> Option<SendRequest<Incoming>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(top) = idle.pop() {
            if top.since.elapsed() > self.idle_timeout {
                // Everything below is older still.
                idle.clear();
                return None;
            }
            if top.sender.is_ready() {
                return Some(top.sender);
            }
        }
        None
    }

    /// Puts a ready connection on top, and closes the ones at the bottom that have been idle
    /// too long (under steady traffic the top ones are reused and the bottom ones only age).
    fn checkin(&self, sender: SendRequest<Incoming>) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // Pushed in time order and taken from the top: `since` rises from bottom to top.
        let expired = idle.partition_point(|i| now.duration_since(i.since) > self.idle_timeout);
        idle.drain(..expired);
        if idle.len() < self.max_idle {
            idle.push(Idle { sender, since: now });
        }
    }

    /// The response with a body that returns the connection to the pool when it ends. A `101`
    /// hands the connection over to the upgrade, so it never comes back.
    fn attach(
        self: &Arc<Self>,
        resp: Response<Incoming>,
        sender: SendRequest<Incoming>,
    ) -> Response<PooledBody> {
        let reuse = (resp.status() != StatusCode::SWITCHING_PROTOCOLS && self.max_idle > 0)
            .then(|| (sender, Arc::clone(self)));
        resp.map(|body| PooledBody {
            body,
            ended: false,
            reuse,
        })
    }

    /// A new connection (TCP, TLS for https, HTTP/1 handshake), its I/O driven by a task on the
    /// current worker.
    async fn connect(&self) -> Result<SendRequest<Incoming>, ConnectError> {
        let timeout = self.connect_timeout;
        tokio::time::timeout(timeout, self.connect_inner())
            .await
            .map_err(|_| ConnectError::Timeout(timeout))?
    }

    async fn connect_inner(&self) -> Result<SendRequest<Incoming>, ConnectError> {
        let origin = &self.origin;
        let addrs = tokio::net::lookup_host((origin.host.as_str(), origin.port))
            .await
            .map_err(|source| ConnectError::Resolve {
                host: origin.host.clone(),
                source,
            })?;
        let mut last = None;
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = tcp.ok_or_else(|| {
            ConnectError::Connect(last.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "the host has no address")
            }))
        })?;
        tcp.set_nodelay(true).map_err(ConnectError::Connect)?;
        match &origin.tls {
            None => handshake(tcp).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(ConnectError::Tls)?;
                handshake(tls).await
            }
        }
    }
}

/// The HTTP/1 handshake on a connected stream; the connection is driven by a spawned task
/// (with upgrades, so a `101` hands the stream to the bridge).
async fn handshake<S>(stream: S) -> Result<SendRequest<Incoming>, ConnectError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    // The HTTP/1 client handshake does no I/O: it cannot fail on a fresh stream.
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ConnectError::Connect(io::Error::other(e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection closed with an error");
        }
    });
    Ok(sender)
}

/// An upstream response body that returns its connection to the pool once it has ended.
#[derive(Debug)]
pub struct PooledBody {
    body: Incoming,
    /// The body reported its end (a chunked body only says so by returning `None`).
    ended: bool,
    reuse: Option<(SendRequest<Incoming>, Arc<Pool>)>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("origin", &self.origin)
            .finish()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body dropped before its end leaves unread bytes on the connection: hyper closes
        // it, and it must not be reused.
        if let Some((sender, pool)) = self.reuse.take() {
            if self.ended || self.body.is_end_stream() {
                if sender.is_ready() {
                    pool.checkin(sender);
                } else {
                    // The connection task has not yet seen the end of the exchange (it runs
                    // after this one): wait for it, so the stack only ever holds ready ones.
                    tokio::spawn(async move {
                        let mut sender = sender;
                        if sender.ready().await.is_ok() {
                            pool.checkin(sender);
                        }
                    });
                }
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
