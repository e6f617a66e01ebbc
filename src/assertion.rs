//! Signed identity assertions for upstreams: the asymmetric keys (PEM), their JWKS document, and the short-lived JWT a route's requests carry.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::identity::Identity;

/// A key file that cannot serve: the file and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct KeyError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

/// One public key as the JWKS publishes it.
#[derive(Debug, Clone)]
struct PublicKey {
    /// RFC 7638 thumbprint (SHA-256, base64url): stable, and the same wherever it is computed.
    kid: String,
    jwk: Value,
}

/// A private key read from PEM, with its public half.
struct PrivateKey {
    alg: Algorithm,
    /// PKCS#8 DER, what jsonwebtoken signs with.
    der: Vec<u8>,
    public: PublicKey,
}

/// What a PEM file held.
enum Loaded {
    Private(PrivateKey),
    Public(PublicKey),
}

/// Reads an ES256 (P-256) or Ed25519 key from a PEM file: a private key (PKCS#8
/// `PRIVATE KEY`, or SEC1 `EC PRIVATE KEY` as `openssl ecparam -genkey` writes it) or, for
/// keys that are only published, a public key (`PUBLIC KEY`).
fn load(path: &Path) -> Result<Loaded, KeyError> {
    let problem = |problem: &str| KeyError {
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    let text = std::fs::read_to_string(path).map_err(|e| KeyError {
        path: path.to_owned(),
        problem: format!("cannot read it: {e}"),
    })?;
    let text = text.trim();
    use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    // An uncompressed point always has both coordinates; one without them is refused, never
    // published with empty members.
    let ec_public = |key: p256::PublicKey| {
        let point = key.to_encoded_point(false);
        match (point.x(), point.y()) {
            (Some(x), Some(y)) => Ok(public_key(
                json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(x),
                    "y": URL_SAFE_NO_PAD.encode(y),
                }),
                "ES256",
            )),
            _ => Err(problem("the EC public key has no coordinates")),
        }
    };
    let ed_public = |key: ed25519_dalek::VerifyingKey| {
        public_key(
            json!({ "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(key.as_bytes()) }),
            "EdDSA",
        )
    };
    if text.contains("-----BEGIN PUBLIC KEY-----") {
        if let Ok(key) = p256::PublicKey::from_public_key_pem(text) {
            return Ok(Loaded::Public(ec_public(key)?));
        }
        if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(text) {
            return Ok(Loaded::Public(ed_public(key)));
        }
        return Err(problem(
            "not a P-256 (ES256) or Ed25519 public key; RSA and other curves are not supported",
        ));
    }
    let ec = if text.contains("-----BEGIN EC PRIVATE KEY-----") {
        Some(
            p256::SecretKey::from_sec1_pem(text)
                .map_err(|_| problem("not a P-256 (ES256) EC private key"))?,
        )
    } else if text.contains("-----BEGIN PRIVATE KEY-----") {
        p256::SecretKey::from_pkcs8_pem(text).ok()
    } else if text.contains("ENCRYPTED PRIVATE KEY") {
        return Err(problem(
            "the key is encrypted: give the gateway an unencrypted key file (readable only by it)",
        ));
    } else {
        return Err(problem(
            "no PEM key in it (expected -----BEGIN PRIVATE KEY----- or -----BEGIN PUBLIC KEY-----)",
        ));
    };
    if let Some(key) = ec {
        let der = key
            .to_pkcs8_der()
            .map_err(|_| problem("cannot re-encode the EC key"))?;
        return Ok(Loaded::Private(PrivateKey {
            alg: Algorithm::ES256,
            der: der.as_bytes().to_vec(),
            public: ec_public(key.public_key())?,
        }));
    }
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(text).map_err(|_| {
        problem(
            "not a P-256 (ES256) or Ed25519 private key; RSA and other curves are not supported",
        )
    })?;
    let der = key
        .to_pkcs8_der()
        .map_err(|_| problem("cannot re-encode the Ed25519 key"))?;
    Ok(Loaded::Private(PrivateKey {
        alg: Algorithm::EdDSA,
        der: der.as_bytes().to_vec(),
        public: ed_public(key.verifying_key()),
    }))
}

/// The JWK of `members` (the key's required members only) with its `kid` (RFC 7638 thumbprint
/// of exactly those members, in lexicographic order, which `json!` keeps), `alg` and `use`.
fn public_key(members: Value, alg: &str) -> PublicKey {
    let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(members.to_string()));
    let mut jwk = members;
    if let Value::Object(map) = &mut jwk {
        map.insert("kid".into(), Value::String(kid.clone()));
        map.insert("alg".into(), Value::String(alg.to_owned()));
        map.insert("use".into(), Value::String("sig".to_owned()));
    }
    PublicKey { kid, jwk }
}

