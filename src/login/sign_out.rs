//! Signing out: the confirmation page, the same-origin check on state-changing POSTs, and revocation.

use http::header::ORIGIN;
use http::{HeaderMap, HeaderName, Response, StatusCode};
use url::Url;

use crate::body::GatewayBody;
use crate::login::flow::{append_cookies, query_params, LoginError};
use crate::login::redirect::RedirectError;
use crate::pages::{self, Lang};
use crate::proxy::names::SEC_FETCH_SITE;
use crate::session::cookie::clear_cookie_everywhere;
use crate::session::lookup::{cutoff_until, revocation_until, verify_cookies};
use crate::session::revocation::RevocationError;
use crate::state::AppState;

/// Largest sign-out form body read (it carries `rd` and `everywhere`).
const MAX_FORM_BODY: usize = 4096;
/// Time allowed to receive that body.
const FORM_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a sign-out was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignOutError {
    /// The form or query is malformed (too long, repeated or unknown values, unreadable body).
    #[error("malformed sign-out request: {0}")]
    BadForm(&'static str),
    /// The return URL is not allowed.
    #[error("return URL refused: {0}")]
    BadReturnUrl(#[source] RedirectError),
    /// The revocation store could not record the sign-out.
    #[error("the sign-out could not be recorded")]
    Store(#[source] RevocationError),
    /// The sessions page was asked to end a session that is not one of the person's active ones.
    #[error("no active session of this person has that id")]
    UnknownSession,
}

impl From<LoginError> for SignOutError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::BadQuery(why) => SignOutError::BadForm(why),
            LoginError::BadReturnUrl(r) => SignOutError::BadReturnUrl(r),
            // Only `query_params` is converted, and it only fails with `BadQuery`; anything
            // else would still be a refusal, never a default.
            _ => SignOutError::BadForm("the parameters could not be read"),
        }
    }
}

/// A state-changing POST that may have been sent by another site's page.
#[derive(Debug, thiserror::Error)]
#[error("cross-site request refused: {0}")]
pub struct CrossSite(pub &'static str);

/// Accepts a state-changing POST only when the browser says it comes from the gateway itself:
/// every `Origin` / `Sec-Fetch-Site` present must say so, and at least one must be present.
///
/// `Origin` must be exactly the origin of `public_url` or of this request's own host (with
/// `public_url`'s scheme: host routes serve the gateway's pages on their own names);
/// `Sec-Fetch-Site` must be `same-origin`. `Origin: null` counts as absent. Browsers set both on every cross-site POST and page
/// scripts cannot change them, so a form or `fetch` on another site (including a sibling
/// subdomain) is refused.
pub fn check_same_origin(
    public_url: &Url,
    host: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), CrossSite> {
    let single = |name: HeaderName| {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some(v), None) => v
                .to_str()
                .map(Some)
                .map_err(|_| CrossSite("unreadable origin header")),
            (Some(_), Some(_)) => Err(CrossSite("repeated origin header")),
        }
    };
    let origin = single(ORIGIN)?;
    let fetch_site = single(SEC_FETCH_SITE)?;
    if fetch_site.is_some_and(|s| !s.eq_ignore_ascii_case("same-origin")) {
        return Err(CrossSite("Sec-Fetch-Site is not same-origin"));
    }
    // `Origin: null` is what a browser sends for a form POST from a page with
    // `Referrer-Policy: no-referrer` (or from an opaque origin): it proves nothing either way,
    // so `Sec-Fetch-Site` alone decides.
    let Some(origin) = origin.filter(|o| *o != "null") else {
        return match fetch_site {
            Some(_) => Ok(()),
            None => Err(CrossSite("neither Origin nor Sec-Fetch-Site")),
        };
    };
    let own_origin = public_url.origin().ascii_serialization();
    if origin.eq_ignore_ascii_case(&own_origin) {
        return Ok(());
    }
    let host_origin = host
        .filter(|h| !h.is_empty() && !h.contains(['@', '/', '\\', '?', '#']))
        .and_then(|h| Url::parse(&format!("{}://{h}", public_url.scheme())).ok())
        .map(|u| u.origin().ascii_serialization());
    match host_origin {
        Some(h) if origin.eq_ignore_ascii_case(&h) => Ok(()),
        _ => Err(CrossSite("Origin is not the gateway's")),
    }
}

