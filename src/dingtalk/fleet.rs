//! Values one replica fetches from DingTalk for the whole fleet (the app token, directory answers): sealed in the store, fetched by one replica at a time.

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::budget::unix_now;
use super::client::Fleet;

/// How often a replica that lost the race looks for the winner's value.
const POLL: Duration = Duration::from_millis(25);

/// Where a shared value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Another replica (or this one earlier) fetched it.
    Store,
    /// This replica fetched it just now.
    Fetched,
}

impl Fleet {
    /// The value stored under `name` while `fresh` says it is; otherwise `fetch` runs on at
    /// most one replica at a time (the lock `{name}:lock`) and its value is stored for the
    /// `Duration` it returns. The others look again every 25 ms, and take the lock themselves
    /// when it is free with nothing stored (its holder failed); after `wait` they fetch without
    /// it. Whenever the store does not answer, this replica simply fetches: sharing saves
    /// calls, it is never needed.
    pub(crate) async fn get_or_fetch<T, E, F>(
        &self,
        name: &str,
        wait: Duration,
        fresh: impl Fn(&T) -> bool,
        fetch: F,
    ) -> Result<(T, Source), E>
    where
        T: Serialize + DeserializeOwned,
        F: Future<Output = Result<(T, Duration), E>>,
    {
        let lock = format!("{name}:lock");
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let Ok(bytes) = self.store.get_sealed(&self.sealer, name, unix_now()).await else {
                break;
            };
            let stored = bytes
                .and_then(|b| serde_json::from_slice::<T>(&b).ok())
                .filter(|v| fresh(v));
            if let Some(v) = stored {
                return Ok((v, Source::Store));
            }
            match self.store.try_lock(&lock, wait, unix_now()).await {
                Ok(Some(token)) => {
                    let result = self.fetch_and_put(name, fetch).await;
                    let _ = self.store.unlock(&lock, &token, unix_now()).await;
                    return result;
                }
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await;
                }
                Ok(None) => {
                    tracing::debug!(
                        name,
                        "another replica's fetch did not arrive in time; fetching here"
                    );
                    return self.fetch_and_put(name, fetch).await;
                }
                Err(_) => break,
            }
        }
        fetch.await.map(|(v, _)| (v, Source::Fetched))
    }

    async fn fetch_and_put<T: Serialize, E>(
        &self,
        name: &str,
        fetch: impl Future<Output = Result<(T, Duration), E>>,
    ) -> Result<(T, Source), E> {
        let (value, ttl) = fetch.await?;
        if !ttl.is_zero() {
            if let Ok(bytes) = serde_json::to_vec(&value) {
                let _ = self
                    .store
                    .put_sealed(&self.sealer, name, &bytes, ttl, unix_now())
                    .await;
            }
        }
        Ok((value, Source::Fetched))
    }

    /// Reads the value under `name` (sealed by this fleet), if any.
    pub(crate) async fn get<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        let bytes = self
            .store
            .get_sealed(&self.sealer, name, unix_now())
            .await
            .ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// Deletes the value under `name`.
    pub(crate) async fn forget(&self, name: &str) {
        let _ = self.store.delete(name, unix_now()).await;
    }
}
