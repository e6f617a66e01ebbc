//! Adversarial: several session cookies of the same name (cookie tossing from a sibling
//! subdomain), and stripping the gateway's cookies whatever the Cookie header looks like.

use reqwest::header::{HeaderValue, ACCEPT, COOKIE};
use reqwest::StatusCode;

use super::sessions::{bare, clears_session, token, with_cookie, LISI, ZHANGSAN};
use crate::common::*;

#[tokio::test]
async fn a_planted_invalid_cookie_before_the_valid_one_does_not_lock_anyone_out() {
    let stack = stack("").await;
    let t = token(&stack, ZHANGSAN).await;
    let forged = format!("{}x", &t[..t.len() - 1]);
    for cookie in [
        format!("_dinggate=garbage; _dinggate={t}"),
        format!("_dinggate={forged}; other=1; _dinggate={t}"),
        format!("_dinggate; _dinggate=; _dinggate={t}"),
    ] {
        let r = with_cookie(&stack, "/echo", &cookie).await;
        assert_eq!(r.status(), StatusCode::OK, "{cookie}");
        let echoed: serde_json::Value = r.json().await.unwrap();
        let sent = header(&echoed, "cookie").unwrap_or("");
        assert!(!sent.contains("_dinggate"), "our cookies stripped: {sent}");
    }
    // The same across separate Cookie headers (HTTP/2 style).
    let r = bare()
        .get(format!("{}/_dinggate/userinfo", stack.url()))
        .header(ACCEPT, "application/json")
        .header(COOKIE, "_dinggate=garbage")
        .header(COOKIE, format!("_dinggate={t}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    stack.stop().await;
}

#[tokio::test]
async fn valid_cookies_of_different_people_mean_no_session_and_are_cleared() {
    let stack = stack(NAMED_HOSTS).await;
    let mine = token(&stack, ZHANGSAN).await;
    let planted = token(&stack, LISI).await;
    for path in ["/echo", "/_dinggate/auth", "/_dinggate/userinfo"] {
        for cookie in [
            format!("_dinggate={planted}; _dinggate={mine}"),
            format!("_dinggate={mine}; _dinggate={planted}"),
        ] {
            let r = with_cookie(&stack, path, &cookie).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
            let deletions: Vec<String> = set_cookies(&r)
                .into_iter()
                .filter(|c| c.starts_with("_dinggate=;") && c.contains("Max-Age=0"))
                .collect();
            assert_eq!(deletions.len(), 2, "{path}: {deletions:?}");
            assert!(deletions.iter().any(|c| !c.contains("Domain=")));
            assert!(deletions.iter().any(|c| c.contains("Domain=example.test")));
        }
    }
    // A browser navigation goes to the login, clearing as well.
    let r = bare()
        .get(format!("{}/", stack.url()))
        .header(ACCEPT, HTML)
        .header(COOKIE, format!("_dinggate={planted}; _dinggate={mine}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert!(clears_session(&r));
    stack.stop().await;
}

#[tokio::test]
async fn two_valid_cookies_of_the_same_person_are_fine_and_sign_out_ends_both() {
    let stack = stack("").await;
    let a = token(&stack, ZHANGSAN).await;
    let b = token(&stack, ZHANGSAN).await;
    let both = format!("_dinggate={a}; _dinggate={b}");
    let r = with_cookie(&stack, "/echo", &both).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!clears_session(&r));
    let echoed: serde_json::Value = r.json().await.unwrap();
    let union_id = stack
        .mock
        .settings()
        .org
        .user(ZHANGSAN)
        .unwrap()
        .union_id
        .clone();
    assert_eq!(header(&echoed, "x-forwarded-user"), Some(union_id.as_str()));

    let r = bare()
        .post(format!("{}/_dinggate/sign_out", stack.url()))
        .header("origin", stack.url())
        .header(COOKIE, &both)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for t in [&a, &b] {
        let r = with_cookie(&stack, "/echo", &format!("_dinggate={t}")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "both copies revoked");
    }
    stack.stop().await;
}

#[tokio::test]
async fn too_many_session_cookies_mean_no_session() {
    let stack = stack("").await;
    let t = token(&stack, ZHANGSAN).await;
    let four = vec![format!("_dinggate={t}"); 4].join("; ");
    assert_eq!(
        with_cookie(&stack, "/echo", &four).await.status(),
        StatusCode::OK
    );
    let five = format!("{four}; _dinggate=x");
    let r = with_cookie(&stack, "/echo", &five).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(clears_session(&r));
    stack.stop().await;
}

#[tokio::test]
async fn a_non_utf8_cookie_header_neither_hides_nor_leaks_the_session() {
    let stack = stack("").await;
    let t = token(&stack, ZHANGSAN).await;
    let mut raw = b"pref=\xe4\xb8\xff; _dinggate=".to_vec();
    raw.extend_from_slice(t.as_bytes());
    raw.extend_from_slice(b"; keep=1");
    let r = bare()
        .get(format!("{}/echo", stack.url()))
        .header(ACCEPT, "application/json")
        .header(COOKIE, HeaderValue::from_bytes(&raw).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the session is read");
    let echoed: serde_json::Value = r.json().await.unwrap();
    let sent = header(&echoed, "cookie").expect("other cookies forwarded");
    assert!(!sent.contains("_dinggate"), "{sent}");
    assert!(sent.contains("keep=1"), "{sent}");
    stack.stop().await;
}