/// The keys of `assertion:`: the one that signs, and every public key the JWKS publishes (the
/// signing key's first, then the others: a next key before it signs, a previous one until the
/// assertions it signed have expired).
#[derive(Clone)]
pub struct AssertionKeys {
    alg: Algorithm,
    key: EncodingKey,
    kid: String,
    jwks: Bytes,
    /// A digest of every key, to notice a changed file (the reload watch).
    pub digest: [u8; 32],
}

impl std::fmt::Debug for AssertionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionKeys")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl AssertionKeys {
    /// Loads the signing key (a private key) and the published ones (public or private; only
    /// their public halves are used). Every problem is returned, each with its file.
    pub fn load(signing: &Path, published: &[PathBuf]) -> Result<AssertionKeys, Vec<KeyError>> {
        let mut problems = Vec::new();
        let signer = match load(signing) {
            Ok(Loaded::Private(key)) => Some(key),
            Ok(Loaded::Public(_)) => {
                problems.push(KeyError {
                    path: signing.to_owned(),
                    problem: "is a public key; the signing key must be the private key".to_owned(),
                });
                None
            }
            Err(e) => {
                problems.push(e);
                None
            }
        };
        let mut keys: Vec<PublicKey> = signer.iter().map(|s| s.public.clone()).collect();
        for path in published {
            match load(path) {
                Ok(Loaded::Private(PrivateKey { public, .. }) | Loaded::Public(public)) => {
                    if !keys.iter().any(|k| k.kid == public.kid) {
                        keys.push(public);
                    }
                }
                Err(e) => problems.push(e),
            }
        }
        let Some(signer) = signer.filter(|_| problems.is_empty()) else {
            return Err(problems);
        };
        let jwks =
            serde_json::to_vec(&json!({ "keys": keys.iter().map(|k| &k.jwk).collect::<Vec<_>>() }))
                .unwrap_or_default();
        let mut digest = Sha256::new();
        digest.update(&signer.der);
        for k in &keys {
            digest.update(k.kid.as_bytes());
        }
        let key = match signer.alg {
            Algorithm::EdDSA => EncodingKey::from_ed_der(&signer.der),
            _ => EncodingKey::from_ec_der(&signer.der),
        };
        Ok(AssertionKeys {
            alg: signer.alg,
            key,
            kid: signer.public.kid,
            jwks: Bytes::from(jwks),
            digest: digest.finalize().into(),
        })
    }

    /// The JWKS document (`/_dinggate/jwks.json`).
    pub fn jwks(&self) -> Bytes {
        self.jwks.clone()
    }

    /// The `kid` of the signing key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs an assertion of `identity` for `audience`, issued by `issuer` at `now`, valid for
    /// `lifetime` seconds but never past `not_after` (the session's own end). Returns the header
    /// value and its expiry.
    pub fn sign(
        &self,
        identity: &Identity,
        issuer: &str,
        audience: &str,
        now: i64,
        lifetime: i64,
        not_after: i64,
    ) -> Option<(HeaderValue, i64)> {
        let exp = now.saturating_add(lifetime).min(not_after);
        let enterprise = identity.enterprise.as_ref();
        let claims = AssertionClaims {
            iss: issuer,
            aud: audience,
            sub: &identity.union_id,
            iat: now,
            exp,
            name: &identity.name,
            corp_id: identity.corp_id.as_deref(),
            userid: enterprise.map(|e| e.user_id.as_str()),
            departments: enterprise.map(|e| e.departments.as_slice()),
        };
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.key).ok()?;
        Some((HeaderValue::from_str(&token).ok()?, exp))
    }
}

