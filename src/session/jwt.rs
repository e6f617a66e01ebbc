//! The session JWT: the HMAC key ring (with rotation) and minting / verifying session tokens.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::{Enterprise, Identity};

/// Shortest accepted HMAC secret, in bytes (RFC 7518 §3.2: at least the hash output size).
pub const MIN_KEY_LEN: usize = 32;
/// Longest token [`SessionCodec::verify`] will parse, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;
/// How far in the future `iat` may lie (clock skew between gateway replicas), in seconds.
pub const MAX_IAT_SKEW_SECS: i64 = 60;

/// Why a key ring could not be built or a token was refused.
///
/// `Display` never includes the token, a key or a claim value.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A configured secret is shorter than [`MIN_KEY_LEN`].
    #[error("session key is {len} bytes long; at least {MIN_KEY_LEN} bytes are required")]
    KeyTooShort { len: usize },
    /// Two different secrets hash to the same key id (practically impossible; refuse anyway).
    #[error("two different session keys have the same key id")]
    KeyIdCollision,
    /// The token is longer than [`MAX_TOKEN_LEN`].
    #[error("session token is too long")]
    TooLong,
    /// The token is not three base64url parts separated by dots.
    #[error("session token is malformed")]
    Malformed,
    /// The header or payload could not be decoded.
    #[error("session token could not be decoded")]
    Undecodable(#[source] jsonwebtoken::errors::Error),
    /// The header names an algorithm other than HS256 (including `none`).
    #[error("session token uses an unsupported algorithm")]
    UnsupportedAlgorithm,
    /// The header carries `crit` extensions, none of which the gateway understands.
    #[error("session token has critical header extensions")]
    CriticalHeader,
    /// The header has no `kid`.
    #[error("session token has no key id")]
    MissingKid,
    /// The `kid` is not in the key ring.
    #[error("session token was signed with an unknown key")]
    UnknownKid,
    /// The HMAC does not match.
    #[error("session token signature is invalid")]
    BadSignature,
    /// Required claims are missing or have the wrong type.
    #[error("session token claims are invalid")]
    InvalidClaims(#[source] jsonwebtoken::errors::Error),
    /// `sub` or `sid` is empty.
    #[error("session token has an empty subject or session id")]
    EmptySubject,
    /// `iss` is not the configured issuer.
    #[error("session token issuer does not match")]
    WrongIssuer,
    /// `aud` is not the configured audience.
    #[error("session token audience does not match")]
    WrongAudience,
    /// `exp` is not after `now`.
    #[error("session token has expired")]
    Expired,
    /// `iat` is more than [`MAX_IAT_SKEW_SECS`] after `now`.
    #[error("session token was issued in the future")]
    IssuedInFuture,
}

struct RingKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    fingerprint: [u8; 32],
}

/// HMAC secrets for session tokens. The first key signs; every key verifies, so a secret can be
/// rotated by moving it to `previous` for one session lifetime.
///
/// Each key's id is the base64url of the first 8 bytes of SHA-256(secret); tokens carry it in
/// the `kid` header and verification looks it up here only. `Debug` shows key ids, never secrets.
pub struct KeyRing {
    keys: Vec<RingKey>,
}

impl KeyRing {
    /// Builds the ring from the signing secret and older secrets still accepted for verification.
    /// Every secret must be at least [`MIN_KEY_LEN`] bytes. Repeated secrets are kept once.
    pub fn new(current: Vec<u8>, previous: Vec<Vec<u8>>) -> Result<Self, SessionError> {
        let mut keys: Vec<RingKey> = Vec::with_capacity(1 + previous.len());
        for secret in std::iter::once(current).chain(previous) {
            if secret.len() < MIN_KEY_LEN {
                return Err(SessionError::KeyTooShort { len: secret.len() });
            }
            let fingerprint: [u8; 32] = Sha256::digest(&secret).into();
            let kid = URL_SAFE_NO_PAD.encode(&fingerprint[..8]);
            if let Some(existing) = keys.iter().find(|k| k.kid == kid) {
                if existing.fingerprint == fingerprint {
                    continue;
                }
                return Err(SessionError::KeyIdCollision);
            }
            keys.push(RingKey {
                kid,
                encoding: EncodingKey::from_secret(&secret),
                decoding: DecodingKey::from_secret(&secret),
                fingerprint,
            });
        }
        Ok(Self { keys })
    }

