//! Adversarial: the verified-session cache never accepts what verification would refuse: a
//! signed-out, expired, re-validated or altered token, and a hit sends exactly what a miss does.

use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use crate::common::*;
use crate::sessions::{bare, token, with_cookie, LISI, ZHANGSAN};

const LOOKUP: &str = "/topapi/v2/user/get";

fn cached(stack: &dinggate::demo::Stack, token: &str) -> bool {
    let now = stack.state.clock.now();
    stack.state.session_cache.get(token, now).is_some()
}

#[tokio::test]
async fn a_cached_session_ends_at_its_expiry() {
    let stack = stack("session:\n  lifetime: 20m\n  revalidate_after: 1h\n").await;
    let t = token(&stack, ZHANGSAN).await;
    let cookie = format!("_dinggate={t}");
    assert_eq!(
        with_cookie(&stack, "/echo", &cookie).await.status(),
        StatusCode::OK
    );
    assert!(cached(&stack, &t), "the first request caches the token");
    stack.state.clock.advance(19 * 60);
    assert_eq!(
        with_cookie(&stack, "/echo", &cookie).await.status(),
        StatusCode::OK
    );
    stack.state.clock.advance(60);
    for path in ["/echo", "/_dinggate/auth", "/_dinggate/userinfo"] {
        let r = with_cookie(&stack, path, &cookie).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path} at exp");
    }
    assert!(!cached(&stack, &t), "an expired entry is dropped");
    stack.stop().await;
}

#[tokio::test]
async fn sign_out_ends_a_cached_session_on_the_next_request() {
    let stack = stack("").await;
    let t = token(&stack, LISI).await;
    let cookie = format!("_dinggate={t}");
    assert_eq!(
        with_cookie(&stack, "/echo", &cookie).await.status(),
        StatusCode::OK
    );
    assert!(cached(&stack, &t));
    let r = bare()
        .post(format!("{}/_dinggate/sign_out", stack.url()))
        .header("cookie", &cookie)
        .header("origin", stack.url())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = with_cookie(&stack, "/echo", &cookie).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(!cached(&stack, &t), "a revoked entry is dropped");
    stack.stop().await;
}

#[tokio::test]
async fn re_validation_replaces_the_cached_token_with_the_new_one() {
    let stack = stack("").await;
    let old = token(&stack, LISI).await;
    assert_eq!(
        with_cookie(&stack, "/echo", &format!("_dinggate={old}"))
            .await
            .status(),
        StatusCode::OK
    );
    stack.state.clock.advance(16 * 60);
    let lookups = stack.mock.call_count(LOOKUP);
    let r = with_cookie(&stack, "/echo", &format!("_dinggate={old}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        stack.mock.call_count(LOOKUP),
        lookups + 1,
        "re-validated once"
    );
    let new = cookie_value(&r, "_dinggate").expect("re-minted");
    assert!(!cached(&stack, &old), "the re-validated token is dropped");
    assert!(cached(&stack, &new), "the new token is cached as minted");
    let r = with_cookie(&stack, "/echo", &format!("_dinggate={new}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(cookie_value(&r, "_dinggate"), None, "no second re-mint");
    assert_eq!(
        stack.mock.call_count(LOOKUP),
        lookups + 1,
        "no second look-up"
    );
    stack.stop().await;
}

#[tokio::test]
async fn an_altered_copy_of_a_cached_token_is_refused() {
    let stack = stack("").await;
    let t = token(&stack, ZHANGSAN).await;
    assert_eq!(
        with_cookie(&stack, "/echo", &format!("_dinggate={t}"))
            .await
            .status(),
        StatusCode::OK
    );
    let last = t.chars().last().unwrap();
    let flipped = format!(
        "{}{}",
        &t[..t.len() - 1],
        if last == 'A' { 'B' } else { 'A' }
    );
    for forged in [
        flipped,
        format!("{t}A"),
        t[..t.len() - 1].to_owned(),
        t.to_uppercase(),
    ] {
        let r = with_cookie(&stack, "/echo", &format!("_dinggate={forged}")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{forged}");
        assert!(!cached(&stack, &forged));
    }
    stack.stop().await;
}

/// The identity headers the upstream receives for `userid`, with `extra` config.
async fn identity_headers(extra: &str, userid: &str, requests: usize) -> Vec<(String, String)> {
    let stack = stack(extra).await;
    let client = logged_in(&stack, userid).await;
    let mut seen = Vec::new();
    for _ in 0..requests {
        let echoed = echo(&client, &format!("{}/echo", stack.url()), HeaderMap::new()).await;
        let mut headers: Vec<(String, String)> = echoed["headers"]
            .as_object()
            .map(|h| {
                h.iter()
                    .filter(|(k, _)| k.starts_with("x-dingtalk-") || k.starts_with("x-forwarded-"))
                    .filter(|(k, _)| *k != "x-forwarded-for" && *k != "x-forwarded-host")
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        headers.sort();
        if seen.is_empty() {
            seen = headers;
        } else {
            assert_eq!(
                seen, headers,
                "every request of a session sends the same identity"
            );
        }
    }
    stack.stop().await;
    seen
}

#[tokio::test]
async fn a_cache_hit_sends_the_same_identity_headers_as_a_verification() {
    let cached = identity_headers("", ZHANGSAN, 3).await;
    let verified = identity_headers("session:\n  cache_entries: 0\n", ZHANGSAN, 3).await;
    assert!(
        cached.iter().any(|(k, _)| k == "x-dingtalk-userid"),
        "{cached:?}"
    );
    assert_eq!(cached, verified);
}

#[tokio::test]
async fn with_the_cache_off_nothing_is_cached_and_sessions_still_work() {
    let stack = stack("session:\n  cache_entries: 0\n").await;
    let t = token(&stack, ZHANGSAN).await;
    for _ in 0..3 {
        let r = with_cookie(&stack, "/echo", &format!("_dinggate={t}")).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert!(stack.state.session_cache.is_empty());
    stack.stop().await;
}
