//! A request's session: every session cookie verified (or found in the cache), revocations applied, conflicts refused, re-validated when due.

use crate::metrics::Revalidation;
use std::sync::Arc;
use tracing::Instrument;

use http::HeaderMap;

use cookie::Cookie;

use crate::dingtalk::DingTalkError;
use crate::identity::Identity;
use crate::login::flow::{self, LoginError, Lookup};
use crate::session::cache::VerifiedSession;
use crate::session::cookie::{clear_cookie_everywhere, cookie_values, session_cookie};
use crate::session::jwt::{SessionClaims, MAX_IAT_SKEW_SECS};
use crate::session::revocation::RevocationError;
use crate::state::AppState;

/// Most copies of the session cookie a request may carry (host-only, a `Domain` one, and a
/// few more for parent domains or paths). More than this and the request has no session: each
/// copy costs a signature check, and nobody sends that many in good faith.
pub const MAX_SESSION_COOKIES: usize = 4;

/// How long after a sign-out a re-mint started before it may still produce a token with the
/// revoked `sid`, in seconds: a re-validation in flight (DingTalk time-out and retries) plus
/// clock skew between replicas.
pub const REMINT_MARGIN_SECS: i64 = 300;

/// What the session cookies of a request say.
#[derive(Debug, Default)]
pub struct Verified {
    /// The session to use: the most recently issued valid one.
    pub best: Option<Arc<VerifiedSession>>,
    /// Other valid sessions of the same person (another cookie scope); a sign-out ends them too.
    pub others: Vec<Arc<VerifiedSession>>,
    /// The cookies cannot be trusted as a whole (valid sessions of different people, or too
    /// many copies): the request has no session and the session cookie should be cleared.
    pub conflict: bool,
}

impl Verified {
    /// Every valid session's claims, best first.
    pub fn all(&self) -> impl Iterator<Item = &SessionClaims> {
        self.best.iter().chain(&self.others).map(|s| &s.claims)
    }

    /// The claims of the session to use.
    pub fn best_claims(&self) -> Option<&SessionClaims> {
        self.best.as_deref().map(|s| &s.claims)
    }
}

/// Verifies every cookie named like the session cookie at time `now`.
///
/// A copy counts when it verifies (signature, issuer, audience, expiry), is within
/// `max_lifetime` of its login, and is not revoked. Invalid copies (a sibling subdomain's
/// planted garbage, an old cookie) are ignored, so they cannot cause a login loop; valid copies
/// naming different people, or more than [`MAX_SESSION_COOKIES`] copies, make the request
/// session-less (`conflict`), so a planted session cannot be forced on anyone. Only a store
/// failure is an error (the caller fails closed).
///
/// A token that verified before comes from [`SessionCache`] without being verified again.
pub async fn verify_cookies(
    app: &AppState,
    headers: &HeaderMap,
    now: i64,
) -> Result<Verified, RevocationError> {
    let name = app.cookies.name.as_str();
    let mut out = Verified::default();
    // One pass over the Cookie headers (they are scanned on every request): keep at most one
    // more copy than allowed, to know that there were too many.
    let mut tokens: [Option<&str>; MAX_SESSION_COOKIES + 1] = [None; MAX_SESSION_COOKIES + 1];
    let mut count = 0;
    for token in cookie_values(headers, name).take(MAX_SESSION_COOKIES + 1) {
        tokens[count] = token;
        count += 1;
    }
    if count > MAX_SESSION_COOKIES {
        // Anyone can send this: one debug line, not a warning per request (log flooding).
        tracing::debug!(
            max = MAX_SESSION_COOKIES,
            "too many session cookies; treated as signed out"
        );
        out.conflict = true;
        return Ok(out);
    }
    for token in &tokens[..count] {
        let Some(token) = *token else { continue };
        let Some(session) = verified(app, token, now) else {
            continue;
        };
        // Read before the check: a revocation added meanwhile changes it, and the next request
        // checks again.
        let generation = app.revocations.generation();
        if !session.checked_at(generation) {
            let c = &session.claims;
            if app
                .revocations
                .is_revoked(&c.sid, &c.sub, c.auth_time)
                .await?
            {
                tracing::debug!("session cookie refused: signed out");
                app.session_cache.remove(token);
                continue;
            }
            session.mark_checked(generation);
        }
        match &mut out.best {
            None => out.best = Some(session),
            Some(best) if best.claims.sub != session.claims.sub => {
                tracing::info!("session cookies of different people; treated as signed out");
                return Ok(Verified {
                    conflict: true,
                    ..Verified::default()
                });
            }
            Some(best) if session.claims.iat > best.claims.iat => {
                out.others.push(std::mem::replace(best, session));
            }
            Some(_) => out.others.push(session),
        }
    }
    Ok(out)
}

