//! TLS to https upstreams: the `tls:` block, its validation into a rustls client config, and handshake-failure hints.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};

use crate::config::raw::{parse_bool, unknown_keys, ConfigIssue, Text, Unknown};

/// A `tls:` block as written (a route's `tls:` or the top-level `upstream_tls:`), before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTls {
    ca_file: Text,
    server_name: Text,
    cert_file: Text,
    key_file: Text,
    insecure_skip_verify: Text,
    #[serde(flatten)]
    unknown: Unknown,
}

/// Validated TLS settings of an https upstream. Upstreams with equal settings share one pooled
/// client; the default (every field empty) verifies against the system roots and the URL's host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsSettings {
    /// PEM bundle of the CAs trusted for this upstream; it replaces the system roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Name sent as SNI and verified against the certificate, instead of the URL's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Client certificate chain (PEM) presented to upstreams that require one (mTLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of `cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate (lab use only; warned about at startup and by `check`).
    pub insecure_skip_verify: bool,
}

/// The TLS side of one https upstream: its settings and the rustls config built from them.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamTls {
    /// The settings as validated.
    #[serde(flatten)]
    pub settings: TlsSettings,
    /// Built once during validation, so whatever `check` accepts is what `run` uses.
    #[serde(skip)]
    pub config: Arc<ClientConfig>,
}

impl UpstreamTls {
    /// The name verified in the upstream's certificate: `server_name`, else the URL's host.
    pub fn verified_name<'a>(&'a self, upstream: &'a url::Url) -> &'a str {
        self.settings
            .server_name
            .as_deref()
            .unwrap_or_else(|| upstream.host_str().unwrap_or_default())
    }

    /// One line for `dinggate check`: what is verified, against what, with which identity.
    pub fn describe(&self, upstream: &url::Url) -> String {
        let s = &self.settings;
        let name = self.verified_name(upstream);
        let mut out = if s.insecure_skip_verify {
            format!("WARNING: certificate NOT verified (insecure_skip_verify), SNI `{name}`: lab use only")
        } else {
            match &s.ca_file {
                Some(ca) => format!("certificate verified for `{name}` against {}", ca.display()),
                None => format!("certificate verified for `{name}` against the system roots"),
            }
        };
        if let Some(cert) = &s.cert_file {
            out.push_str(&format!("; client certificate {}", cert.display()));
        }
        out
    }
}

/// Where a problem of a TLS setting lies: one of the block's keys, or the system roots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// A key of the `tls:` block, e.g. `ca_file`.
    Key(&'static str),
    /// No `ca_file`, and the system's CA certificates could not be used.
    SystemRoots,
}

impl RawTls {
    /// Validates the block; every problem goes to `issues` as `{section}.{key}`
    /// (e.g. `routes[2].tls.ca_file`). Files are read and parsed here.
    pub fn validate(self, section: &str, issues: &mut Vec<ConfigIssue>) -> Option<UpstreamTls> {
        let mut found = Vec::new();
        let issue = |found: &mut Vec<ConfigIssue>, k: &str, problem: String| {
            found.push(ConfigIssue {
                key: format!("{section}.{k}"),
                problem,
            })
        };
        found.extend(unknown_keys(section, &self.unknown));
        let path = |v: Option<String>| {
            v.map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        };
        let insecure_skip_verify = match parse_bool(self.insecure_skip_verify.as_deref()) {
            Ok(b) => b.unwrap_or(false),
            Err(problem) => {
                issue(&mut found, "insecure_skip_verify", problem.to_owned());
                false
            }
        };
        let server_name = self
            .server_name
            .0
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        if let Some(name) = &server_name {
            if ServerName::try_from(name.as_str()).is_err() {
                issue(
                    &mut found,
                    "server_name",
                    "not a DNS name or IP address (no scheme, port or path)".to_owned(),
                );
            }
        }
        let settings = TlsSettings {
            ca_file: path(self.ca_file.0),
            server_name,
            cert_file: path(self.cert_file.0),
            key_file: path(self.key_file.0),
            insecure_skip_verify,
        };
        match (&settings.cert_file, &settings.key_file) {
            (Some(_), None) => issue(
                &mut found,
                "key_file",
                "missing: a client certificate (cert_file) needs its private key".to_owned(),
            ),
            (None, Some(_)) => issue(
                &mut found,
                "cert_file",
                "missing: a private key (key_file) needs its client certificate".to_owned(),
            ),
            _ => {}
        }
        if settings.insecure_skip_verify && settings.ca_file.is_some() {
            issue(&mut found,
                "insecure_skip_verify",
                "contradicts ca_file (which is never consulted when verification is off): remove one"
                    .to_owned(),
            );
        }
        // Files are read even when other keys have problems: every problem is reported at once.
        let built = client_config(&settings).map_err(|problems| {
            for (field, problem) in problems {
                match field {
                    Field::Key(k) => issue(&mut found, k, problem),
                    Field::SystemRoots => issue(&mut found, "ca_file", problem),
                }
            }
        });
        let tls = match built {
            Ok(config) if found.is_empty() => Some(UpstreamTls {
                settings,
                config: Arc::new(config),
            }),
            _ => None,
        };
        issues.append(&mut found);
        tls
    }
}

