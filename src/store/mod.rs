//! The shared store (`store.url`): Redis holds what replicas must agree on — sign-outs and consumed login states — and feeds each replica's local copy, which the fast path reads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use prometheus_client::metrics::gauge::Gauge;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::config::StoreConfig;

mod sessions;
mod shared;
pub use sessions::{Listed, SessionEntry, SEEN_EVERY};
pub use shared::Sealer;

/// Why the store did not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis refused the command or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No answer within `store.timeout`.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// One sign-out, as stored and published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k")]
pub enum Record {
    /// Session `sid` ended; the record matters until `until`.
    #[serde(rename = "s")]
    Session {
        /// The session id.
        sid: String,
        /// Unix seconds.
        until: i64,
    },
    /// Every session of `sub` authenticated at or before `cutoff` ended.
    #[serde(rename = "p")]
    Person {
        /// The unionId.
        sub: String,
        /// Unix seconds.
        cutoff: i64,
        /// Unix seconds.
        until: i64,
    },
}

impl Record {
    fn key(&self, prefix: &str) -> String {
        match self {
            Record::Session { sid, .. } => format!("{prefix}rev:s:{sid}"),
            Record::Person { sub, .. } => format!("{prefix}rev:p:{sub}"),
        }
    }

    fn until(&self) -> i64 {
        match self {
            Record::Session { until, .. } | Record::Person { until, .. } => *until,
        }
    }
}

/// A Redis (or Valkey) store shared by the replicas.
pub struct RedisStore {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    up: AtomicBool,
    /// Why the store is down, since when (Unix seconds).
    down: Mutex<Option<(i64, String)>>,
    /// Sign-outs made while Redis was unreachable, sent when it is back.
    pending: Mutex<Vec<Record>>,
    /// `dinggate_store_up`.
    up_gauge: Gauge,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("up", &self.up.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store as `config` says (`redis://` or `rediss://`, user and password in the URL; for
    /// TLS, the server's certificate checked against `ca_file` or else the system's roots);
    /// every command gets at most `config.timeout`. Nothing connects until first use.
    pub fn new(config: &StoreConfig, up_gauge: Gauge) -> Result<RedisStore, StoreError> {
        up_gauge.set(1);
        let url = config.url.expose().as_str();
        let client = match &config.ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            )?,
            None => redis::Client::open(url)?,
        };
        Ok(RedisStore {
            up_gauge,
            client,
            conn: OnceCell::new(),
            prefix: "dinggate:".to_owned(),
            timeout: config.timeout,
            up: AtomicBool::new(true),
            down: Mutex::new(None),
            pending: Mutex::new(Vec::new()),
        })
    }