/// The validated `rd` of a query, `None` when absent or empty.
fn validated_rd(app: &AppState, rd: Option<String>) -> Result<Option<String>, SignOutError> {
    app.redirects
        .validate_optional(rd.as_deref())
        .map_err(SignOutError::BadReturnUrl)
}

/// `GET {prefix}/sign_out?rd=`: a page asking to confirm, whose buttons POST the form back
/// (with the validated `rd`). Nothing is changed by a GET, so an `<img>` on another site
/// cannot sign anyone out.
pub fn confirm_page(
    app: &AppState,
    query: Option<&str>,
    lang: Lang,
    request_id: &str,
) -> Result<Response<GatewayBody>, SignOutError> {
    let [rd] = query_params(query, ["rd"])?;
    let rd = validated_rd(app, rd)?;
    let action = format!("{}/sign_out", app.config.prefix);
    Ok(pages::sign_out_confirm(&pages::SignOutConfirm {
        lang,
        action: &action,
        rd: rd.as_deref(),
        cancel: rd.as_deref().unwrap_or("/"),
        redirects_via: &[
            app.config.public_url.as_str(),
            app.config.dingtalk.login_url.as_str(),
        ],
        request_id,
        app_name: &app.config.ui.app_name,
    }))
}

/// What a sign-out POST asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SignOutForm {
    /// Validated return URL.
    pub rd: Option<String>,
    /// End every session of the person, not only this browser's.
    pub everywhere: bool,
}

/// Reads the sign-out form: `rd` (in the query or the form body, not both) and `everywhere`
/// (`1`, `0` or absent; anything else is refused). The body is bounded in size and time.
pub async fn read_form(
    app: &AppState,
    query: Option<&str>,
    body: hyper::body::Incoming,
) -> Result<SignOutForm, SignOutError> {
    parse_form(app, query, &read_body(body).await?)
}

/// A small form body (bounded in size and time), as UTF-8 text.
pub async fn read_body(body: hyper::body::Incoming) -> Result<String, SignOutError> {
    use http_body_util::BodyExt;
    let read = http_body_util::Limited::new(body, MAX_FORM_BODY).collect();
    let bytes = tokio::time::timeout(FORM_BODY_TIMEOUT, read)
        .await
        .map_err(|_| SignOutError::BadForm("request body not received in time"))?
        .map_err(|_| SignOutError::BadForm("request body too large or unreadable"))?
        .to_bytes();
    String::from_utf8(bytes.to_vec()).map_err(|_| SignOutError::BadForm("the form is not UTF-8"))
}

fn parse_form(
    app: &AppState,
    query: Option<&str>,
    body: &str,
) -> Result<SignOutForm, SignOutError> {
    let [q_rd, q_everywhere] = query_params(query, ["rd", "everywhere"])?;
    let [b_rd, b_everywhere] = query_params(Some(body), ["rd", "everywhere"])?;
    let pick = |a: Option<String>, b: Option<String>| match (a, b) {
        (Some(_), Some(_)) => Err(SignOutError::BadForm("a parameter is repeated")),
        (a, b) => Ok(a.or(b)),
    };
    let everywhere = match pick(q_everywhere, b_everywhere)?.as_deref() {
        None | Some("0") => false,
        Some("1") => true,
        Some(_) => return Err(SignOutError::BadForm("everywhere must be 1 or 0")),
    };
    Ok(SignOutForm {
        rd: validated_rd(app, pick(q_rd, b_rd)?)?,
        everywhere,
    })
}

