//! What replicas share besides sign-outs: sealed values (the app token, directory answers), short locks, and the DingTalk call budget's pacing.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use redis::AsyncCommands;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf;

use super::{RedisStore, StoreError};

/// Encrypts and authenticates values kept in Redis with a key only the replicas have (derived
/// from the app's secret), bound to the Redis key they are stored under: someone who can read or
/// write Redis can neither read the app token nor make up a directory answer, or move one
/// person's answer to another.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<redacted>)")
    }
}

struct KeyLen;

impl hkdf::KeyType for KeyLen {
    fn len(&self) -> usize {
        CHACHA20_POLY1305.key_len()
    }
}

impl Sealer {
    /// A sealer keyed by HKDF-SHA256 of `secret`, for `context` (replicas that share `secret`
    /// and `context` read each other's values; a new secret makes old values unreadable, which
    /// reads as "not stored").
    pub fn new(secret: &[u8], context: &[u8]) -> Sealer {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"dinggate store v1").extract(secret);
        let info = [context];
        let okm = prk
            .expand(&info, KeyLen)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        let mut bytes = [0u8; 32];
        okm.fill(&mut bytes)
            .expect("the buffer has the requested length");
        Sealer {
            key: LessSafeKey::new(
                UnboundKey::new(&CHACHA20_POLY1305, &bytes).expect("32 bytes is the key length"),
            ),
        }
    }

    /// `plaintext` sealed for the Redis key `name`: base64url of nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> String {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut sealed,
            )
            .expect("values are far below ChaCha20-Poly1305's length limit");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The plaintext of a value sealed for `name`; `None` for anything else (another key, another
    /// name, tampered or not base64).
    pub fn open(&self, name: &str, sealed: &str) -> Option<Vec<u8>> {
        let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut rest = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut rest)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// GCRA reservation: the next free slot of `KEYS[1]` (microseconds, Redis's own clock, so the
/// replicas' clocks do not matter), taken when it is at most `ARGV[2]` µs away. Answers the wait
/// in µs, or -1 (nothing reserved) when the slot is further away.
const PACE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now
if wait > tonumber(ARGV[2]) then return -1 end
redis.call('SET', KEYS[1], string.format('%.0f', tat + interval), 'PX', math.floor((tat + interval - now) / 1000) + 1000)
return wait
";

/// Deletes `KEYS[1]` only while it still holds `ARGV[1]` (a lock is released by its holder only).
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// `EVAL script` on `keys` (every key a script touches is declared, as ACLs and clusters
/// require); the caller adds the arguments.
pub(super) fn eval(script: &str, keys: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len()).arg(keys);
    cmd
}

impl RedisStore {
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Runs `f`, reporting the store up or down by its result.
    pub(super) async fn observed<T>(
        &self,
        now: i64,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = f.await;
        match &result {
            Ok(_) => self.came_back(),
            Err(e) => self.went_down(now, e),
        }
        result
    }

    /// The value stored under `name` by [`RedisStore::put_sealed`], if any and if it opens.
    pub async fn get_sealed(
        &self,
        sealer: &Sealer,
        name: &str,
        now: i64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(name);
        let value: Option<String> = self
            .observed(now, async {
                let mut conn = self.conn().await?;
                self.timed(conn.get(&key)).await
            })
            .await?;
        Ok(value.and_then(|v| sealer.open(&key, &v)))
    }

    /// Stores `value` sealed under `name` for `ttl`.
    pub async fn put_sealed(
        &self,
        sealer: &Sealer,
        name: &str,
        value: &[u8],
        ttl: Duration,
        now: i64,
    ) -> Result<(), StoreError> {
        let key = self.key(name);
        let sealed = sealer.seal(&key, value);
        self.observed(now, async {
            let mut conn = self.conn().await?;
            self.timed(conn.set_ex(&key, sealed, ttl.as_secs().max(1)))
                .await
        })
        .await
    }

    /// Deletes `name`.
    pub async fn delete(&self, name: &str, now: i64) -> Result<(), StoreError> {
        let key = self.key(name);
        self.observed(now, async {
            let mut conn = self.conn().await?;
            self.timed(conn.del(&key)).await
        })
        .await
    }

    /// Takes the lock `name` for at most `ttl`; the token to release it with, or `None` when
    /// another holder has it.
    pub async fn try_lock(
        &self,
        name: &str,
        ttl: Duration,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        let key = self.key(name);
        let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(
                u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
            ));
        let set: Option<String> = self
            .observed(now, async {
                let mut conn = self.conn().await?;
                self.timed(conn.set_options(&key, &token, options)).await
            })
            .await?;
        Ok(set.map(|_| token))
    }

    /// Releases the lock `name` if `token` still holds it.
    pub async fn unlock(&self, name: &str, token: &str, now: i64) -> Result<(), StoreError> {
        let key = self.key(name);
        self.observed(now, async {
            let mut conn = self.conn().await?;
            self.timed(
                eval(UNLOCK, &[&key])
                    .arg(token)
                    .query_async::<i64>(&mut conn),
            )
            .await
            .map(drop)
        })
        .await
    }

    /// Reserves the next slot of the pacer `name`, one every `interval` across every replica;
    /// how long to wait for it, or `None` (nothing reserved) when that is more than `max_wait`.
    pub async fn pace(
        &self,
        name: &str,
        interval: Duration,
        max_wait: Duration,
        now: i64,
    ) -> Result<Option<Duration>, StoreError> {
        let key = self.key(name);
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let wait: i64 = self
            .observed(now, async {
                let mut conn = self.conn().await?;
                self.timed(
                    eval(PACE, &[&key])
                        .arg(micros(interval))
                        .arg(micros(max_wait))
                        .query_async(&mut conn),
                )
                .await
            })
            .await?;
        Ok(u64::try_from(wait).ok().map(Duration::from_micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_secret_under_the_same_name() {
        let sealer = Sealer::new(b"app-secret", b"dingapp");
        let sealed = sealer.seal("dinggate:token", b"t0ken");
        assert!(!sealed.contains("t0ken"));
        assert_eq!(
            sealer.open("dinggate:token", &sealed).as_deref(),
            Some(&b"t0ken"[..])
        );
        assert_eq!(sealer.open("dinggate:dir:other", &sealed), None, "moved");
        let other = Sealer::new(b"other-secret", b"dingapp");
        assert_eq!(
            other.open("dinggate:token", &sealed),
            None,
            "another secret"
        );
        let other_app = Sealer::new(b"app-secret", b"dingother");
        assert_eq!(other_app.open("dinggate:token", &sealed), None);
        let mut tampered = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            sealer.open("dinggate:token", &URL_SAFE_NO_PAD.encode(tampered)),
            None
        );
        assert_eq!(sealer.open("dinggate:token", "%%"), None);
        assert_eq!(sealer.open("dinggate:token", ""), None);
        assert_ne!(
            sealer.seal("n", b"x"),
            sealer.seal("n", b"x"),
            "fresh nonce"
        );
    }
}