    /// The key id new tokens are signed with.
    pub fn current_kid(&self) -> &str {
        // `new` always stores the current key first.
        self.keys.first().map(|k| k.kid.as_str()).unwrap_or("")
    }

    /// All key ids, signing key first.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_str())
    }

    fn find(&self, kid: &str) -> Option<&RingKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("kids", &self.kids().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The claims of a session token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SessionClaims {
    /// Issuer: the gateway's configured issuer (its public URL).
    pub iss: String,
    /// Audience: the configured audience.
    pub aud: String,
    /// Subject: the DingTalk unionId.
    pub sub: String,
    /// Session id: 128 random bits, base64url.
    pub sid: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expiry (Unix seconds); the token is valid while `now < exp`.
    pub exp: i64,
    /// When the user last authenticated with DingTalk (Unix seconds).
    pub auth_time: i64,
    /// Display name.
    pub name: String,
    /// Avatar URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// DingTalk corpId the user logged in through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corp_id: Option<String>,
    /// DingTalk openId.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_id: Option<String>,
    /// Enterprise userid (present with enterprise look-ups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Departments the user is directly in (ids, never names: keeps the cookie small).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depts: Vec<u64>,
    /// Ancestor departments of `depts` that are not themselves in `depts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dtree: Vec<u64>,
    /// Organization administrator.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adm: bool,
    /// Job title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

impl SessionClaims {
    /// The identity these claims describe.
    pub fn identity(&self) -> Identity {
        Identity {
            union_id: self.sub.clone(),
            name: self.name.clone(),
            avatar: self.avatar.clone(),
            email: self.email.clone(),
            corp_id: self.corp_id.clone(),
            open_id: self.open_id.clone(),
            enterprise: self.uid.as_ref().map(|uid| {
                let mut tree: Vec<u64> = self.depts.iter().chain(&self.dtree).copied().collect();
                tree.sort_unstable();
                tree.dedup();
                Enterprise {
                    user_id: uid.clone(),
                    departments: self.depts.clone(),
                    department_tree: tree,
                    admin: self.adm,
                    title: self.title.clone(),
                }
            }),
        }
    }
}

/// Mints and verifies session tokens (HS256 JWTs) for one issuer and audience.
pub struct SessionCodec {
    ring: KeyRing,
    issuer: String,
    audience: String,
    lifetime_secs: i64,
    validation: Validation,
}

impl fmt::Debug for SessionCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionCodec")
            .field("ring", &self.ring)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("lifetime_secs", &self.lifetime_secs)
            .finish()
    }
}

