//! Organization membership from DingTalk's directory (userid, active flag, departments and their ancestry), briefly cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::dingtalk::{DingTalkClient, DingTalkError, Source};
use crate::identity::{cut, drop_if_longer, limits, Enterprise};

/// Most entries the cache holds before expired ones are dropped (and, if still full, all).
const MAX_ENTRIES: usize = 50_000;

/// What the directory says about a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Membership {
    /// A current, active member.
    Member(Member),
    /// Not (or no longer) in the organization.
    NotMember,
    /// In the organization but the account is not active.
    Inactive,
}

/// A current member with the details the gateway uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Directory data for policies and headers.
    pub enterprise: Enterprise,
    /// The person's name in the organization (preferred over the DingTalk nickname).
    pub name: String,
    /// Avatar from the directory, when set.
    pub avatar: Option<String>,
    /// E-mail (the enterprise mailbox when there is one), when set.
    pub email: Option<String>,
    /// The unionId DingTalk reports for this userid, when it does.
    pub union_id: Option<String>,
}

/// Directory look-ups with a short TTL cache keyed by unionId or userid, so bursts of logins
/// and re-validations stay far below DingTalk's per-API QPS limits.
pub struct Directory {
    client: DingTalkClient,
    ttl_secs: i64,
    cache: Mutex<HashMap<String, (i64, Membership)>>,
    /// One lock per key being looked up, so concurrent misses (a page's many requests right
    /// after `revalidate_after`) make one set of DingTalk calls, not one per request.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Department names for 403 pages, by id, with when they were fetched (`None`: no such
    /// department, or DingTalk did not say). Only ids named in the route config are asked for.
    department_names: Mutex<HashMap<u64, (i64, Option<String>)>>,
}

