//! People's sessions: recorded at login, noted when used (at most every 5 minutes per replica), listed and ended on `{prefix}/sessions`, and listed or ended by `dinggate sessions`.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::USER_AGENT;
use http::{HeaderMap, Response, StatusCode};

use crate::body::GatewayBody;
use crate::login::flow::{append_cookies, query_params};
use crate::login::sign_out::SignOutError;
use crate::pages::{self, Lang, SessionRow};
use crate::session::cache::VerifiedSession;
use crate::session::cookie::clear_cookie_everywhere;
use crate::session::jwt::SessionClaims;
use crate::session::lookup::{cutoff_until, revocation_until};
use crate::state::AppState;
use crate::store::{Listed, RedisStore, SessionEntry, SEEN_EVERY};

/// Longest device description kept.
const MAX_DEVICE: usize = 64;

/// Browser and system from a User-Agent, e.g. `Chrome on Windows`, `DingTalk on iOS`;
/// `Unknown browser` without one. Only these coarse names are kept, never the whole header.
pub fn device(user_agent: Option<&str>) -> String {
    let Some(ua) = user_agent else {
        return "Unknown browser".to_owned();
    };
    let browser = [
        ("DingTalk", "DingTalk"),
        ("Edg/", "Edge"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Chromium/", "Chromium"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
    ]
    .into_iter()
    .find(|(needle, _)| ua.contains(needle))
    .map_or("Unknown browser", |(_, name)| name);
    let system = [
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Android", "Android"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("Macintosh", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ]
    .into_iter()
    .find(|(needle, _)| ua.contains(needle))
    .map(|(_, name)| name);
    let mut text = match system {
        Some(system) => format!("{browser} on {system}"),
        None => browser.to_owned(),
    };
    text.truncate(MAX_DEVICE);
    text
}

/// The entry recorded for a session minted at login with `claims`.
pub fn entry(
    app: &AppState,
    claims: &SessionClaims,
    headers: &HeaderMap,
    address: IpAddr,
) -> SessionEntry {
    SessionEntry {
        sid: claims.sid.clone(),
        sub: claims.sub.clone(),
        userid: claims.uid.clone(),
        signed_in_at: claims.auth_time,
        // No token of the session is accepted after its login's max_lifetime.
        until: cutoff_until(app, claims.auth_time),
        device: device(headers.get(USER_AGENT).and_then(|v| v.to_str().ok())),
        address: address.to_string(),
    }
}

/// Records a session just minted at login in the shared store, when there is one. A failure
/// only leaves it off the lists (the store reports its outage); the login goes on.
pub async fn record_login(
    app: &AppState,
    claims: &SessionClaims,
    headers: &HeaderMap,
    address: IpAddr,
) {
    if let Some(store) = &app.store {
        let _ = store
            .record_session(&entry(app, claims, headers, address), app.clock.now())
            .await;
    }
}

/// Notes that `session` was used at `now`. On the request path: without a store nothing
/// happens; with one, a single atomic compare, and a background write at most every
/// [`SEEN_EVERY`] per session and replica (never a Redis write per request).
pub fn note_use(app: &AppState, session: &VerifiedSession, now: i64) {
    let Some(store) = &app.store else { return };
    if session.use_due(now, i64::try_from(SEEN_EVERY.as_secs()).unwrap_or(i64::MAX)) {
        let (store, sub, sid) = (
            store.clone(),
            session.claims.sub.clone(),
            session.claims.sid.clone(),
        );
        tokio::spawn(async move {
            let _ = store.seen(&sub, &sid, now).await;
        });
    }
}

/// The person's active sessions: from the store (minus any ended since), or, without one,
/// this browser's alone. The second value says whether the list is the store's.
async fn active(
    app: &AppState,
    current: &SessionClaims,
    headers: &HeaderMap,
    address: IpAddr,
) -> (Vec<Listed>, bool) {
    let now = app.clock.now();
    let this = || Listed {
        entry: entry(app, current, headers, address),
        last_seen: now,
    };
    let Some(store) = &app.store else {
        return (vec![this()], false);
    };
    let mut listed = match store.sessions_of(&current.sub, now).await {
        Ok(listed) => listed,
        // Redis is away: this browser's session is the one known for sure.
        Err(_) => return (vec![this()], false),
    };
    let mut live = Vec::with_capacity(listed.len());
    for l in listed.drain(..) {
        let revoked = app
            .revocations
            .is_revoked(&l.entry.sid, &l.entry.sub, l.entry.signed_in_at)
            .await
            .unwrap_or(true);
        if !revoked {
            live.push(l);
        }
    }
    if !live.iter().any(|l| l.entry.sid == current.sid) {
        // Signed in before the store recorded sessions, or while it was away.
        live.insert(0, this());
    }
    (live, true)
}

/// `GET {prefix}/sessions`: the signed-in person's sessions, as a page (each with an "end"
/// button) or, for API clients, JSON.
pub async fn page(
    app: &AppState,
    current: &SessionClaims,
    headers: &HeaderMap,
    address: IpAddr,
    wants_html: bool,
    lang: Lang,
    request_id: &str,
) -> Response<GatewayBody> {
    let (listed, shared) = active(app, current, headers, address).await;
    if !wants_html {
        let sessions: Vec<_> = listed
            .iter()
            .map(|l| {
                let mut v = serde_json::to_value(l).unwrap_or_default();
                v["current"] = (l.entry.sid == current.sid).into();
                v
            })
            .collect();
        return pages::json(
            StatusCode::OK,
            &serde_json::json!({ "sessions": sessions, "shared": shared }),
        );
    }
    let rows: Vec<SessionRow<'_>> = listed
        .iter()
        .map(|l| SessionRow {
            sid: &l.entry.sid,
            device: &l.entry.device,
            address: &l.entry.address,
            signed_in_at: l.entry.signed_in_at,
            last_seen: l.last_seen,
            current: l.entry.sid == current.sid,
        })
        .collect();
    pages::sessions(&pages::SessionsPage {
        lang,
        action: &format!("{}/sessions", app.config.prefix),
        rows: &rows,
        shared,
        request_id,
        app_name: &app.config.ui.app_name,
    })
}

/// `POST {prefix}/sessions` (after the same-origin check) with `end=<sid>` or `end=all`: ends
/// one of the person's own active sessions, or all of them, on every replica. Ending this
/// browser's session (or all) also deletes its cookie. Pages are sent back to the list; API
/// clients get `{"ended": …}`.
pub async fn end(
    app: &AppState,
    current: &SessionClaims,
    headers: &HeaderMap,
    address: IpAddr,
    body: &str,
    wants_html: bool,
) -> Result<Response<GatewayBody>, SignOutError> {
    let [end] = query_params(Some(body), ["end"])?;
    let end = end.ok_or(SignOutError::BadForm("the form names no session to end"))?;
    let now = app.clock.now();
    let ends_this_browser = if end == "all" {
        app.revocations
            .revoke_person(&current.sub, now, cutoff_until(app, now), now)
            .await
            .map_err(SignOutError::Store)?;
        if let Some(store) = &app.store {
            let _ = store.forget_person(&current.sub, now).await;
        }
        tracing::info!(union_id = %current.sub, "ended all sessions on the sessions page");
        true
    } else {
        let (listed, _) = active(app, current, headers, address).await;
        let Some(target) = listed.iter().find(|l| l.entry.sid == end) else {
            return Err(SignOutError::UnknownSession);
        };
        let until = if target.entry.sid == current.sid {
            revocation_until(app, current, now)
        } else {
            target.entry.until
        };
        app.revocations
            .revoke_session(&target.entry.sid, until, now)
            .await
            .map_err(SignOutError::Store)?;
        if let Some(store) = &app.store {
            let _ = store
                .forget_session(&current.sub, &target.entry.sid, now)
                .await;
        }
        tracing::info!(union_id = %current.sub, "ended a session on the sessions page");
        target.entry.sid == current.sid
    };
    let mut resp = if wants_html {
        let back = if ends_this_browser {
            "/".to_owned()
        } else {
            format!("{}/sessions", app.config.prefix)
        };
        let mut r = pages::redirect(&back);
        *r.status_mut() = StatusCode::SEE_OTHER;
        r
    } else {
        pages::json(StatusCode::OK, &serde_json::json!({ "ended": end }))
    };
    if ends_this_browser {
        append_cookies(
            &mut resp,
            &clear_cookie_everywhere(&app.cookies, &app.cookies.name),
        );
    }
    Ok(resp)
}

/// Why `dinggate sessions` could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No shared store is configured: each replica's sessions exist only in its memory.
    #[error("store.url is not set: with the memory store each gateway knows only its own sign-outs and records no sessions, so there is nothing to list or end from outside; configure store.url (Redis) on every replica")]
    NoStore,
    /// The store could not be set up or did not answer.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// The unionId `user` names: a userid some session recorded, or else `user` itself.
async fn union_id(store: &RedisStore, user: &str, now: i64) -> Result<String, AdminError> {
    Ok(store
        .union_id_of(user, now)
        .await?
        .unwrap_or_else(|| user.to_owned()))
}

/// The store of `config`, for the admin commands.
fn admin_store(config: &crate::config::Config) -> Result<Arc<RedisStore>, AdminError> {
    let store = config.store.as_ref().ok_or(AdminError::NoStore)?;
    Ok(Arc::new(RedisStore::new(
        store,
        prometheus_client::metrics::gauge::Gauge::default(),
    )?))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `dinggate sessions list --user <userid|unionId>`: one line per active session.
pub async fn admin_list(config: &crate::config::Config, user: &str) -> Result<String, AdminError> {
    let store = admin_store(config)?;
    let now = now();
    let sub = union_id(&store, user, now).await?;
    let listed = store.sessions_of(&sub, now).await?;
    let mut out = format!("{} active session(s) of {sub}\n", listed.len());
    for l in &listed {
        out.push_str(&format!(
            "{}  signed in {}  last seen {}  from {}  {}\n",
            l.entry.sid,
            unix(l.entry.signed_in_at),
            unix(l.last_seen),
            l.entry.address,
            l.entry.device,
        ));
    }
    Ok(out)
}

/// `dinggate sessions revoke --user <userid|unionId>`: ends every session of the person
/// signed in up to now, on every replica (they follow the store), and empties their list. The
/// cut-off holds even for sessions the store has no record of; the output says how many
/// recorded ones it ended, so a mistyped name shows up as "0".
pub async fn admin_revoke(
    config: &crate::config::Config,
    user: &str,
) -> Result<String, AdminError> {
    let store = admin_store(config)?;
    let now = now();
    let sub = union_id(&store, user, now).await?;
    let recorded = store.sessions_of(&sub, now).await?.len();
    let max = i64::try_from(config.session.max_lifetime.as_secs()).unwrap_or(i64::MAX);
    let record = crate::store::Record::Person {
        sub: sub.clone(),
        cutoff: now,
        until: now.saturating_add(max).saturating_add(1),
    };
    store.publish(&record, now).await?;
    store.forget_person(&sub, now).await?;
    Ok(format!(
        "ended every session of {sub} signed in up to now ({recorded} recorded), on every replica sharing this store\n"
    ))
}

fn unix(secs: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_named_coarsely() {
        let cases = [
            (Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"), "Chrome on Windows"),
            (Some("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15"), "Safari on macOS"),
            (Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0"), "Edge on Windows"),
            (Some("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 AliApp(DingTalk/7.6.0)"), "DingTalk on iOS"),
            (Some("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"), "Firefox on Linux"),
            (Some("curl/8.5.0"), "curl"),
            (Some("<script>"), "Unknown browser"),
            (None, "Unknown browser"),
        ];
        for (ua, want) in cases {
            assert_eq!(device(ua), want, "{ua:?}");
        }
    }
}
