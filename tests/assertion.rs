//! End to end: signed identity assertions for upstreams — the JWKS, the per-route JWT, its reuse, forward-auth, key rotation, and verification by an independent implementation (PyJWT).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use dinggate::demo::Stack;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, COOKIE};
use reqwest::{Client, StatusCode};
use serde_json::Value;

const HEADER: &str = "x-dingtalk-assertion";

struct Keys {
    dir: PathBuf,
    es256: PathBuf,
    ed25519: PathBuf,
}

impl Keys {
    fn new(name: &str) -> Keys {
        let dir =
            std::env::temp_dir().join(format!("dinggate-assertion-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |file: &str, pair: KeyPair| {
            let path = dir.join(file);
            std::fs::write(&path, pair.serialize_pem()).unwrap();
            path
        };
        Keys {
            es256: write(
                "es256.pem",
                KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
            ),
            ed25519: write("ed25519.pem", KeyPair::generate_for(&PKCS_ED25519).unwrap()),
            dir,
        }
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(signing: &Path, publish: &[&Path]) -> String {
    let publish: Vec<String> = publish
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    format!(
        r#"
dingtalk:
  directory: true
assertion:
  signing_key_file: "{}"
  publish_key_files: [{}]
routes:
  - {{ name: app, path_prefix: /app, assertion: true }}
  - {{ name: hr, path_prefix: /hr, assertion: true, assertion_audience: hr-app }}
  - {{ name: plain, path_prefix: /plain }}
"#,
        signing.display(),
        publish.join(", ")
    )
}

async fn jwks(stack: &Stack) -> (JwkSet, Value) {
    let r = Client::new()
        .get(format!("{}/_dinggate/jwks.json", stack.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/jwk-set+json");
    assert_eq!(r.headers()["cache-control"], "public, max-age=300");
    let body = r.bytes().await.unwrap();
    (
        serde_json::from_slice(&body).unwrap(),
        serde_json::from_slice(&body).unwrap(),
    )
}

/// The unionId the mock gives `userid`.
fn union_id(stack: &Stack, userid: &str) -> String {
    stack
        .mock
        .settings()
        .org
        .user(userid)
        .unwrap()
        .union_id
        .clone()
}

/// What the upstream received as the assertion header for `path`, with a forged copy sent by
/// the client alongside.
async fn assertion_sent(stack: &Stack, cookie: &str, path: &str) -> Option<String> {
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, HeaderValue::from_str(cookie).unwrap());
    headers.insert(
        HEADER,
        HeaderValue::from_static("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."),
    );
    let echoed = echo(&Client::new(), &format!("{}{path}", stack.url()), headers).await;
    header(&echoed, HEADER).map(str::to_owned)
}

/// Verifies `token` against the JWKS (the key its `kid` names) for `audience`.
fn verify(jwks: &JwkSet, token: &str, issuer: &str, audience: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    let kid = header.kid.expect("a kid");
    let jwk = jwks
        .find(&kid)
        .unwrap_or_else(|| panic!("kid {kid} is not published"));
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .unwrap()
        .claims
}

#[tokio::test]
async fn routes_send_a_signed_assertion_that_verifies_against_the_jwks() {
    let keys = Keys::new("e2e");
    let stack = stack(&config(&keys.es256, &[&keys.ed25519])).await;
    let (set, raw) = jwks(&stack).await;
    assert_eq!(
        set.keys.len(),
        2,
        "the signing key and the published one: {raw}"
    );
    for key in raw["keys"].as_array().unwrap() {
        assert!(key.get("d").is_none(), "nothing private is published");
        assert_eq!(key["use"], "sig");
    }

    let cookie = session_cookie(&stack, "/app/", "zhangsan").await;
    let token = assertion_sent(&stack, &cookie, "/app/x")
        .await
        .expect("an assertion");
    assert_ne!(
        token, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.",
        "never the client's"
    );
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().alg,
        jsonwebtoken::Algorithm::ES256
    );
    let claims = verify(&set, &token, &stack.url(), "app");
    assert_eq!(claims["sub"], union_id(&stack, "zhangsan"));
    assert_eq!(claims["userid"], "zhangsan");
    assert_eq!(claims["name"], "张三");
    assert!(claims["corp_id"].is_string());
    assert!(claims["departments"]
        .as_array()
        .is_some_and(|d| !d.is_empty()));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );

    // The route's own audience; a route without assertions sends none (and no forged copy).
    let hr = assertion_sent(&stack, &cookie, "/hr/x").await.unwrap();
    assert_eq!(
        verify(&set, &hr, &stack.url(), "hr-app")["sub"],
        union_id(&stack, "zhangsan")
    );
    assert_eq!(assertion_sent(&stack, &cookie, "/plain/x").await, None);

    // Reused, not signed per request, until half its lifetime has passed.
    assert_eq!(
        assertion_sent(&stack, &cookie, "/app/y").await.unwrap(),
        token
    );
    // The gateway's clock is the wall clock plus the advance: leave room for a slow machine's
    // real seconds on each side of the half-life (150 s).
    stack.state.clock.advance(140);
    assert_eq!(
        assertion_sent(&stack, &cookie, "/app/y").await.unwrap(),
        token
    );
    stack.state.clock.advance(15);
    let renewed = assertion_sent(&stack, &cookie, "/app/y").await.unwrap();
    assert_ne!(renewed, token, "a fresh one past half its lifetime");
    assert!(
        verify(&set, &renewed, &stack.url(), "app")["iat"]
            .as_i64()
            .unwrap()
            > claims["iat"].as_i64().unwrap()
    );

    // Someone else gets their own.
    let lisi = session_cookie(&stack, "/app/", "lisi").await;
    let other = assertion_sent(&stack, &lisi, "/app/x").await.unwrap();
    assert_eq!(
        verify(&set, &other, &stack.url(), "app")["sub"],
        union_id(&stack, "lisi")
    );
    stack.stop().await;
}

#[tokio::test]
async fn forward_auth_answers_carry_the_routes_assertion() {
    let keys = Keys::new("auth");
    let stack = stack(&config(&keys.ed25519, &[])).await;
    let (set, _) = jwks(&stack).await;
    let cookie = session_cookie(&stack, "/app/", "zhangsan").await;
    let ask = |uri: &str| {
        Client::new()
            .get(format!("{}/_dinggate/auth", stack.url()))
            .header(COOKIE, &cookie)
            .header(ACCEPT, "application/json")
            .header("x-forwarded-uri", uri)
            .header("x-forwarded-method", "GET")
            .send()
    };
    let r = ask("/app/x").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let token = r.headers()[HEADER].to_str().unwrap().to_owned();
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().alg,
        jsonwebtoken::Algorithm::EdDSA
    );
    assert_eq!(
        verify(&set, &token, &stack.url(), "app")["sub"],
        union_id(&stack, "zhangsan")
    );
    // A route without assertions answers the header empty, so a proxy that copies it
    // overwrites a client's copy.
    let r = ask("/plain/x").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[HEADER], "");
    stack.stop().await;
}

