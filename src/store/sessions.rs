//! Who is signed in where: each person's sessions (device, address, signed in, last seen) as the store keeps them for the sessions page and `dinggate sessions`.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::shared::eval;
use super::{RedisStore, StoreError};

/// One session as recorded at login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEntry {
    /// The session id (the JWT's `sid`).
    pub sid: String,
    /// The person's unionId.
    pub sub: String,
    /// The enterprise userid, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userid: Option<String>,
    /// Unix seconds.
    pub signed_in_at: i64,
    /// Unix seconds: no token of this session is accepted after this.
    pub until: i64,
    /// A short description of the browser and system (from its User-Agent).
    pub device: String,
    /// The client address it signed in from.
    pub address: String,
}

/// A recorded session and when it was last seen (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    /// The session.
    #[serde(flatten)]
    pub entry: SessionEntry,
    /// Unix seconds; at least `signed_in_at`.
    pub last_seen: i64,
}

/// Sets `seen:<sub>`'s field only while the session is recorded (so a late update cannot
/// recreate an expired key without its expiry).
const SEEN: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
return 0
";

impl RedisStore {
    fn sessions_key(&self, sub: &str) -> (String, String) {
        (
            format!("{}sessions:{sub}", self.prefix),
            format!("{}seen:{sub}", self.prefix),
        )
    }

    /// Records `entry` until its `until` (the person's keys live as long as their latest
    /// session), and maps its userid to its unionId for `dinggate sessions --user <userid>`.
    pub async fn record_session(&self, entry: &SessionEntry, now: i64) -> Result<(), StoreError> {
        let ttl = u64::try_from(entry.until.saturating_sub(now))
            .unwrap_or(0)
            .max(1);
        let (sessions, seen) = self.sessions_key(&entry.sub);
        let value = serde_json::to_string(entry).unwrap_or_default();
        let user = entry
            .userid
            .as_ref()
            .map(|u| format!("{}user:{u}", self.prefix));
        self.observed(now, async {
            let mut conn = self.conn().await?;
            let mut pipe = redis::pipe();
            pipe.hset(&sessions, &entry.sid, &value)
                .ignore()
                .expire(&sessions, i64::try_from(ttl).unwrap_or(i64::MAX))
                .ignore()
                .hset(&seen, &entry.sid, now)
                .ignore()
                .expire(&seen, i64::try_from(ttl).unwrap_or(i64::MAX))
                .ignore();
            if let Some(user) = &user {
                pipe.set_ex(user, &entry.sub, ttl).ignore();
            }
            self.timed(pipe.query_async::<()>(&mut conn)).await
        })
        .await
    }

    /// Notes that session `sid` of `sub` was used at `now`.
    pub async fn seen(&self, sub: &str, sid: &str, now: i64) -> Result<(), StoreError> {
        let (sessions, seen) = self.sessions_key(sub);
        self.observed(now, async {
            let mut conn = self.conn().await?;
            self.timed(
                eval(SEEN, &[&sessions, &seen])
                    .arg(sid)
                    .arg(now)
                    .query_async::<i64>(&mut conn),
            )
            .await
            .map(drop)
        })
        .await
    }

    /// The recorded sessions of `sub` that have not expired, newest first.
    pub async fn sessions_of(&self, sub: &str, now: i64) -> Result<Vec<Listed>, StoreError> {
        let (sessions, seen) = self.sessions_key(sub);
        let (entries, seen): (HashMap<String, String>, HashMap<String, i64>) = self
            .observed(now, async {
                let mut conn = self.conn().await?;
                self.timed(
                    redis::pipe()
                        .hgetall(&sessions)
                        .hgetall(&seen)
                        .query_async(&mut conn),
                )
                .await
            })
            .await?;
        let mut listed: Vec<Listed> = entries
            .values()
            .filter_map(|v| serde_json::from_str::<SessionEntry>(v).ok())
            .filter(|e| e.until > now && e.sub == sub)
            .map(|entry| Listed {
                last_seen: seen
                    .get(&entry.sid)
                    .copied()
                    .unwrap_or(entry.signed_in_at)
                    .max(entry.signed_in_at),
                entry,
            })
            .collect();
        listed.sort_by_key(|l| std::cmp::Reverse(l.entry.signed_in_at));
        Ok(listed)
    }

    /// Drops session `sid` of `sub` from the list (after it was ended).
    pub async fn forget_session(&self, sub: &str, sid: &str, now: i64) -> Result<(), StoreError> {
        let (sessions, seen) = self.sessions_key(sub);
        self.observed(now, async {
            let mut conn = self.conn().await?;
            self.timed(
                redis::pipe()
                    .hdel(&sessions, sid)
                    .ignore()
                    .hdel(&seen, sid)
                    .ignore()
                    .query_async::<()>(&mut conn),
            )
            .await
        })
        .await
    }

    /// Drops every session of `sub` from the list (after they were all ended).
    pub async fn forget_person(&self, sub: &str, now: i64) -> Result<(), StoreError> {
        let (sessions, seen) = self.sessions_key(sub);
        self.observed(now, async {
            let mut conn = self.conn().await?;
            self.timed(conn.del(&[&sessions, &seen])).await
        })
        .await
    }

    /// The unionId of the person whose enterprise userid is `userid`, if one of their sessions
    /// recorded it.
    pub async fn union_id_of(&self, userid: &str, now: i64) -> Result<Option<String>, StoreError> {
        let key = format!("{}user:{userid}", self.prefix);
        self.observed(now, async {
            let mut conn = self.conn().await?;
            self.timed(conn.get(&key)).await
        })
        .await
    }
}

/// How long the store's per-replica note of a session's last write is kept before the next
/// use writes again.
pub const SEEN_EVERY: Duration = Duration::from_secs(300);