/// The claims of an assertion.
#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    iat: i64,
    exp: i64,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    corp_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    userid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    departments: Option<&'a [u64]>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
    use jsonwebtoken::{DecodingKey, Validation};
    use p256::pkcs8::DecodePrivateKey;
    use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519};

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("dinggate-assertion-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn identity() -> Identity {
        let mut id = Identity::largest();
        id.union_id = "union-1".into();
        id.name = "张三".into();
        id.corp_id = Some("dingcorp".into());
        id
    }

    /// Signs with `keys` and verifies with the published JWK of the `kid` (jsonwebtoken's own
    /// JWK parsing: the published members must describe the signing key).
    fn sign_and_verify(keys: &AssertionKeys) -> serde_json::Value {
        let (value, exp) = keys
            .sign(
                &identity(),
                "https://gate.example.com",
                "app",
                1_000,
                300,
                i64::MAX,
            )
            .unwrap();
        assert_eq!(exp, 1_300);
        let token = value.to_str().unwrap();
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(keys.kid()));
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&keys.jwks()).unwrap();
        let jwk = jwks.find(keys.kid()).expect("the signing key is published");
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&["app"]);
        validation.set_issuer(&["https://gate.example.com"]);
        validation.validate_exp = false;
        jsonwebtoken::decode::<serde_json::Value>(
            token,
            &DecodingKey::from_jwk(jwk).unwrap(),
            &validation,
        )
        .unwrap()
        .claims
    }

    #[test]
    fn es256_keys_in_pkcs8_and_sec1_sign_what_their_jwk_verifies() {
        let d = dir("es256");
        let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let pkcs8 = write(&d, "pkcs8.pem", &pair.serialize_pem());
        let keys = AssertionKeys::load(&pkcs8, &[]).unwrap();
        assert_eq!(keys.alg, Algorithm::ES256);
        let claims = sign_and_verify(&keys);
        assert_eq!(claims["sub"], "union-1");
        assert_eq!(claims["name"], "张三");
        assert_eq!(claims["corp_id"], "dingcorp");
        assert_eq!(claims["iat"], 1_000);
        // `openssl ecparam -genkey` writes SEC1; the same key, the same kid.
        let sec1 = p256::SecretKey::from_pkcs8_pem(&pair.serialize_pem())
            .unwrap()
            .to_sec1_pem(p256::pkcs8::LineEnding::LF)
            .unwrap();
        let sec1 = write(&d, "sec1.pem", &sec1);
        let again = AssertionKeys::load(&sec1, &[]).unwrap();
        assert_eq!(again.kid(), keys.kid());
        sign_and_verify(&again);
        // The kid is the RFC 7638 thumbprint, as jsonwebtoken computes it from the key.
        let jwk = Jwk::from_encoding_key(
            &EncodingKey::from_ec_der(&pair.serialize_der()),
            Algorithm::ES256,
        )
        .unwrap();
        assert_eq!(keys.kid(), jwk.thumbprint(ThumbprintHash::SHA256));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn ed25519_keys_sign_what_their_jwk_verifies() {
        let d = dir("ed25519");
        let pair = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let path = write(&d, "ed.pem", &pair.serialize_pem());
        let keys = AssertionKeys::load(&path, &[]).unwrap();
        assert_eq!(keys.alg, Algorithm::EdDSA);
        sign_and_verify(&keys);
        let jwks: Value = serde_json::from_slice(&keys.jwks()).unwrap();
        let jwk = &jwks["keys"][0];
        assert_eq!(
            (jwk["kty"].as_str(), jwk["crv"].as_str()),
            (Some("OKP"), Some("Ed25519"))
        );
        let parsed: Jwk = serde_json::from_value(jwk.clone()).unwrap();
        assert_eq!(keys.kid(), parsed.thumbprint(ThumbprintHash::SHA256));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn published_keys_join_the_jwks_once_whether_public_or_private() {
        let d = dir("publish");
        let current = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let next = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let signing = write(&d, "current.pem", &current.serialize_pem());
        let next_public = write(&d, "next.pub.pem", &next.public_key_pem());
        let next_private = write(&d, "next.pem", &next.serialize_pem());
        let keys = AssertionKeys::load(
            &signing,
            &[next_public, next_private.clone(), signing.clone()],
        )
        .unwrap();
        let jwks: Value = serde_json::from_slice(&keys.jwks()).unwrap();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        let next_kid = AssertionKeys::load(&next_private, &[]).unwrap().kid;
        assert_eq!(
            kids,
            vec![keys.kid(), next_kid.as_str()],
            "signing first, no duplicates"
        );
        for key in jwks["keys"].as_array().unwrap() {
            assert!(
                key.get("d").is_none(),
                "no private member is published: {key}"
            );
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn unusable_key_files_are_named_with_the_reason() {
        let d = dir("bad");
        let p384 = write(
            &d,
            "p384.pem",
            &KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)
                .unwrap()
                .serialize_pem(),
        );
        let public = write(
            &d,
            "public.pem",
            &KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                .unwrap()
                .public_key_pem(),
        );
        let garbage = write(&d, "garbage.pem", "hello");
        let encrypted = write(
            &d,
            "enc.pem",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let missing = d.join("missing.pem");
        let problem = |signing: &Path, published: &[PathBuf]| {
            AssertionKeys::load(signing, published)
                .unwrap_err()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert!(problem(&p384, &[])[0].contains("not a P-256 (ES256) or Ed25519 private key"));
        assert!(problem(&public, &[])[0].contains("is a public key"));
        assert!(problem(&garbage, &[])[0].contains("no PEM key"));
        assert!(problem(&encrypted, &[])[0].contains("encrypted"));
        assert!(problem(&missing, &[])[0].contains("cannot read it"));
        // All at once, each with its file.
        let all = problem(&garbage, &[p384.clone(), missing.clone()]);
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(all[1].starts_with(&p384.display().to_string()), "{all:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_assertion_never_outlives_its_session() {
        let d = dir("cap");
        let pair = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let keys = AssertionKeys::load(&write(&d, "k.pem", &pair.serialize_pem()), &[]).unwrap();
        let (_, exp) = keys.sign(&identity(), "i", "a", 1_000, 300, 1_100).unwrap();
        assert_eq!(exp, 1_100);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