#[tokio::test]
async fn a_next_key_is_published_before_it_signs_so_no_upstream_meets_an_unknown_kid() {
    let keys = Keys::new("rotate");
    // Step 0: A signs, B (the next key) is already published.
    let stack = stack(&config(&keys.es256, &[&keys.ed25519])).await;
    let cookie = session_cookie(&stack, "/app/", "zhangsan").await;
    let old = assertion_sent(&stack, &cookie, "/app/x").await.unwrap();
    let (before, _) = jwks(&stack).await;
    let old_kid = jsonwebtoken::decode_header(&old).unwrap().kid.unwrap();

    // Step 1: B signs, A stays published until the assertions it signed have expired.
    stack
        .reload(&config(&keys.ed25519, &[&keys.es256]))
        .expect("reload");
    let new = assertion_sent(&stack, &cookie, "/app/x").await.unwrap();
    let new_kid = jsonwebtoken::decode_header(&new).unwrap().kid.unwrap();
    assert_ne!(new_kid, old_kid, "the new key signs after the reload");
    assert!(
        before.find(&new_kid).is_some(),
        "an upstream with the old JWKS knows the new kid"
    );
    let (after, _) = jwks(&stack).await;
    verify(&after, &old, &stack.url(), "app");
    verify(&after, &new, &stack.url(), "app");

    // Step 2: A is no longer published.
    stack.reload(&config(&keys.ed25519, &[])).expect("reload");
    let (last, _) = jwks(&stack).await;
    assert!(last.find(&old_kid).is_none());
    assert_eq!(last.keys.len(), 1);
    stack.stop().await;
}