    fn channel(&self) -> String {
        format!("{}revocations", self.prefix)
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, redis::RedisError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r.map_err(StoreError::from),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1);
                self.timed(ConnectionManager::new_with_config(
                    self.client.clone(),
                    config,
                ))
                .await
            })
            .await?;
        Ok(conn.clone())
    }

    /// Stores `record` (until it no longer matters) and tells every replica. When Redis cannot
    /// be reached the record is kept and sent once it is back; the error says why.
    pub async fn publish(&self, record: &Record, now: i64) -> Result<(), StoreError> {
        let result = self.send(record, now).await;
        match &result {
            Ok(()) => self.came_back(),
            Err(e) => {
                self.went_down(now, e);
                self.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(record.clone());
            }
        }
        result
    }

    async fn send(&self, record: &Record, now: i64) -> Result<(), StoreError> {
        let ttl = u64::try_from(record.until().saturating_sub(now))
            .unwrap_or(0)
            .max(1);
        let value = serde_json::to_string(record).unwrap_or_default();
        let mut conn = self.conn().await?;
        let key = record.key(&self.prefix);
        self.timed(async {
            redis::pipe()
                .set_ex(&key, &value, ttl)
                .ignore()
                .publish(self.channel(), &value)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    /// Marks `key` as used for `ttl`; `false` when some replica marked it first.
    pub async fn claim_once(&self, key: &str, ttl: Duration, now: i64) -> Result<bool, StoreError> {
        let key = format!("{}state:{key}", self.prefix);
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::EX(ttl.as_secs().max(1)));
        self.observed(now, async {
            let mut conn = self.conn().await?;
            let set: Option<String> = self.timed(conn.set_options(&key, 1, options)).await?;
            Ok(set.is_some())
        })
        .await
    }

    /// Stores `records` that Redis does not hold (`SET NX`: what another replica stored stays;
    /// every copy merges by keeping the later cut-off), in batches.
    async fn write_back(&self, records: &[Record], now: i64) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        for batch in records.chunks(500) {
            let mut pipe = redis::pipe();
            for record in batch {
                let ttl = u64::try_from(record.until().saturating_sub(now)).unwrap_or(0);
                if ttl == 0 {
                    continue;
                }
                let value = serde_json::to_string(record).unwrap_or_default();
                let options = redis::SetOptions::default()
                    .conditional_set(redis::ExistenceCheck::NX)
                    .with_expiration(redis::SetExpiry::EX(ttl));
                pipe.set_options(record.key(&self.prefix), value, options)
                    .ignore();
            }
            self.timed(pipe.query_async::<()>(&mut conn)).await?;
        }
        Ok(())
    }

    /// Every stored sign-out.
    async fn records(&self) -> Result<Vec<Record>, StoreError> {
        let mut conn = self.conn().await?;
        let pattern = format!("{}rev:*", self.prefix);
        let keys: Vec<String> = self
            .timed(async {
                let mut iter = conn.scan_match::<_, String>(&pattern).await?;
                let mut keys = Vec::new();
                while let Some(k) = iter.next_item().await {
                    keys.push(k?);
                }
                Ok(keys)
            })
            .await?;
        let mut records = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let values: Vec<Option<String>> = self.timed(conn.mget(chunk)).await?;
            records.extend(
                values
                    .into_iter()
                    .flatten()
                    .filter_map(|v| serde_json::from_str(&v).ok()),
            );
        }
        Ok(records)
    }

    fn went_down(&self, now: i64, error: &StoreError) {
        self.up_gauge.set(0);
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::error!(
                error = %error,
                "the shared store (store.url) is unreachable: signed-in people keep working, logins use this replica's own replay protection, sign-outs are kept here and sent when it is back"
            );
        }
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        let since = down.as_ref().map_or(now, |(s, _)| *s);
        *down = Some((since, error.to_string()));
    }

    fn came_back(&self) {
        self.up_gauge.set(1);
        if !self.up.swap(true, Ordering::AcqRel) {
            tracing::info!("the shared store (store.url) is reachable again");
        }
        *self.down.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether the store answered last time, and if not, since when and why.
    pub fn health(&self) -> Result<(), (i64, String)> {
        match &*self.down.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(d) => Err(d.clone()),
            None => Ok(()),
        }
    }

    /// Keeps this replica's copy of the sign-outs in step with every other replica's: follows
    /// the channel, and after each (re)connection writes back what this replica holds (`held`:
    /// a Redis that restarted empty gets every live sign-out again, and replicas started later
    /// learn them) and loads everything; loads again every `resync`. Runs until the task is
    /// dropped.
    pub async fn follow(
        &self,
        resync: Duration,
        now: impl Fn() -> i64,
        held: impl Fn() -> Vec<Record>,
        apply: impl Fn(Record),
    ) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.follow_once(resync, &now, &held, &apply).await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => {
                    self.went_down(now(), &e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn follow_once(
        &self,
        resync: Duration,
        now: &impl Fn() -> i64,
        held: &impl Fn() -> Vec<Record>,
        apply: &impl Fn(Record),
    ) -> Result<(), StoreError> {
        let mut pubsub = self.timed(self.client.get_async_pubsub()).await?;
        // Subscribed before the full load: nothing published in between is missed.
        self.timed(pubsub.subscribe(self.channel())).await?;
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for (i, record) in pending.iter().enumerate() {
            if let Err(e) = self.send(record, now()).await {
                self.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(pending[i..].iter().cloned());
                return Err(e);
            }
        }
        self.write_back(&held(), now()).await?;
        for record in self.records().await? {
            apply(record);
        }
        self.came_back();
        let mut messages = pubsub.on_message();
        let mut tick = tokio::time::interval(resync);
        tick.tick().await;
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else {
                        return Err(StoreError::Redis(redis::RedisError::from((
                            redis::ErrorKind::Io,
                            "subscription closed",
                        ))));
                    };
                    let payload: String = message.get_payload().unwrap_or_default();
                    if let Ok(record) = serde_json::from_str(&payload) {
                        apply(record);
                    }
                }
                _ = tick.tick() => {
                    for record in self.records().await? {
                        apply(record);
                    }
                    self.came_back();
                }
            }
        }
    }
}
