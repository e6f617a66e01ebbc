//! Adversarial: sign-out really ends sessions (revocation, sign-out everywhere, no re-mint), and
//! only the gateway's own pages can sign anyone out.

use dinggate::demo::Stack;
use reqwest::header::{ACCEPT, COOKIE};
use reqwest::{Client, RequestBuilder, Response, StatusCode};

use crate::common::*;

pub const ZHANGSAN: &str = "zhangsan";
pub const LISI: &str = "lisi";
const LOOKUP: &str = "/topapi/v2/user/get";

/// A client without a cookie jar: every cookie is sent by hand, as a replaying attacker would.
pub fn bare() -> Client {
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .resolve("gate.example.test", loopback)
        .resolve("hr.example.test", loopback)
        .build()
        .unwrap()
}

/// Logs `userid` in with a fresh browser and returns the session token it was given.
pub async fn token(stack: &Stack, userid: &str) -> String {
    let client = browser();
    let r = login(stack, &client, "/", userid).await;
    assert_eq!(r.status(), StatusCode::FOUND, "login as {userid}");
    cookie_value(&r, "_dinggate").expect("session cookie set")
}

/// `GET {path}` as an API call with exactly `cookie` as the Cookie header.
/// The forward-auth check names the request it is about, as the proxy in front would.
pub async fn with_cookie(stack: &Stack, path: &str, cookie: &str) -> Response {
    let mut r = bare()
        .get(format!("{}{path}", stack.url()))
        .header(ACCEPT, "application/json")
        .header(COOKIE, cookie);
    if path == "/_dinggate/auth" {
        r = r.header("x-original-uri", "/echo");
    }
    r.send().await.unwrap()
}

/// Status of the proxy (`/echo`), forward-auth and userinfo for the session `token`.
async fn statuses(stack: &Stack, token: &str) -> [StatusCode; 3] {
    let cookie = format!("_dinggate={token}");
    let mut out = [StatusCode::OK; 3];
    for (i, path) in ["/echo", "/_dinggate/auth", "/_dinggate/userinfo"]
        .into_iter()
        .enumerate()
    {
        out[i] = with_cookie(stack, path, &cookie).await.status();
    }
    out
}

const SIGNED_IN: [StatusCode; 3] = [StatusCode::OK; 3];
const SIGNED_OUT: [StatusCode; 3] = [StatusCode::UNAUTHORIZED; 3];

/// `POST {prefix}/sign_out` with the session `token`; `origin` as the Origin header if any.
fn sign_out_post(stack: &Stack, token: &str, origin: Option<&str>) -> RequestBuilder {
    let r = bare()
        .post(format!("{}/_dinggate/sign_out", stack.url()))
        .header(COOKIE, format!("_dinggate={token}"));
    match origin {
        Some(o) => r.header("origin", o),
        None => r,
    }
}

/// Whether a response deletes the session cookie.
pub fn clears_session(r: &Response) -> bool {
    set_cookies(r)
        .iter()
        .any(|c| c.starts_with("_dinggate=;") && c.contains("Max-Age=0"))
}

