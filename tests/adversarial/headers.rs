//! Adversarial: identity-like headers of other products, client-address and path-override headers
//! (every spelling) never reach the upstream; `headers.strip_extra`; DingTalk fields too large for
//! a cookie.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;
use dinggate::proxy::names::{STRIPPED_NAMES, STRIPPED_PREFIXES};

const ROUTES: &str = r#"
routes:
  - path_prefix: /
    public: ["/public/"]
headers:
  strip_extra: ["X-Tenant", "X_Internal_*"]
"#;

/// `name` as sent by different stacks: as listed, `_` for `-`, upper case with `_`, Title-Case.
fn spellings(name: &str) -> Vec<String> {
    let title: String = name
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-");
    vec![
        name.to_owned(),
        name.replace('-', "_"),
        name.to_ascii_uppercase().replace('-', "_"),
        title,
    ]
}

/// Every default-list name and a member of every default prefix, in every spelling, plus the
/// `strip_extra` names, in batches that stay under hyper's 100-header limit, each with the
/// headers that must pass.
fn hostile_batches() -> Vec<HeaderMap> {
    let mut names: Vec<String> = STRIPPED_NAMES
        .iter()
        .map(|n| n.as_str().to_owned())
        .collect();
    names.extend(STRIPPED_PREFIXES.iter().map(|p| format!("{p}user")));
    names.extend(["x-tenant".to_owned(), "x-internal-role".to_owned()]);
    let all: Vec<String> = names.iter().flat_map(|n| spellings(n)).collect();
    all.chunks(60)
        .map(|chunk| {
            let mut h = kept_headers();
            for n in chunk {
                h.append(
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_static("attacker"),
                );
            }
            h
        })
        .collect()
}

fn assert_clean(echoed: &serde_json::Value) {
    let headers = &echoed["headers"];
    assert!(
        !headers.to_string().contains("attacker"),
        "a client header reached the upstream: {headers:#}"
    );
    for kept in ["x-tenant-id", "x-http-method-override"] {
        assert_eq!(
            header(echoed, kept),
            Some("kept"),
            "{kept} is not ours to strip"
        );
    }
    // The gateway's own request id replaces a client's (no trusted_proxies here).
    let id = header(echoed, "x-request-id").expect("a request id");
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
}

fn kept_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for kept in ["x-tenant-id", "x-http-method-override", "x-request-id"] {
        h.insert(kept, HeaderValue::from_static("kept"));
    }
    h
}

#[tokio::test]
async fn other_products_headers_never_reach_the_upstream_on_public_or_protected_routes() {
    let stack = stack(ROUTES).await;
    let anon = browser();
    let member = logged_in(&stack, "zhangsan").await;
    let batches = hostile_batches();
    assert!(batches.len() > 1);
    for batch in batches {
        let echoed = echo(&anon, &format!("{}/public/x", stack.url()), batch.clone()).await;
        assert_clean(&echoed);
        let echoed = echo(&member, &format!("{}/echo", stack.url()), batch.clone()).await;
        assert_clean(&echoed);
        // The gateway's own identity header is there, and only once.
        assert_eq!(header(&echoed, "x-dingtalk-userid"), Some("zhangsan"));
        let echoed = echo(&member, &format!("{}/public/y", stack.url()), batch).await;
        assert_clean(&echoed);
    }
    stack.stop().await;
}

#[tokio::test]
async fn mixed_case_names_on_the_wire_are_stripped_too() {
    let stack = stack(ROUTES).await;
    let mut tcp = tokio::net::TcpStream::connect(stack.gateway).await.unwrap();
    let request = "GET /public/raw HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\
        Remote-USER: attacker\r\nX_Auth_Request_Email: attacker\r\nX-Original-Url: /admin\r\n\
        TRUE_client_IP: attacker\r\nx-TENANT: attacker\r\nX_INTERNAL_User: attacker\r\n\
        X-Tenant-Id: kept\r\nConnection: close\r\n\r\n";
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(!response.contains("attacker"), "{response}");
    assert!(!response.contains("/admin"), "{response}");
    assert!(response.contains("kept"), "{response}");
    stack.stop().await;
}

/// An org with a person whose every profile field is huge, and one in hundreds of departments.
fn big_org() -> (dinggate::mock::Org, u64) {
    let mut yaml = String::from(
        "corp: { corp_id: dingcorp00000001, name: 大公司 }\ndepartments:\n  - { id: 1, name: 总部 }\n",
    );
    let mut ids = Vec::new();
    for i in 0..300u64 {
        let id = 1000 + i;
        yaml.push_str(&format!("  - {{ id: {id}, name: 部门{i}, parent: 1 }}\n"));
        ids.push(id.to_string());
    }
    let title = "总".repeat(3000);
    let name = "长".repeat(3000);
    let email = format!("{}@example.com", "e".repeat(300));
    yaml.push_str(&format!(
        "users:\n  - {{ userid: longtitle, name: {name}, union_id: unionlong0123456789abcdef, open_id: openlong0123456789, title: {title}, email: {email}, departments: [1000] }}\n"
    ));
    yaml.push_str(&format!(
        "  - {{ userid: manydepts, name: 多部门, union_id: unionmany0123456789abcdef, open_id: openmany0123456789, departments: [{}] }}\n",
        ids.join(", ")
    ));
    let org = dinggate::mock::Org::from_yaml_str(&yaml).unwrap_or_else(|e| panic!("test org: {e}"));
    (org, 1299)
}

#[tokio::test]
async fn huge_profile_logs_in_once_and_too_many_departments_are_refused_with_a_page() {
    let (org, last_department) = big_org();
    let settings = dinggate::mock::MockSettings {
        org,
        ..Default::default()
    };
    // A deny rule on the department that would be cut off first if lists were truncated.
    let yaml =
        format!("routes:\n  - path_prefix: /\n    deny: {{ departments: [{last_department}] }}\n");
    let stack = dinggate::demo::Stack::start_with(0, &yaml, settings)
        .await
        .unwrap();

    // 3,000-character title and name, 300-character e-mail: one login, a cookie that fits.
    let client = browser();
    let r = login(&stack, &client, "/", "longtitle").await;
    assert_eq!(r.status(), StatusCode::FOUND, "login succeeds");
    assert_eq!(location(&r), "/");
    let line = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("_dinggate="))
        .expect("a session cookie is set");
    assert!(
        "Set-Cookie: ".len() + line.len() < 4096,
        "Set-Cookie line is {} bytes",
        line.len()
    );
    let echoed = echo(&client, &format!("{}/echo", stack.url()), HeaderMap::new()).await;
    let decode = |name: &str| {
        percent_encoding::percent_decode_str(header(&echoed, name).unwrap())
            .decode_utf8()
            .unwrap()
            .into_owned()
    };
    assert_eq!(decode("x-dingtalk-title"), "总".repeat(64));
    assert_eq!(decode("x-dingtalk-name"), "长".repeat(64));
    assert_eq!(
        header(&echoed, "x-forwarded-email"),
        None,
        "dropped, never cut"
    );

    // Hundreds of departments: refused at login with a page that says so, no session, no loop.
    let client = browser();
    let r = login(&stack, &client, "/", "manydepts").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        !set_cookies(&r)
            .iter()
            .any(|c| c.starts_with("_dinggate=") && !c.starts_with("_dinggate=;")),
        "no session cookie: {:?}",
        set_cookies(&r)
    );
    let page = r.text().await.unwrap();
    assert!(page.contains("too large"), "{page}");
    let r = client
        .get(format!("{}/", stack.url()))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "never admitted");
    stack.stop().await;
}