/// The rustls crypto provider of every upstream connection (the one reqwest already uses).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the client config for `settings`, reading and checking every file: each problem
/// comes back with the field it belongs to. ALPN offers HTTP/1.1 only (upgrades need it).
pub fn client_config(settings: &TlsSettings) -> Result<ClientConfig, Vec<(Field, String)>> {
    let mut problems = Vec::new();
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| vec![(Field::SystemRoots, format!("TLS setup failed: {e}"))])?;
    let builder = if settings.insecure_skip_verify {
        Some(
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                    provider.signature_verification_algorithms,
                ))),
        )
    } else {
        let roots = match &settings.ca_file {
            Some(path) => ca_bundle(path).map_err(|p| (Field::Key("ca_file"), p)),
            None => system_roots().map_err(|p| (Field::SystemRoots, p)),
        };
        match roots {
            Ok(roots) => Some(builder.with_root_certificates(roots)),
            Err(p) => {
                problems.push(p);
                None
            }
        }
    };
    let identity = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert).map_err(|p| problems.push((Field::Key("cert_file"), p)));
            let key = private_key(key).map_err(|p| problems.push((Field::Key("key_file"), p)));
            chain.ok().zip(key.ok())
        }
        _ => None,
    };
    let Some(builder) = builder.filter(|_| problems.is_empty()) else {
        return Err(problems);
    };
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
            vec![(
                Field::Key("key_file"),
                format!("does not go with cert_file (the key must belong to its first certificate): {e}"),
            )]
        })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A config for plain-http upstreams: trusts nothing, so it can never verify anything.
pub fn plain_config() -> Result<ClientConfig, rustls::Error> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let iter =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown} is not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{shown} contains no certificate (expected -----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}

pub(crate) fn ca_bundle(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in certificates(path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            format!(
                "certificate {} in {} is not a usable CA certificate: {e}",
                i + 1,
                path.display()
            )
        })?;
    }
    Ok(roots)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::Io(e) => format!("cannot read {}: {e}", path.display()),
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{} contains no private key (expected PKCS#8, PKCS#1 or SEC1 PEM)",
            path.display()
        ),
        e => format!("{} is not a PEM private key: {e}", path.display()),
    })
}

/// The operating system's CA certificates (what curl and browsers on the host trust).
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(format!(
            "no system CA certificates were found{why}, so this https upstream cannot be verified: install the system's CA bundle (e.g. ca-certificates) or set a ca_file"
        ));
    }
    Ok(roots)
}

/// `insecure_skip_verify`: any certificate chain and name are accepted; the handshake
/// signatures are still checked, so the peer must hold the key of the certificate it sent.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The rustls error somewhere in `error`'s cause chain, if a TLS handshake is why it failed.
pub fn handshake_error<'e>(
    error: &'e (dyn std::error::Error + 'static),
) -> Option<&'e rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // `io::Error::source` skips the error it wraps, which is where tokio-rustls puts the
        // rustls error (and hyper-rustls wraps that io::Error in another one).
        current = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// What the operator should change, for a failed handshake with the upstream of `route`