/// `POST {prefix}/sign_out` (after [`check_same_origin`]): ends this browser's session(s) —
/// every valid session cookie it sent is revoked, so re-validation can never re-mint it — or,
/// with `everywhere`, every session of the person authenticated up to now. The session cookie is
/// deleted (host-only and configured `Domain`); then a redirect to `rd` or a "signed out" page.
pub async fn sign_out(
    app: &AppState,
    form: &SignOutForm,
    headers: &HeaderMap,
    lang: Lang,
    request_id: &str,
) -> Result<Response<GatewayBody>, SignOutError> {
    let now = app.clock.now();
    let verified = verify_cookies(app, headers, now)
        .await
        .map_err(SignOutError::Store)?;
    for claims in verified.all() {
        app.revocations
            .revoke_session(&claims.sid, revocation_until(app, claims, now), now)
            .await
            .map_err(SignOutError::Store)?;
    }
    if let (true, Some(claims)) = (form.everywhere, verified.best_claims()) {
        app.revocations
            .revoke_person(&claims.sub, now, cutoff_until(app, now), now)
            .await
            .map_err(SignOutError::Store)?;
        tracing::info!(union_id = %claims.sub, "signed out everywhere");
    } else if let Some(claims) = verified.best_claims() {
        tracing::info!(union_id = %claims.sub, "signed out");
    }
    let start = format!("{}/start", app.config.prefix);
    let mut resp = match &form.rd {
        Some(url) => pages::redirect(url),
        None => pages::html_lang(
            StatusCode::OK,
            &pages::Page {
                title: "You are signed out",
                title_zh: "您已退出登录",
                message: if form.everywhere {
                    "You are signed out of this gateway (every application behind it) in every browser and on every device where you had signed in; those sessions cannot be used again. You are still signed in to DingTalk itself, so signing in here again may need no more than a click."
                } else {
                    "You are signed out of this gateway (every application behind it) in this browser; the session cannot be used again, not even through a copy of its cookie. Other browsers and devices where you signed in stay signed in (use “Sign out everywhere” for those). You are still signed in to DingTalk itself."
                },
                message_zh: if form.everywhere {
                    "您已在所有登录过的浏览器和设备上退出本网关（及其后面的所有应用），这些会话均无法再使用。钉钉本身仍保持登录，因此再次登录可能只需点击一下。"
                } else {
                    "您已在此浏览器中退出本网关（及其后面的所有应用），该会话无法再使用，即使复制其 Cookie 也不行。您在其他浏览器和设备上的登录不受影响（如需一并退出，请使用“在所有设备上退出”）。钉钉本身仍保持登录。"
                },
                actions: &[("Sign in again · 重新登录", start.as_str())],
                request_id,
                app_name: &app.config.ui.app_name,
            },
            lang,
        ),
    };
    append_cookies(
        &mut resp,
        &clear_cookie_everywhere(&app.cookies, &app.cookies.name),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn same_origin_rules() {
        let public = Url::parse("https://gate.example.com/").unwrap();
        let check = |host: Option<&str>, h: &[(&str, &str)]| {
            check_same_origin(&public, host, &headers(h)).is_ok()
        };
        let gate = Some("gate.example.com");
        assert!(check(gate, &[("origin", "https://gate.example.com")]));
        assert!(check(gate, &[("origin", "https://GATE.example.com")]));
        assert!(check(gate, &[("sec-fetch-site", "same-origin")]));
        assert!(check(
            gate,
            &[("origin", "null"), ("sec-fetch-site", "same-origin")]
        ));
        assert!(check(
            gate,
            &[
                ("origin", "https://gate.example.com"),
                ("sec-fetch-site", "same-origin")
            ]
        ));
        // A host route's own origin, with public_url's scheme.
        assert!(check(
            Some("hr.example.com"),
            &[("origin", "https://hr.example.com")]
        ));
        for refused in [
            &[][..],
            &[("origin", "https://evil.example")],
            &[("origin", "null")],
            &[("origin", "null"), ("sec-fetch-site", "cross-site")],
            &[("origin", "http://gate.example.com")],
            &[("origin", "https://gate.example.com:444")],
            &[("origin", "https://gate.example.com.evil.example")],
            &[("origin", "https://hr.example.com")],
            &[("sec-fetch-site", "same-site")],
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "none")],
            &[
                ("origin", "https://gate.example.com"),
                ("sec-fetch-site", "cross-site"),
            ],
            &[
                ("origin", "https://gate.example.com"),
                ("origin", "https://gate.example.com"),
            ],
        ] {
            assert!(!check(gate, refused), "{refused:?}");
        }
        // A Host that is not a plain authority never yields an acceptable origin.
        assert!(!check(
            Some("evil.example@gate.example.com"),
            &[("origin", "https://gate.example.com.x")]
        ));
        assert!(!check(None, &[("origin", "https://hr.example.com")]));
    }
}
