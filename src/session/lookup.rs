//! Reading a request's session: every session cookie verified, revocations applied, conflicts refused.

use http::HeaderMap;

use crate::session::cookie::cookie_values;
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
    pub best: Option<SessionClaims>,
    /// Other valid sessions of the same person (another cookie scope); a sign-out ends them too.
    pub others: Vec<SessionClaims>,
    /// The cookies cannot be trusted as a whole (valid sessions of different people, or too
    /// many copies): the request has no session and the session cookie should be cleared.
    pub conflict: bool,
}

impl Verified {
    /// Every valid session, best first.
    pub fn all(&self) -> impl Iterator<Item = &SessionClaims> {
        self.best.iter().chain(&self.others)
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
    let max_age = app.config.session.max_lifetime.as_secs();
    for token in &tokens[..count] {
        let Some(token) = *token else { continue };
        let claims = match app.sessions.verify(token, now) {
            Ok(claims) => claims,
            Err(e) => {
                tracing::debug!(reason = %e, "session cookie refused");
                continue;
            }
        };
        let age = now.saturating_sub(claims.auth_time);
        // An auth_time in the future (beyond clock skew) was never minted by this gateway:
        // refused, not read as age 0 (which would stretch max_lifetime).
        if age < -MAX_IAT_SKEW_SECS || u64::try_from(age).is_ok_and(|a| a > max_age) {
            continue;
        }
        if app
            .revocations
            .is_revoked(&claims.sid, &claims.sub, claims.auth_time)
            .await?
        {
            tracing::debug!("session cookie refused: signed out");
            continue;
        }
        match &mut out.best {
            None => out.best = Some(claims),
            Some(best) if best.sub != claims.sub => {
                tracing::info!("session cookies of different people; treated as signed out");
                return Ok(Verified {
                    conflict: true,
                    ..Verified::default()
                });
            }
            Some(best) if claims.iat > best.iat => {
                out.others.push(std::mem::replace(best, claims));
            }
            Some(_) => out.others.push(claims),
        }
    }
    Ok(out)
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