impl SessionCodec {
    /// A codec that signs with `ring`'s current key and issues tokens valid for `lifetime`.
    pub fn new(ring: KeyRing, issuer: String, audience: String, lifetime: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Time is checked by `verify` against the caller's `now`, not the system clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[&issuer]);
        validation.set_audience(&[&audience]);
        Self {
            ring,
            issuer,
            audience,
            lifetime_secs: i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX),
            validation,
        }
    }

    /// The configured session lifetime.
    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(self.lifetime_secs.unsigned_abs())
    }

    /// Mints a token for `identity` at time `now` (Unix seconds): a new random `sid`,
    /// `iat = auth_time = now`, `exp = now + lifetime`, signed HS256 with the current key's `kid`.
    pub fn mint(&self, identity: &Identity, now: i64) -> String {
        self.mint_with_claims(identity, now).0
    }

    /// [`Self::mint`], also returning the new token's claims.
    pub fn mint_with_claims(&self, identity: &Identity, now: i64) -> (String, SessionClaims) {
        let sid = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        let claims = self.claims(identity, sid, now, now);
        (self.sign(&claims), claims)
    }

    /// Re-issues a session after re-validation: fresh identity claims, `iat` = `now`, a new
    /// `exp`, but the same `sid` and `auth_time` (the original login), so a maximum session
    /// age can still be enforced.
    pub fn remint(&self, previous: &SessionClaims, identity: &Identity, now: i64) -> String {
        self.remint_with_claims(previous, identity, now).0
    }

    /// [`Self::remint`], also returning the new token's claims.
    pub fn remint_with_claims(
        &self,
        previous: &SessionClaims,
        identity: &Identity,
        now: i64,
    ) -> (String, SessionClaims) {
        let claims = self.claims(identity, previous.sid.clone(), previous.auth_time, now);
        (self.sign(&claims), claims)
    }

    fn claims(&self, identity: &Identity, sid: String, auth_time: i64, now: i64) -> SessionClaims {
        let ent = identity.enterprise.as_ref();
        let depts = ent.map(|e| e.departments.clone()).unwrap_or_default();
        let dtree = ent
            .map(|e| {
                e.department_tree
                    .iter()
                    .copied()
                    .filter(|d| !depts.contains(d))
                    .collect()
            })
            .unwrap_or_default();
        SessionClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: identity.union_id.clone(),
            sid,
            iat: now,
            exp: now.saturating_add(self.lifetime_secs),
            auth_time,
            name: identity.name.clone(),
            avatar: identity.avatar.clone(),
            email: identity.email.clone(),
            corp_id: identity.corp_id.clone(),
            open_id: identity.open_id.clone(),
            uid: ent.map(|e| e.user_id.clone()),
            depts,
            dtree,
            adm: ent.is_some_and(|e| e.admin),
            title: ent.and_then(|e| e.title.clone()),
        }
    }

    fn sign(&self, claims: &SessionClaims) -> String {
        // `new` guarantees at least one key, so the current key always exists.
        let key = &self.ring.keys[0];
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        // Serialising plain strings and integers cannot fail, and an HMAC key always fits
        // HS256, so jsonwebtoken has no error to report here.
        jsonwebtoken::encode(&header, claims, &key.encoding)
            .expect("HS256 encoding with an HMAC key cannot fail")
    }

    /// Verifies `token` at time `now` (Unix seconds) and returns its claims.
    ///
    /// Checks, in order: length ≤ [`MAX_TOKEN_LEN`]; shape; header `alg` is HS256 (the only
    /// accepted algorithm); no `crit`; `kid` present and in the key ring (the only place keys
    /// come from); the HMAC; `iss` and `aud` equal the configured values; `sub` and `sid`
    /// non-empty; `now < exp`; `iat ≤ now + 60 s`.
    pub fn verify(&self, token: &str, now: i64) -> Result<SessionClaims, SessionError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(SessionError::TooLong);
        }
        let well_formed = token.split('.').count() == 3
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !well_formed {
            return Err(SessionError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(SessionError::Undecodable)?;
        if header.alg != Algorithm::HS256 {
            return Err(SessionError::UnsupportedAlgorithm);
        }
        if header.crit.is_some() {
            return Err(SessionError::CriticalHeader);
        }
        let kid = header.kid.ok_or(SessionError::MissingKid)?;
        let key = self.ring.find(&kid).ok_or(SessionError::UnknownKid)?;

        let claims = jsonwebtoken::decode::<SessionClaims>(token, &key.decoding, &self.validation)
            .map_err(map_jwt_error)?
            .claims;

        if claims.iss != self.issuer {
            return Err(SessionError::WrongIssuer);
        }
        if claims.aud != self.audience {
            return Err(SessionError::WrongAudience);
        }
        if claims.sub.is_empty() || claims.sid.is_empty() {
            return Err(SessionError::EmptySubject);
        }
        if claims.exp <= now {
            return Err(SessionError::Expired);
        }
        if claims.iat > now.saturating_add(MAX_IAT_SKEW_SECS) {
            return Err(SessionError::IssuedInFuture);
        }
        Ok(claims)
    }
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> SessionError {
    match e.kind() {
        ErrorKind::InvalidSignature => SessionError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            SessionError::UnsupportedAlgorithm
        }
        ErrorKind::InvalidIssuer => SessionError::WrongIssuer,
        ErrorKind::InvalidAudience => SessionError::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
            SessionError::InvalidClaims(e)
        }
        ErrorKind::Json(_) => SessionError::InvalidClaims(e),
        _ => SessionError::Undecodable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use serde_json::json;

    const NOW: i64 = 1_750_000_000;
    const KEY_A: &[u8] = b"0123456789abcdef0123456789abcdef-current";
    const KEY_B: &[u8] = b"fedcba9876543210fedcba9876543210-previous";

    fn identity() -> Identity {
        Identity {
            union_id: "union-123".into(),
            name: "张三".into(),
            avatar: Some("https://static.example/a.png".into()),
            email: None,
            corp_id: Some("ding-corp".into()),
            open_id: Some("open-9".into()),
            enterprise: None,
        }
    }

    #[test]
    fn largest_identity_fits_in_a_cookie_with_long_settings() {
        use crate::session::cookie::{
            session_cookie, set_cookie_line_len, CookieSettings, MAX_SET_COOKIE_LINE,
        };
        let lifetime = Duration::from_secs(400 * 86_400);
        let c = SessionCodec::new(
            KeyRing::new(KEY_A.to_vec(), vec![]).unwrap(),
            "https://dinggate.internal.example-company.com.cn:8443".into(),
            "dinggate-production".into(),
            lifetime,
        );
        let settings = CookieSettings {
            name: "__Secure-dinggate-session".into(),
            domain: Some("apps.internal.example-company.com.cn".into()),
            secure: true,
            lifetime,
        };
        let now = 9_999_999_999;
        let largest = Identity::largest();
        assert_eq!(largest.clone().within_limits(), Ok(largest.clone()));
        let token = c.mint(&largest, now);
        let line = set_cookie_line_len(&session_cookie(&settings, &token));
        assert!(
            line < MAX_SET_COOKIE_LINE,
            "Set-Cookie line is {line} bytes"
        );
        // Room is left for longer settings; startup refuses those that would not fit.
        assert!(line < 3800, "Set-Cookie line is {line} bytes");
        println!("largest Set-Cookie line: {line} bytes");
        assert_eq!(c.verify(&token, now).unwrap().identity(), largest);

        // A 3,000-character title, once within limits, is no different.
        let mut long = identity();
        long.enterprise = Some(Enterprise {
            user_id: "u".into(),
            departments: vec![1],
            department_tree: vec![1],
            admin: false,
            title: Some("总".repeat(3000)),
        });
        let token = c.mint(&long.within_limits().unwrap(), now);
        assert!(set_cookie_line_len(&session_cookie(&settings, &token)) < 2000);
    }

    fn codec_with(current: &[u8], previous: &[&[u8]]) -> SessionCodec {
        let ring = KeyRing::new(
            current.to_vec(),
            previous.iter().map(|k| k.to_vec()).collect(),
        )
        .unwrap();
        SessionCodec::new(
            ring,
            "https://gate.example.com".into(),
            "dinggate".into(),
            Duration::from_secs(3600),
        )
    }

    fn codec() -> SessionCodec {
        codec_with(KEY_A, &[])
    }

    fn kid_of(secret: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(&Sha256::digest(secret)[..8])
    }

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    /// A token built by hand: header and payload JSON, signed with HMAC-SHA256 or -SHA512 (or not).
    fn hand_token(
        header: serde_json::Value,
        payload: serde_json::Value,
        sign: Option<(&str, &[u8])>,
    ) -> String {
        let msg = format!("{}.{}", b64(&header), b64(&payload));
        let sig = match sign {
            None => Vec::new(),
            Some(("HS256", key)) => {
                let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
                m.update(msg.as_bytes());
                m.finalize().into_bytes().to_vec()
            }
            Some(("HS512", key)) => {
                let mut m = Hmac::<sha2::Sha512>::new_from_slice(key).unwrap();
                m.update(msg.as_bytes());
                m.finalize().into_bytes().to_vec()
            }
            Some((other, _)) => panic!("unsupported test algorithm {other}"),
        };
        format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    fn good_payload() -> serde_json::Value {
        json!({
            "iss": "https://gate.example.com", "aud": "dinggate", "sub": "union-123",
            "sid": "s1", "iat": NOW, "exp": NOW + 3600, "auth_time": NOW, "name": "n"
        })
    }

    #[test]
    fn round_trip() {
        let c = codec();
        let token = c.mint(&identity(), NOW);
        let claims = c.verify(&token, NOW + 10).unwrap();
        assert_eq!(claims.identity(), identity());
        assert_eq!(claims.iss, "https://gate.example.com");
        assert_eq!(claims.aud, "dinggate");
        assert_eq!(claims.iat, NOW);
        assert_eq!(claims.auth_time, NOW);
        assert_eq!(claims.exp, NOW + 3600);
        assert_eq!(URL_SAFE_NO_PAD.decode(&claims.sid).unwrap().len(), 16);

        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
        assert_eq!(header.kid.as_deref(), Some(kid_of(KEY_A).as_str()));
        assert_eq!(kid_of(KEY_A).len(), 11);

        let other = c.mint(&identity(), NOW);
        assert_ne!(
            c.verify(&other, NOW).unwrap().sid,
            claims.sid,
            "each session gets a fresh sid"
        );
    }

    #[test]
    fn absent_optionals_are_not_serialized() {
        let c = codec();
        let token = c.mint(&identity(), NOW);
        let payload = token.split('.').nth(1).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert!(json.get("email").is_none());
        assert_eq!(json["corp_id"], "ding-corp");
    }

    #[test]
    fn expiry_uses_explicit_now() {
        let c = codec();
        let token = c.mint(&identity(), NOW);
        assert!(c.verify(&token, NOW + 3599).is_ok());
        assert!(matches!(
            c.verify(&token, NOW + 3600),
            Err(SessionError::Expired)
        ));
        assert!(matches!(
            c.verify(&token, NOW + 100_000),
            Err(SessionError::Expired)
        ));
    }

    #[test]
    fn iat_in_the_future_beyond_skew() {
        let c = codec();
        let token = c.mint(&identity(), NOW);
        assert!(c.verify(&token, NOW - 60).is_ok());
        assert!(matches!(
            c.verify(&token, NOW - 61),
            Err(SessionError::IssuedInFuture)
        ));
    }

    #[test]
    fn tampered_payload_rejected() {
        let c = codec();
        let token = c.mint(&identity(), NOW);
        let parts: Vec<&str> = token.split('.').collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        payload["sub"] = json!("someone-else");
        let forged = format!("{}.{}.{}", parts[0], b64(&payload), parts[2]);
        assert!(matches!(
            c.verify(&forged, NOW),
            Err(SessionError::BadSignature)
        ));

        let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        sig[0] ^= 1;
        let flipped = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
        assert!(matches!(
            c.verify(&flipped, NOW),
            Err(SessionError::BadSignature)
        ));
    }

    #[test]
    fn truncated_and_malformed_rejected() {
        let c = codec();
        let token = c.mint(&identity(), NOW);
        let (without_sig, _) = token.rsplit_once('.').unwrap();
        assert!(matches!(
            c.verify(without_sig, NOW),
            Err(SessionError::Malformed)
        ));
        assert!(c.verify(&format!("{without_sig}."), NOW).is_err());
        assert!(c.verify(&token[..token.len() - 5], NOW).is_err());
        for bad in [
            "",
            ".",
            "..",
            "a.b.c",
            "a.b.c.d",
            "e30.e30.",
            "not a token",
            "ä.b.c",
        ] {
            assert!(c.verify(bad, NOW).is_err(), "{bad:?}");
        }
        let huge = format!("{token}{}", "A".repeat(MAX_TOKEN_LEN));
        assert!(matches!(c.verify(&huge, NOW), Err(SessionError::TooLong)));
    }

    #[test]
    fn alg_none_rejected() {
        let c = codec();
        for alg in ["none", "None", "NONE"] {
            let token = hand_token(
                json!({"alg": alg, "typ": "JWT", "kid": kid_of(KEY_A)}),
                good_payload(),
                None,
            );
            assert!(c.verify(&token, NOW).is_err(), "alg {alg}");
        }
    }

    #[test]
    fn other_algorithms_rejected() {
        let c = codec();
        let hs512 = hand_token(
            json!({"alg": "HS512", "typ": "JWT", "kid": kid_of(KEY_A)}),
            good_payload(),
            Some(("HS512", KEY_A)),
        );
        assert!(matches!(
            c.verify(&hs512, NOW),
            Err(SessionError::UnsupportedAlgorithm)
        ));
        // Algorithm confusion: an RS256 header with an HMAC made from the shared secret.
        let rs256 = hand_token(
            json!({"alg": "RS256", "typ": "JWT", "kid": kid_of(KEY_A)}),
            good_payload(),
            Some(("HS256", KEY_A)),
        );
        assert!(matches!(
            c.verify(&rs256, NOW),
            Err(SessionError::UnsupportedAlgorithm)
        ));
    }

    #[test]
    fn hand_built_hs256_is_accepted_so_the_rejections_above_mean_something() {
        let c = codec();
        let token = hand_token(
            json!({"alg": "HS256", "typ": "JWT", "kid": kid_of(KEY_A)}),
            good_payload(),
            Some(("HS256", KEY_A)),
        );
        assert_eq!(c.verify(&token, NOW).unwrap().sub, "union-123");
    }

    #[test]
    fn kid_required_and_looked_up_in_ring() {
        let c = codec();
        let no_kid = hand_token(
            json!({"alg": "HS256", "typ": "JWT"}),
            good_payload(),
            Some(("HS256", KEY_A)),
        );
        assert!(matches!(
            c.verify(&no_kid, NOW),
            Err(SessionError::MissingKid)
        ));
        let unknown = hand_token(
            json!({"alg": "HS256", "typ": "JWT", "kid": "AAAAAAAAAAA"}),
            good_payload(),
            Some(("HS256", KEY_A)),
        );
        assert!(matches!(
            c.verify(&unknown, NOW),
            Err(SessionError::UnknownKid)
        ));
        // A kid of a key that is not in this ring, even though the token is validly signed by it.
        let foreign = b"this-secret-is-not-in-the-ring-at-all!!".as_slice();
        let foreign_token = hand_token(
            json!({"alg": "HS256", "typ": "JWT", "kid": kid_of(foreign)}),
            good_payload(),
            Some(("HS256", foreign)),
        );
        assert!(matches!(
            c.verify(&foreign_token, NOW),
            Err(SessionError::UnknownKid)
        ));
        // The right kid with a signature from another secret.
        let mismatched = hand_token(
            json!({"alg": "HS256", "typ": "JWT", "kid": kid_of(KEY_A)}),
            good_payload(),
            Some(("HS256", foreign)),
        );
        assert!(matches!(
            c.verify(&mismatched, NOW),
            Err(SessionError::BadSignature)
        ));
    }

    #[test]
    fn crit_header_rejected() {
        let c = codec();
        let token = hand_token(
            json!({"alg": "HS256", "typ": "JWT", "kid": kid_of(KEY_A), "crit": ["exp"]}),
            good_payload(),
            Some(("HS256", KEY_A)),
        );
        assert!(matches!(
            c.verify(&token, NOW),
            Err(SessionError::CriticalHeader)
        ));
    }

    #[test]
    fn wrong_issuer_and_audience() {
        let c = codec();
        let signed = |payload| {
            hand_token(
                json!({"alg": "HS256", "typ": "JWT", "kid": kid_of(KEY_A)}),
                payload,
                Some(("HS256", KEY_A)),
            )
        };
        let mut p = good_payload();
        p["iss"] = json!("https://evil.example.com");
        assert!(matches!(
            c.verify(&signed(p), NOW),
            Err(SessionError::WrongIssuer)
        ));
        let mut p = good_payload();
        p["aud"] = json!("other-app");
        assert!(matches!(
            c.verify(&signed(p), NOW),
            Err(SessionError::WrongAudience)
        ));

        let other = SessionCodec::new(
            KeyRing::new(KEY_A.to_vec(), vec![]).unwrap(),
            "https://other-gate.example.com".into(),
            "dinggate".into(),
            Duration::from_secs(3600),
        );
        let token = other.mint(&identity(), NOW);
        assert!(matches!(
            c.verify(&token, NOW),
            Err(SessionError::WrongIssuer)
        ));
    }

    #[test]
    fn missing_or_mistyped_claims() {
        let c = codec();
        let signed = |payload| {
            hand_token(
                json!({"alg": "HS256", "typ": "JWT", "kid": kid_of(KEY_A)}),
                payload,
                Some(("HS256", KEY_A)),
            )
        };
        for field in ["exp", "iss", "aud", "sub", "sid", "iat", "name"] {
            let mut p = good_payload();
            p.as_object_mut().unwrap().remove(field);
            assert!(c.verify(&signed(p), NOW).is_err(), "missing {field}");
        }
        let mut p = good_payload();
        p["exp"] = json!("tomorrow");
        assert!(c.verify(&signed(p), NOW).is_err());
        let mut p = good_payload();
        p["sub"] = json!("");
        assert!(matches!(
            c.verify(&signed(p), NOW),
            Err(SessionError::EmptySubject)
        ));
    }

    #[test]
    fn rotation() {
        let old = codec_with(KEY_B, &[]);
        let old_token = old.mint(&identity(), NOW);

        let rotated = codec_with(KEY_A, &[KEY_B]);
        assert_eq!(
            rotated.verify(&old_token, NOW).unwrap().sub,
            "union-123",
            "tokens signed by the previous key still verify"
        );
        let new_token = rotated.mint(&identity(), NOW);
        let kid = jsonwebtoken::decode_header(&new_token).unwrap().kid;
        assert_eq!(kid.as_deref(), Some(kid_of(KEY_A).as_str()));
        assert_eq!(rotated.ring.current_kid(), kid_of(KEY_A));

        // Once the previous key is dropped, its tokens stop verifying.
        let after = codec_with(KEY_A, &[]);
        assert!(matches!(
            after.verify(&old_token, NOW),
            Err(SessionError::UnknownKid)
        ));
        assert!(after.verify(&new_token, NOW).is_ok());
    }

    #[test]
    fn short_keys_refused_and_duplicates_merged() {
        assert!(matches!(
            KeyRing::new(vec![7; 31], vec![]),
            Err(SessionError::KeyTooShort { len: 31 })
        ));
        assert!(matches!(
            KeyRing::new(KEY_A.to_vec(), vec![b"short".to_vec()]),
            Err(SessionError::KeyTooShort { len: 5 })
        ));
        assert!(KeyRing::new(vec![7; 32], vec![]).is_ok());
        let ring = KeyRing::new(KEY_A.to_vec(), vec![KEY_B.to_vec(), KEY_A.to_vec()]).unwrap();
        assert_eq!(ring.kids().count(), 2);
    }

    #[test]
    fn debug_and_errors_do_not_leak() {
        let ring = KeyRing::new(KEY_A.to_vec(), vec![KEY_B.to_vec()]).unwrap();
        let dbg = format!("{ring:?}");
        assert!(dbg.contains(&kid_of(KEY_A)));
        for secret in [KEY_A, KEY_B] {
            let s = std::str::from_utf8(secret).unwrap();
            assert!(!dbg.contains(&s[..16]), "{dbg}");
            let bytes_dbg = format!("{:?}", &secret[..8]);
            assert!(!dbg.contains(&bytes_dbg[1..bytes_dbg.len() - 1]), "{dbg}");
        }
        let c = codec();
        let codec_dbg = format!("{c:?}");
        assert!(!codec_dbg.contains("0123456789abcdef"), "{codec_dbg}");

        let token = c.mint(&identity(), NOW);
        for t in [
            format!("{token}x"),
            token.replace('.', "!"),
            token[..20].to_string(),
        ] {
            let err = c.verify(&t, NOW).unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(!text.contains(&token[..20]), "{text}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn b64(bytes: &[u8]) -> String {
            URL_SAFE_NO_PAD.encode(bytes)
        }

        /// JSON-ish bytes: mostly the characters a header or claims object is made of.
        fn jsonish() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..80),
                proptest::collection::vec(
                    proptest::sample::select(vec![
                        &b"{"[..],
                        b"}",
                        b"\"alg\"",
                        b"\"HS256\"",
                        b"\"none\"",
                        b"\"kid\"",
                        b":",
                        b",",
                        b"\"crit\"",
                        b"[]",
                        b"\"exp\"",
                        b"1e999",
                        b"-1",
                        b"null",
                        b"\"sub\"",
                        b"\"\"",
                        b"\"\\u0000\"",
                        b"\xff",
                    ]),
                    0..16,
                )
                .prop_map(|p| p.concat()),
            ]
        }

        proptest! {
            #[test]
            fn verify_never_panics_on_any_string(token in ".{0,300}", now in any::<i64>()) {
                let _ = codec().verify(&token, now);
            }

            #[test]
            fn verify_never_panics_on_any_three_part_token(
                header in jsonish(),
                payload in jsonish(),
                sig in proptest::collection::vec(any::<u8>(), 0..40),
                now in any::<i64>(),
            ) {
                let token = format!("{}.{}.{}", b64(&header), b64(&payload), b64(&sig));
                prop_assert!(codec().verify(&token, now).is_err());
            }

            #[test]
            fn verify_never_panics_on_signed_arbitrary_claims(
                payload in jsonish(),
                now in any::<i64>(),
            ) {
                // A correct signature over arbitrary claims: parsing of the claims themselves.
                let c = codec();
                let kid = c.ring.current_kid().to_owned();
                let header = b64(format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#).as_bytes());
                let signing_input = format!("{header}.{}", b64(&payload));
                let mut mac = Hmac::<Sha256>::new_from_slice(KEY_A).unwrap();
                mac.update(signing_input.as_bytes());
                let token = format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()));
                let _ = c.verify(&token, now);
            }
        }
    }
}