#[tokio::test]
async fn without_assertion_keys_there_is_no_jwks_and_client_copies_are_still_removed() {
    let stack = stack("").await;
    let r = Client::new()
        .get(format!("{}/_dinggate/jwks.json", stack.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let client = logged_in(&stack, "zhangsan").await;
    let mut headers = HeaderMap::new();
    headers.insert(HEADER, HeaderValue::from_static("forged"));
    let echoed = echo(&client, &format!("{}/x", stack.url()), headers).await;
    assert_eq!(header(&echoed, HEADER), None);
    stack.stop().await;
}

/// PyJWT (the library most Python upstreams use) verifies what the gateway signs, against the
/// JWKS it serves: an implementation that shares nothing with the gateway's. CI installs it
/// (`.ci/run`) and sets REQUIRE_PYJWT=1, so there this test cannot pass without running it.
#[tokio::test]
async fn pyjwt_verifies_es256_and_eddsa_assertions_against_the_jwks() {
    let available = std::process::Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        assert!(
            std::env::var_os("REQUIRE_PYJWT").is_none(),
            "REQUIRE_PYJWT is set but python3 with PyJWT[crypto] is not available"
        );
        eprintln!("skipped: python3 with PyJWT[crypto] is not installed");
        return;
    }
    let keys = Keys::new("pyjwt");
    for signing in [&keys.es256, &keys.ed25519] {
        let stack = stack(&config(signing, &[])).await;
        let r = Client::new()
            .get(format!("{}/_dinggate/jwks.json", stack.url()))
            .send()
            .await
            .unwrap();
        let jwks = r.text().await.unwrap();
        let cookie = session_cookie(&stack, "/app/", "zhangsan").await;
        let token = assertion_sent(&stack, &cookie, "/hr/x").await.unwrap();
        let script = r#"
import json, sys, jwt
jwks, token, issuer = sys.argv[1], sys.argv[2], sys.argv[3]
kid = jwt.get_unverified_header(token)["kid"]
key = jwt.PyJWKSet.from_json(jwks)[kid]
claims = jwt.decode(token, key.key, algorithms=["ES256", "EdDSA"], audience="hr-app", issuer=issuer)
print(json.dumps(claims))
"#;
        let out = std::process::Command::new("python3")
            .args(["-c", script, &jwks, &token, &stack.url()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "PyJWT refused it: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let claims: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(claims["sub"], union_id(&stack, "zhangsan"));
        assert_eq!(claims["aud"], "hr-app");
        // A token for another audience is refused by the same check.
        let other = assertion_sent(&stack, &cookie, "/app/x").await.unwrap();
        let out = std::process::Command::new("python3")
            .args(["-c", script, &jwks, &other, &stack.url()])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "PyJWT must refuse aud=app for hr-app"
        );
        stack.stop().await;
    }
}

#[tokio::test]
async fn a_custom_assertion_header_is_removed_from_clients_like_the_default() {
    let keys = Keys::new("custom");
    let yaml = config(&keys.es256, &[])
        .replace("assertion:\n", "assertion:\n  header: X-Identity-Token\n");
    let stack = stack(&yaml).await;
    let cookie = session_cookie(&stack, "/app/", "zhangsan").await;
    let sent = |path: &'static str| {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(&cookie).unwrap());
        headers.insert("x-identity-token", HeaderValue::from_static("forged"));
        let url = format!("{}{path}", stack.url());
        async move {
            let echoed = echo(&Client::new(), &url, headers).await;
            header(&echoed, "x-identity-token").map(str::to_owned)
        }
    };
    assert_eq!(
        sent("/plain/x").await,
        None,
        "the client's copy never reaches the upstream"
    );
    let token = sent("/app/x").await.expect("the signed one");
    let (set, _) = jwks(&stack).await;
    assert_eq!(
        verify(&set, &token, &stack.url(), "app")["sub"],
        union_id(&stack, "zhangsan")
    );
    stack.stop().await;
}