#[tokio::test]
async fn the_old_cookie_is_refused_everywhere_after_sign_out() {
    let stack = stack("").await;
    let t = token(&stack, ZHANGSAN).await;
    assert_eq!(statuses(&stack, &t).await, SIGNED_IN);
    let r = sign_out_post(&stack, &t, Some(&stack.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(clears_session(&r));
    assert_eq!(
        statuses(&stack, &t).await,
        SIGNED_OUT,
        "proxy, forward-auth, userinfo"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_revoked_session_is_never_reminted() {
    let stack = stack("").await;
    let t = token(&stack, LISI).await;
    let r = sign_out_post(&stack, &t, Some(&stack.url()))
        .form(&[("rd", "/bye")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(location(&r), "/bye");
    // Re-validation is due (revalidate_after 15m): it must not run, nor re-mint the cookie.
    stack.state.clock.advance(16 * 60);
    let lookups = stack.mock.call_count(LOOKUP);
    for path in ["/echo", "/_dinggate/auth", "/_dinggate/userinfo"] {
        let r = with_cookie(&stack, path, &format!("_dinggate={t}")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(cookie_value(&r, "_dinggate"), None, "{path}: no re-mint");
    }
    assert_eq!(stack.mock.call_count(LOOKUP), lookups, "no directory call");
    // A session of the same person that was not signed out is re-validated as usual.
    let other = token(&stack, LISI).await;
    stack.state.clock.advance(16 * 60);
    let r = with_cookie(&stack, "/echo", &format!("_dinggate={other}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let reminted = cookie_value(&r, "_dinggate").expect("re-minted");
    assert_eq!(statuses(&stack, &reminted).await, SIGNED_IN);
    stack.stop().await;
}

#[tokio::test]
async fn a_reminted_cookie_is_refused_after_its_session_is_signed_out() {
    let stack = stack("").await;
    let old = token(&stack, LISI).await;
    stack.state.clock.advance(16 * 60);
    let r = with_cookie(&stack, "/echo", &format!("_dinggate={old}")).await;
    let new = cookie_value(&r, "_dinggate").expect("re-minted");
    // Signing out with the newer cookie ends the older one too (same sid), and vice versa.
    let r = sign_out_post(&stack, &new, Some(&stack.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(statuses(&stack, &old).await, SIGNED_OUT);
    assert_eq!(statuses(&stack, &new).await, SIGNED_OUT);
    stack.stop().await;
}

#[tokio::test]
async fn sign_out_everywhere_ends_every_session_of_that_person_only() {
    let stack = stack("").await;
    let first = token(&stack, ZHANGSAN).await;
    let second = token(&stack, ZHANGSAN).await;
    let someone_else = token(&stack, LISI).await;
    let r = sign_out_post(&stack, &first, Some(&stack.url()))
        .form(&[("everywhere", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(clears_session(&r));
    assert_eq!(statuses(&stack, &first).await, SIGNED_OUT);
    assert_eq!(
        statuses(&stack, &second).await,
        SIGNED_OUT,
        "the other browser"
    );
    assert_eq!(statuses(&stack, &someone_else).await, SIGNED_IN);
    // A later login of the same person works.
    stack.state.clock.advance(2);
    let again = token(&stack, ZHANGSAN).await;
    assert_eq!(statuses(&stack, &again).await, SIGNED_IN);
    // An unknown value of `everywhere` is refused, not read as "no".
    let r = sign_out_post(&stack, &again, Some(&stack.url()))
        .form(&[("everywhere", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(statuses(&stack, &again).await, SIGNED_IN);
    stack.stop().await;
}

#[tokio::test]
async fn a_cross_site_get_of_sign_out_ends_nothing() {
    let stack = stack("").await;
    let t = token(&stack, ZHANGSAN).await;
    // What an <img src=".../sign_out"> on another site sends.
    let r = bare()
        .get(format!("{}/_dinggate/sign_out", stack.url()))
        .header(COOKIE, format!("_dinggate={t}"))
        .header(ACCEPT, "image/avif,image/webp,*/*")
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-dest", "image")
        .send()
        .await
        .unwrap();
    assert!(!clears_session(&r), "{:?}", set_cookies(&r));
    assert_eq!(statuses(&stack, &t).await, SIGNED_IN);
    // The confirmation page in a browser: zh first when asked, with a nonce'd CSP.
    let r = bare()
        .get(format!("{}/_dinggate/sign_out?rd=%2Fbye", stack.url()))
        .header(COOKIE, format!("_dinggate={t}"))
        .header(ACCEPT, HTML)
        .header("accept-language", "zh-CN")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("form-action 'self'"), "{csp}");
    let page = r.text().await.unwrap();
    assert!(page.contains("<html lang=\"zh-CN\"") || page.contains("<html lang=\"zh"));
    assert!(page.contains("退出登录"), "{page}");
    assert!(
        page.contains(r#"<input type="hidden" name="rd" value="/bye">"#),
        "{page}"
    );
    assert_eq!(statuses(&stack, &t).await, SIGNED_IN);
    stack.stop().await;
}

#[tokio::test]
async fn sign_out_posts_must_come_from_the_gateway_origin() {
    let stack = stack("").await;
    let t = token(&stack, ZHANGSAN).await;
    for (origin, fetch_site) in [
        (None, None),
        (Some("https://evil.example"), None),
        (Some("null"), None),
        (None, Some("cross-site")),
        (None, Some("same-site")),
        (Some(stack.url().as_str()), Some("cross-site")),
    ] {
        let mut r = sign_out_post(&stack, &t, origin).header(ACCEPT, HTML);
        if let Some(s) = fetch_site {
            r = r.header("sec-fetch-site", s);
        }
        let r = r.send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "{origin:?} {fetch_site:?}"
        );
        assert!(!clears_session(&r));
        assert!(r.text().await.unwrap().contains("sign-out page"));
        assert_eq!(statuses(&stack, &t).await, SIGNED_IN, "{origin:?}");
    }
    let r = sign_out_post(&stack, &t, Some("https://evil.example"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "cross_site");
    // Same-origin by Sec-Fetch-Site alone (a browser that omits Origin) works.
    let r = sign_out_post(&stack, &t, None)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(statuses(&stack, &t).await, SIGNED_OUT);
    stack.stop().await;
}

#[tokio::test]
async fn the_in_client_callback_must_come_from_the_gateway_origin() {
    let stack = stack("").await;
    let client = browser();
    let state = param(&start_login(&stack, &client, "/").await, "state").unwrap();
    let code = stack.mock.issue_jsapi_code(LISI).unwrap();
    let post = |origin: Option<&str>| {
        let r = client
            .post(format!("{}/_dinggate/inapp/callback", stack.url()))
            .json(&serde_json::json!({ "code": code, "state": state }));
        match origin {
            Some(o) => r.header("origin", o.to_owned()),
            None => r,
        }
    };
    for origin in [None, Some("https://evil.example")] {
        let r = post(origin).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{origin:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "cross_site");
    }
    assert_eq!(stack.mock.call_count("/topapi/v2/user/getuserinfo"), 0);
    let r = post(Some(&stack.url())).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the refused posts used nothing up"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_full_revocation_store_ends_every_session_rather_than_forgetting_one() {
    let stack = stack("session:\n  max_revocations: 2\n").await;
    let bystander = token(&stack, LISI).await;
    let mut signed_out = Vec::new();
    for _ in 0..3 {
        let t = token(&stack, ZHANGSAN).await;
        let r = sign_out_post(&stack, &t, Some(&stack.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        signed_out.push(t);
    }
    for t in &signed_out {
        assert_eq!(statuses(&stack, t).await, SIGNED_OUT);
    }
    assert_eq!(
        statuses(&stack, &bystander).await,
        SIGNED_OUT,
        "fail closed: everyone signs in again"
    );
    stack.state.clock.advance(2);
    let fresh = token(&stack, LISI).await;
    assert_eq!(statuses(&stack, &fresh).await, SIGNED_IN);
    stack.stop().await;
}

#[tokio::test]
async fn a_session_whose_sign_in_lies_in_the_future_is_refused() {
    // Only a holder of the signing key could produce this, but it must not stretch
    // max_lifetime: a future auth_time is refused, not read as "signed in just now".
    let stack = stack("").await;
    let t = token(&stack, ZHANGSAN).await;
    let now = stack.state.clock.now();
    let mut claims = stack.state.sessions.verify(&t, now).unwrap();
    assert_eq!(statuses(&stack, &t).await, SIGNED_IN);
    claims.auth_time = now + 3600;
    let future = stack
        .state
        .sessions
        .remint(&claims, &claims.identity(), now);
    assert_eq!(statuses(&stack, &future).await, SIGNED_OUT);
    // Within clock skew it still counts.
    claims.auth_time = now + 30;
    let skewed = stack
        .state
        .sessions
        .remint(&claims, &claims.identity(), now);
    assert_eq!(statuses(&stack, &skewed).await, SIGNED_IN);
    stack.stop().await;
}