/// Longest department name shown (characters); DingTalk allows far shorter ones.
const MAX_DEPARTMENT_NAME: usize = 64;
/// Most departments whose names one 403 page looks up.
const MAX_NAMES_PER_PAGE: usize = 10;
/// How long a department name is kept at least, even with the directory cache off.
const MIN_NAME_TTL_SECS: i64 = 60;
/// How long a 403 page waits for department names before naming departments by number.
const NAMES_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl Directory {
    /// A directory over `client`, caching answers for `ttl_secs` (0 disables the cache).
    pub fn new(client: DingTalkClient, ttl_secs: i64) -> Self {
        Self {
            client,
            ttl_secs,
            cache: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            department_names: Mutex::new(HashMap::new()),
        }
    }

    /// Names of the departments `ids` (at most the first ten), from a cache or DingTalk's
    /// `department/get`, for wording a 403 page. Best effort: a department DingTalk does not know,
    /// or any failure or slowness of DingTalk, leaves its id out (the page then names it by
    /// number); nothing is decided on these names.
    pub async fn department_names(&self, ids: &[u64], now: i64) -> HashMap<u64, String> {
        let ttl = self.ttl_secs.max(MIN_NAME_TTL_SECS);
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self
                .department_names
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for id in ids.iter().take(MAX_NAMES_PER_PAGE) {
                match cache.get(id) {
                    Some((at, name)) if now - at < ttl => {
                        if let Some(name) = name {
                            out.insert(*id, name.clone());
                        }
                    }
                    _ => missing.push(*id),
                }
            }
        }
        for id in missing {
            let fetched =
                tokio::time::timeout(NAMES_TIMEOUT, self.client.department_name(id)).await;
            let name = match fetched {
                Ok(Ok(name)) => {
                    name.map(|n| n.chars().take(MAX_DEPARTMENT_NAME).collect::<String>())
                }
                Ok(Err(e)) => {
                    tracing::warn!(department = id, error = %e, "department name not available; the 403 page shows its number");
                    None
                }
                Err(_) => {
                    tracing::warn!(
                        department = id,
                        "department name look-up timed out; the 403 page shows its number"
                    );
                    None
                }
            };
            if let Some(name) = &name {
                out.insert(id, name.clone());
            }
            // Failures are remembered too, so a DingTalk outage costs one call per department
            // and TTL, not one per refused request. The ids come from the route config, so
            // the map stays as small as that.
            self.department_names
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, (now, name));
        }
        out
    }

    /// Membership of the person with this unionId (`getbyunionid`, then the userid look-ups).
    pub async fn by_union_id(&self, union_id: &str, now: i64) -> Result<Membership, DingTalkError> {
        self.single_flight(format!("u:{union_id}"), now, || async {
            Ok(match self.client.user_id_by_union_id(union_id).await? {
                None => Membership::NotMember,
                Some(user_id) => self.fetch(&user_id).await?,
            })
        })
        .await
    }

    /// Membership of the person with this enterprise userid (the in-client login knows it already).
    pub async fn by_user_id(&self, user_id: &str, now: i64) -> Result<Membership, DingTalkError> {
        self.single_flight(format!("i:{user_id}"), now, || self.fetch(user_id))
            .await
    }

    /// Answers from the cache, or runs `lookup` once per key however many callers miss at once.
    async fn single_flight<F, Fut>(
        &self,
        key: String,
        now: i64,
        lookup: F,
    ) -> Result<Membership, DingTalkError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Membership, DingTalkError>>,
    {
        let metrics = &self.client.settings().metrics;
        if let Some(hit) = self.cached(&key, now) {
            metrics.directory("hit");
            return Ok(hit);
        }
        let lock = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            in_flight.entry(key.clone()).or_default().clone()
        };
        let result = {
            let _turn = lock.lock().await;
            // Whoever held the lock before us may have filled the cache.
            match self.cached(&key, now) {
                Some(hit) => {
                    metrics.directory("hit");
                    Ok(hit)
                }
                None => self.look_up(&key, now, lookup).await,
            }
        };
        drop(lock);
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map holds it now: nobody is waiting, so the entry can go.
        if in_flight
            .get(&key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            in_flight.remove(&key);
        }
        result
    }

    /// Asks the fleet's store (which one replica fills per person and TTL) or DingTalk, and
    /// caches the answer until it expires fleet-wide.
    async fn look_up<F, Fut>(
        &self,
        key: &str,
        now: i64,
        lookup: F,
    ) -> Result<Membership, DingTalkError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Membership, DingTalkError>>,
    {
        let metrics = &self.client.settings().metrics;
        let ttl = self.ttl_secs;
        let fetch = async {
            let answer = lookup().await?;
            let entry = Shared {
                expires: now.saturating_add(ttl),
                membership: answer,
            };
            let keep = std::time::Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
            Ok::<_, DingTalkError>((entry, keep))
        };
        let (entry, source) = match self.client.fleet() {
            Some(fleet) if ttl > 0 => {
                fleet
                    .get_or_fetch(
                        &format!("dir:{}:{key}", fleet.scope),
                        self.client.settings().timeout,
                        |e: &Shared| e.expires > now,
                        fetch,
                    )
                    .await?
            }
            _ => fetch.await.map(|(e, _)| (e, Source::Fetched))?,
        };
        metrics.directory(match source {
            Source::Store => "shared",
            Source::Fetched => "miss",
        });
        self.store(key.to_owned(), entry.membership.clone(), entry.expires, now);
        Ok(entry.membership)
    }

    async fn fetch(&self, user_id: &str) -> Result<Membership, DingTalkError> {
        let detail = match self.client.user_detail(user_id).await {
            Ok(d) => d,
            Err(e) if e.is_not_member() => return Ok(Membership::NotMember),
            Err(e) => return Err(e),
        };
        if !detail.active {
            return Ok(Membership::Inactive);
        }
        let chains = match self.client.department_chains(user_id).await {
            Ok(c) => c,
            Err(e) if e.is_not_member() => return Ok(Membership::NotMember),
            Err(e) => return Err(e),
        };
        let mut departments = detail.dept_id_list.clone();
        departments.sort_unstable();
        departments.dedup();
        let mut tree: Vec<u64> = chains
            .into_iter()
            .flatten()
            .chain(departments.iter().copied())
            .collect();
        tree.sort_unstable();
        tree.dedup();
        // Cut or dropped to the session limits here already, so the cache never holds more
        // than a session could carry (ids and departments are checked at login).
        let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
        let bounded = |s: Option<String>, max: usize| drop_if_longer(non_empty(s), max);
        Ok(Membership::Member(Member {
            enterprise: Enterprise {
                user_id: detail.userid.clone(),
                departments,
                department_tree: tree,
                admin: detail.admin,
                title: non_empty(detail.title.clone()).map(|t| cut(&t, limits::TITLE).to_owned()),
            },
            name: cut(&detail.name, limits::NAME).to_owned(),
            avatar: bounded(detail.avatar.clone(), limits::AVATAR),
            email: bounded(detail.org_email.clone(), limits::EMAIL)
                .or_else(|| bounded(detail.email.clone(), limits::EMAIL)),
            union_id: non_empty(detail.unionid.clone()),
        }))
    }

    fn cached(&self, key: &str, now: i64) -> Option<Membership> {
        if self.ttl_secs <= 0 {
            return None;
        }
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|(expires, _)| *expires > now)
            .map(|(_, m)| m.clone())
    }

    fn store(&self, key: String, membership: Membership, expires: i64, now: i64) {
        if self.ttl_secs <= 0 {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_ENTRIES {
            cache.retain(|_, (expires, _)| *expires > now);
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, (expires, membership));
    }
}

/// A directory answer as the replicas share it (sealed in the store): every replica keeps it
/// until the same moment, so the fleet asks DingTalk once per person and TTL.
#[derive(Serialize, Deserialize)]
struct Shared {
    /// Unix seconds.
    expires: i64,
    membership: Membership,
}
