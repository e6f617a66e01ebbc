//! TLS termination on the public listener (`tls:`): the certificate store, reloaded when its files change or on SIGHUP, and the rustls server config (TLS 1.2+, ALPN h2 and http/1.1).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// How often the certificate files are compared with what is loaded.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);

/// Why a certificate and key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file has no PEM certificate.
    #[error("{0}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it")]
    NoCertificate(PathBuf),
    /// The key file has no usable PEM private key.
    #[error("{0}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it")]
    NoKey(PathBuf),
    /// rustls refused the pair (unsupported key type, or a key that does not belong to the
    /// certificate).
    #[error("the key in {key} does not fit the certificate in {cert}: {source}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parses a PEM certificate chain and key into a pair rustls can serve; the key must belong to
/// the first certificate.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(CertError::NoCertificate(cert_path.to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| CertError::NoKey(key_path.to_owned()))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|source| CertError::Mismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        source,
    })
}

/// The certificate being served, and the file contents it came from.
#[derive(Debug)]
struct CertStore {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    loaded: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// What a reload did.
#[derive(Debug)]
pub enum Reloaded {
    /// The files are what is served already.
    Unchanged,
    /// A new certificate is served from now on (new handshakes; open connections keep theirs).
    Replaced,
}

/// TLS for the public listener: the acceptor every connection goes through, and its
/// certificate store.
#[derive(Clone)]
pub struct ServerTls {
    store: Arc<CertStore>,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_file", &self.store.cert_file)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads `cert_file` (PEM chain, leaf first) and `key_file` (PEM key) and builds the server
    /// config: TLS 1.2 and 1.3 (rustls' safe defaults: no SSL, TLS 1.0/1.1, RC4, CBC-SHA1
    /// suites or renegotiation), ALPN `h2` then `http/1.1`.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, CertError> {
        let (cert_pem, key_pem) = (read(cert_file)?, read(key_file)?);
        let key = certified_key(&cert_pem, &key_pem, cert_file, key_file)?;
        let store = Arc::new(CertStore {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new(Arc::new(key)),
            loaded: Mutex::new((cert_pem, key_pem)),
        });
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|source| CertError::Mismatch {
                cert: cert_file.to_owned(),
                key: key_file.to_owned(),
                source,
            })?
            .with_no_client_auth()
            .with_cert_resolver(store.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            store,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The acceptor for new connections.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the files again and serves them if they changed. A broken pair (a renewal caught
    /// half-written, a key for another certificate) keeps the current certificate.
    pub fn reload(&self) -> Result<Reloaded, CertError> {
        let s = &self.store;
        let (cert_pem, key_pem) = (read(&s.cert_file)?, read(&s.key_file)?);
        let mut loaded = s.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if loaded.0 == cert_pem && loaded.1 == key_pem {
            return Ok(Reloaded::Unchanged);
        }
        let key = certified_key(&cert_pem, &key_pem, &s.cert_file, &s.key_file)?;
        *s.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        *loaded = (cert_pem, key_pem);
        Ok(Reloaded::Replaced)
    }

    /// [`ServerTls::reload`], logged: INFO when a new certificate is served, ERROR (with the
    /// reason, the old certificate kept) when the files cannot be used.
    pub fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(Reloaded::Unchanged) => {}
            Ok(Reloaded::Replaced) => tracing::info!(
                cert_file = %self.store.cert_file.display(),
                trigger = why,
                "TLS certificate reloaded"
            ),
            Err(e) => tracing::error!(
                error = %crate::telemetry::ErrorChain(&e),
                trigger = why,
                "TLS certificate not reloaded: still serving the previous one; fix tls.cert_file / tls.key_file"
            ),
        }
    }

    /// Compares the files with what is served every [`RELOAD_EVERY`] (certbot and cert-manager
    /// renew in place), until dropped.
    pub async fn watch(self) {
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.reload_logged("file change");
        }
    }
}

/// The answer of the plain-HTTP listener (`tls.redirect_http`) to a request for `host` (its
/// `Host` header) and `path_and_query`: a 308 to the same URL over https when `host` is one the
/// gateway serves (`public_url`'s, or a route's), else 400 — never a redirect to a host an
/// attacker named.
pub fn redirect_to_https(
    config: &crate::config::Config,
    host: Option<&str>,
    path_and_query: &str,
) -> http::Response<crate::body::GatewayBody> {
    use http::StatusCode;
    let parsed = host.and_then(|h| crate::host::parse_authority(h).ok());
    let Some(parsed) = parsed else {
        return crate::pages::text(StatusCode::BAD_REQUEST, "missing or invalid Host\n");
    };
    let name = parsed.host.canonical();
    let public = config.public_url.host_str().unwrap_or_default();
    let ours = name == public
        || config
            .routes
            .routes()
            .iter()
            .any(|r| r.host.as_deref() == Some(&*name));
    if !ours {
        return crate::pages::text(StatusCode::BAD_REQUEST, "unknown host\n");
    }
    // The https port is public_url's when it is https with an explicit one.
    let port = match (config.public_url.scheme(), config.public_url.port()) {
        ("https", Some(p)) => format!(":{p}"),
        _ => String::new(),
    };
    // `canonical` writes IPv6 in brackets already.
    let location = format!("https://{name}{port}{path_and_query}");
    let mut resp = crate::pages::redirect(&location);
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    resp
}

/// Serves the plain-HTTP redirect listener until `shutdown` resolves.
pub async fn serve_redirect(
    listener: tokio::net::TcpListener,
    live: crate::state::Live,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let limits = crate::server::ServerLimits {
        max_connections: live.load().config.server.max_connections,
        ..crate::server::ServerLimits::default()
    };
    crate::server::serve_http(
        listener,
        limits,
        move |req: http::Request<hyper::body::Incoming>, _peer| {
            let host = req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| req.uri().authority().map(|a| a.as_str()));
            let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            // The hosts and public_url of the configuration in service (a reload may add hosts).
            let resp = redirect_to_https(&live.load().config, host, target);
            async move { Ok::<_, std::convert::Infallible>(resp) }
        },
        shutdown,
    )
    .await;
}