/// whose certificate was checked for `name`.
pub fn hint(error: &rustls::Error, route: &str, name: &str) -> String {
    use rustls::{AlertDescription, CertificateError, Error};
    match error {
        Error::InvalidCertificate(CertificateError::UnknownIssuer)
        | Error::InvalidCertificate(CertificateError::BadSignature) => format!(
            "route `{route}`: the upstream's certificate for `{name}` is not signed by a trusted CA: set tls.ca_file (upstream_tls.ca_file for the top-level upstream) to the PEM bundle of the CA that issued it"
        ),
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => format!(
            "route `{route}`: the upstream's certificate is not valid for `{name}`: set tls.server_name to a name the certificate lists (or fix the upstream URL)"
        ),
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => format!("route `{route}`: the upstream's certificate for `{name}` has expired: renew it"),
        Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => format!(
            "route `{route}`: the upstream's certificate for `{name}` is not valid yet: check the clocks"
        ),
        Error::AlertReceived(
            AlertDescription::CertificateRequired
            | AlertDescription::HandshakeFailure
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied,
        ) => format!(
            "route `{route}`: the upstream `{name}` refused the handshake ({error}): if it requires a client certificate, set tls.cert_file and tls.key_file to one it trusts"
        ),
        _ => format!(
            "route `{route}`: the TLS handshake with `{name}` failed ({error}): check the upstream's certificate and the route's tls settings"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(yaml: &str) -> (Option<UpstreamTls>, Vec<String>) {
        let raw: RawTls = figment::Figment::new()
            .merge(<figment::providers::Yaml as figment::providers::Format>::string(yaml))
            .extract()
            .unwrap();
        let mut issues = Vec::new();
        let tls = raw.validate("routes[2].tls", &mut issues);
        (tls, issues.iter().map(ToString::to_string).collect())
    }

    struct Files {
        dir: PathBuf,
    }

    impl Files {
        fn new(tag: &str) -> Files {
            let dir = std::env::temp_dir().join(format!(
                "dinggate-tls-{tag}-{}-{}",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Files { dir }
        }
        fn write(&self, name: &str, text: &str) -> String {
            let p = self.dir.join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_valid_block_builds_a_config_that_offers_http_1_1() {
        let f = Files::new("valid");
        let (cert, key) = self_signed("client.internal");
        let ca = f.write("ca.pem", &cert);
        let cert = f.write("cert.pem", &cert);
        let key = f.write("key.pem", &key);
        let (tls, issues) = validate(&format!(
            "ca_file: {ca}\nserver_name: app.internal\ncert_file: {cert}\nkey_file: {key}\n"
        ));
        assert!(issues.is_empty(), "{issues:#?}");
        let tls = tls.unwrap();
        assert_eq!(tls.settings.server_name.as_deref(), Some("app.internal"));
        assert_eq!(tls.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(tls.config.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn every_problem_is_named_with_its_key_all_at_once() {
        let f = Files::new("bad");
        let garbage = f.write("garbage.pem", "not pem at all\n");
        let (tls, issues) = validate(&format!(
            "ca_file: {garbage}\nserver_name: 'https://app:8443/'\ncert_file: /nonexistent/cert.pem\nkey_file: {garbage}\ninsecure_skip_verify: yes\ncolour: blue\n"
        ));
        assert!(tls.is_none());
        let want = [
            "routes[2].tls.colour: unknown key",
            "routes[2].tls.insecure_skip_verify: must be true or false",
            "routes[2].tls.server_name: not a DNS name",
        ];
        for w in want {
            assert!(issues.iter().any(|i| i.starts_with(w)), "{w}: {issues:#?}");
        }
        for w in [
            "routes[2].tls.ca_file: ",
            "routes[2].tls.cert_file: cannot read /nonexistent/cert.pem",
            "routes[2].tls.key_file: ",
        ] {
            assert!(issues.iter().any(|i| i.starts_with(w)), "{w}: {issues:#?}");
        }
        assert!(
            issues.iter().any(|i| i.contains("contains no certificate")),
            "{issues:#?}"
        );
        assert!(
            issues.iter().any(|i| i.contains("contains no private key")),
            "{issues:#?}"
        );
    }

    #[test]
    fn a_key_that_does_not_belong_to_the_certificate_is_refused() {
        let f = Files::new("mismatch");
        let (cert, _) = self_signed("a.internal");
        let (_, other_key) = self_signed("b.internal");
        let cert = f.write("cert.pem", &cert);
        let key = f.write("key.pem", &other_key);
        let (tls, issues) = validate(&format!("cert_file: {cert}\nkey_file: {key}\n"));
        assert!(tls.is_none());
        assert!(
            issues
                .iter()
                .any(|i| i.starts_with("routes[2].tls.key_file: does not go with cert_file")),
            "{issues:#?}"
        );
    }

    #[test]
    fn half_a_client_identity_and_contradictions_are_refused() {
        let (_, issues) = validate("cert_file: /x/cert.pem\n");
        assert!(
            issues
                .iter()
                .any(|i| i.starts_with("routes[2].tls.key_file: missing")),
            "{issues:#?}"
        );
        let (_, issues) = validate("key_file: /x/key.pem\n");
        assert!(
            issues
                .iter()
                .any(|i| i.starts_with("routes[2].tls.cert_file: missing")),
            "{issues:#?}"
        );
        let (_, issues) = validate("ca_file: /x/ca.pem\ninsecure_skip_verify: true\n");
        assert!(
            issues
                .iter()
                .any(|i| i.starts_with("routes[2].tls.insecure_skip_verify: contradicts ca_file")),
            "{issues:#?}"
        );
    }

    #[test]
    fn insecure_skip_verify_needs_no_files() {
        let (tls, issues) = validate("insecure_skip_verify: true\n");
        assert!(issues.is_empty(), "{issues:#?}");
        assert!(tls.unwrap().settings.insecure_skip_verify);
    }

    #[test]
    fn handshake_errors_are_found_inside_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls.clone());
        assert_eq!(handshake_error(&io), Some(&tls));
        let twice = std::io::Error::other(io);
        assert_eq!(handshake_error(&twice), Some(&tls));
        let other = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(handshake_error(&other), None);
        assert!(hint(&tls, "wiki", "app.internal").contains("set tls.ca_file"));
        let name = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        assert!(hint(&name, "wiki", "app.internal").contains("tls.server_name"));
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        assert!(hint(&alert, "wiki", "app.internal").contains("tls.cert_file"));
    }
}