/// The verified session of one token at `now`: from the cache, or verified (signature, claims,
/// `max_lifetime`) and then cached. `None` for a token that does not verify.
fn verified(app: &AppState, token: &str, now: i64) -> Option<Arc<VerifiedSession>> {
    if let Some(hit) = app.session_cache.get(token, now) {
        return Some(hit);
    }
    let claims = match app.sessions.verify(token, now) {
        Ok(claims) => claims,
        Err(e) => {
            tracing::debug!(reason = %e, "session cookie refused");
            return None;
        }
    };
    let age = now.saturating_sub(claims.auth_time);
    let max_age = app.config.session.max_lifetime.as_secs();
    // An auth_time in the future (beyond clock skew) was never minted by this gateway:
    // refused, not read as age 0 (which would stretch max_lifetime).
    if age < -MAX_IAT_SKEW_SECS || u64::try_from(age).is_ok_and(|a| a > max_age) {
        return None;
    }
    let session = Arc::new(VerifiedSession::new(
        claims,
        &app.config.headers,
        i64::try_from(max_age).unwrap_or(i64::MAX),
    ));
    app.session_cache.insert(token, session.clone());
    Some(session)
}

/// Why a request's session could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// Whether the session was signed out could not be checked (fail closed).
    #[error("session revocations could not be checked")]
    Revocation(#[source] RevocationError),
    /// A due re-validation could not reach DingTalk, and the grace period is over.
    #[error("session re-validation failed")]
    Revalidation(#[source] Box<DingTalkError>),
    /// Re-validation found that the person may no longer sign in (left, deactivated, ...): the
    /// session ends and its cookie should be cleared.
    #[error(transparent)]
    Ended(LoginError),
}

/// A request's session: verified (or cached) and, when due, re-validated.
#[derive(Debug)]
pub struct Session {
    /// The verified session: claims, identity and identity headers.
    pub current: Arc<VerifiedSession>,
    /// A re-minted session cookie to set on the response after re-validation.
    pub refreshed: Option<Cookie<'static>>,
}

impl Session {
    /// Who the request belongs to.
    pub fn identity(&self) -> &Identity {
        &self.current.identity
    }
}

/// The session of a request: `Ok(None)` when there is none (missing, expired, tampered, past
/// `max_lifetime`, signed out, or several cookies naming different people: all the same; for
/// the last, deletions of the session cookie are added to `clear`). A session older than
/// `revalidate_after` is re-checked against the directory first; a person who left or was
/// deactivated is refused ([`LookupError::Ended`]). A revoked session is refused before any
/// re-check, so it is never re-minted.
///
/// `span` makes the span a due re-validation runs in (its DingTalk calls and its log lines
/// are then tied to the request); it is only called when one is due.
pub async fn session_of(
    app: &AppState,
    headers: &HeaderMap,
    clear: &mut Vec<Cookie<'static>>,
    span: impl FnOnce() -> tracing::Span,
) -> Result<Option<Session>, LookupError> {
    let now = app.clock.now();
    let verified = verify_cookies(app, headers, now)
        .await
        .map_err(LookupError::Revocation)?;
    if verified.conflict {
        clear.extend(clear_cookie_everywhere(&app.cookies, &app.cookies.name));
    }
    let Some(current) = verified.best else {
        return Ok(None);
    };
    let s = &app.config.session;
    let claims = &current.claims;
    let age = |since: i64| u64::try_from(now.saturating_sub(since)).unwrap_or(0);
    // A session minted without directory data (look-ups were off at the time) is re-checked
    // at once when look-ups are on: department rules could not match it otherwise.
    let due =
        age(claims.iat) > s.revalidate_after.as_secs() || current.identity.enterprise.is_none();
    if app.directory.is_none() || !due {
        crate::sessions::note_use(app, &current, now);
        return Ok(Some(Session {
            current,
            refreshed: None,
        }));
    }
    let identity = current.identity.clone();
    // Boxed: the directory look-up future (DingTalk calls) is large, and inline it would size
    // every request's future, not only the rare re-validating one.
    let span = span();
    let looked_up = Box::pin(flow::with_membership(app, identity, Lookup::UserId))
        .instrument(span.clone())
        .await;
    // The rest is synchronous: its log lines are written inside the request's span too.
    let _in_span = span.enter();
    match looked_up {
        Ok(fresh) => {
            let (token, fresh_claims) = app.sessions.remint_with_claims(claims, &fresh, now);
            let max_age = i64::try_from(s.max_lifetime.as_secs()).unwrap_or(i64::MAX);
            let fresh = Arc::new(VerifiedSession::new(
                fresh_claims,
                &app.config.headers,
                max_age,
            ));
            // The old token says what the directory said before; the new one is verified
            // already, so the browser's next request with it is a hit.
            forget(app, headers);
            app.session_cache.insert(&token, fresh.clone());
            app.metrics.revalidation(Revalidation::Renewed);
            Ok(Some(Session {
                current: fresh,
                refreshed: Some(session_cookie(&app.cookies, &token)),
            }))
        }
        Err(LoginError::DingTalk(e))
            if age(claims.iat) <= (s.revalidate_after + s.revalidate_grace).as_secs() =>
        {
            tracing::warn!(union_id = %claims.sub, error = %e, "re-validation failed; within revalidate_grace, session kept");
            app.metrics.revalidation(Revalidation::KeptInGrace);
            Ok(Some(Session {
                current,
                refreshed: None,
            }))
        }
        Err(LoginError::DingTalk(e)) => {
            app.metrics.revalidation(Revalidation::Failed);
            Err(LookupError::Revalidation(e))
        }
        Err(e) => {
            app.metrics.revalidation(Revalidation::Ended);
            tracing::info!(union_id = %claims.sub, reason = %e, "session revoked at re-validation");
            forget(app, headers);
            Err(LookupError::Ended(e))
        }
    }
}

/// Drops every session token of the request from the cache.
fn forget(app: &AppState, headers: &HeaderMap) {
    for token in cookie_values(headers, &app.cookies.name)
        .take(MAX_SESSION_COOKIES)
        .flatten()
    {
        app.session_cache.remove(token);
    }
}

/// Until when a revocation of the session `claims` must be kept (Unix seconds), when it is
/// revoked at `now`: as long as some token carrying its `sid` could still be accepted.
///
/// That is the later of its own `exp` and the `exp` of a re-mint that started before the
/// revocation ([`REMINT_MARGIN_SECS`]; later re-mints are refused, since a revoked session is
/// never re-validated), but never past `auth_time + max_lifetime`, when every token of the
/// session is refused anyway.
pub fn revocation_until(app: &AppState, claims: &SessionClaims, now: i64) -> i64 {
    let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let s = &app.config.session;
    let remint = now
        .saturating_add(secs(s.lifetime))
        .saturating_add(REMINT_MARGIN_SECS.max(MAX_IAT_SKEW_SECS));
    let last_valid = claims
        .auth_time
        .saturating_add(secs(s.max_lifetime))
        .saturating_add(1);
    claims.exp.max(remint).min(last_valid)
}

/// Until when a "sign out everywhere" cut-off at `now` must be kept: after `max_lifetime`, no
/// session authenticated before it can be valid.
pub fn cutoff_until(app: &AppState, now: i64) -> i64 {
    let max = i64::try_from(app.config.session.max_lifetime.as_secs()).unwrap_or(i64::MAX);
    now.saturating_add(max).saturating_add(1)
}
