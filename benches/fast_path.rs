//! Micro-benchmarks of the per-request fast path, through the library's public API:
//! session cookie lookup and verification, identity header rewriting, path normalization and
//! route matching. Run with `cargo bench --bench fast_path`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::header::{
    ACCEPT, ACCEPT_ENCODING, ACCEPT_LANGUAGE, CACHE_CONTROL, CONNECTION, COOKIE, HOST, REFERER,
    USER_AGENT,
};
use http::{HeaderMap, HeaderName, HeaderValue};

use dinggate::identity::{Enterprise, Identity};
use dinggate::proxy::headers::{remove_hop_by_hop, strip_cookies, strip_protected, IdentityValues};
use dinggate::proxy::path::normalize_path;
use dinggate::session::lookup::verify_cookies;
use dinggate::{AppState, Config};

/// A complete configuration: real-looking DingTalk ids, ten routes (path prefixes, hosts,
/// public paths, policies). `extra_session` is appended under `session:`.
fn config(extra_session: &str) -> Config {
    let yaml = format!(
        r#"
public_url: https://gate.example.com
upstream: http://127.0.0.1:8080
redirect_allowlist: [".example.com"]
dingtalk:
  client_id: dingq7xkzv3mwnp2rtla
  client_secret: Zr8pQw3nV6yK1tB5mH9cX2dF7gJ4sL0aE6uR3iO8
  corp_id: ding5f0c4e2a9b7d13e6f35c2f4657eb6378
session:
  signing_key: "k9Vq2Lx7Rz4Wm8Tn3Yb6Pc1Hd5Fg0Js2Ka7Ue4Io9"
  cookie_domain: example.com
{extra_session}
routes:
  - name: app
    path_prefix: /app
    public: ["/app/static/", "/app/healthz"]
  - path_prefix: /admin
    allow: {{ admins: true }}
  - path_prefix: /api/v1
    allow: {{ departments: [100] }}
  - path_prefix: /reports
    allow: {{ departments: [300] }}
    deny: {{ users: [lisi] }}
  - path_prefix: /finance
    upstream: http://127.0.0.1:8081
    allow: {{ departments: [300] }}
  - host: hr.example.com
    upstream: http://127.0.0.1:8082
    allow: {{ users: [zhaoliu, manager4521] }}
  - host: hr.example.com
    path_prefix: /payroll
    upstream: http://127.0.0.1:8082
    allow: {{ users: [zhaoliu] }}
  - host: wiki.example.com
    upstream: http://127.0.0.1:8083
    public: ["/assets/", "/favicon.ico"]
  - host: grafana.example.com
    upstream: http://127.0.0.1:3000
  - host: ci.example.com
    path_prefix: /job
    upstream: http://127.0.0.1:8084
"#
    );
    Config::from_yaml_str(&yaml).unwrap_or_else(|e| panic!("bench config refused: {e}"))
}

fn app(extra_session: &str) -> AppState {
    AppState::build(config(extra_session)).unwrap_or_else(|e| panic!("AppState::build: {e}"))
}

/// A member of the organization with a Chinese name, a title and directory data.
fn identity() -> Identity {
    Identity {
        union_id: "iPkQ3xWz8vLmN2bR5tYc7aGiEiE".to_owned(),
        name: "张伟明".to_owned(),
        avatar: Some(
            "https://static-legacy.dingtalk.com/media/lADPDgQ9rXyZ1c3NAeDNAeA_480_480.jpg"
                .to_owned(),
        ),
        email: Some("zhang.weiming@example.com".to_owned()),
        corp_id: Some("ding5f0c4e2a9b7d13e6f35c2f4657eb6378".to_owned()),
        open_id: Some("Qz4TnE2mVb8xKc1LpR6wYsGiEiE".to_owned()),
        enterprise: Some(Enterprise {
            user_id: "manager4521".to_owned(),
            departments: vec![101, 587_324_119],
            department_tree: vec![1, 100, 101, 587_324_119],
            admin: false,
            title: Some("高级研发工程师".to_owned()),
        }),
    }
}

/// A browser navigation to a protected page (14 headers), with `cookie` as its Cookie header.
fn browser_request(cookie: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut add = |name: HeaderName, value: &str| {
        h.append(name, HeaderValue::from_str(value).unwrap());
    };
    add(HOST, "app.example.com");
    add(CONNECTION, "keep-alive");
    add(CACHE_CONTROL, "max-age=0");
    add(
        HeaderName::from_static("sec-ch-ua"),
        r#""Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99""#,
    );
    add(HeaderName::from_static("sec-ch-ua-mobile"), "?0");
    add(HeaderName::from_static("upgrade-insecure-requests"), "1");
    add(
        USER_AGENT,
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 DingTalk(7.5.0)",
    );
    add(
        ACCEPT,
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    );
    add(HeaderName::from_static("sec-fetch-site"), "same-origin");
    add(HeaderName::from_static("sec-fetch-mode"), "navigate");
    add(HeaderName::from_static("sec-fetch-dest"), "document");
    add(REFERER, "https://app.example.com/app/orders");
    add(ACCEPT_ENCODING, "gzip, deflate, br, zstd");
    add(ACCEPT_LANGUAGE, "zh-CN,zh;q=0.9,en;q=0.8");
    add(COOKIE, cookie);
    h
}

/// A Cookie header as a browser sends it: the session cookie among unrelated ones.
fn cookie_header(name: &str, token: &str) -> String {
    format!("_ga=GA1.2.1843265470.1714032312; theme=dark; {name}={token}; lang=zh-CN")
}

/// The same token with one signature character changed: well-formed, but refused.
fn tampered(token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let i = token.rfind('.').expect("a JWT") + 10;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

fn session_lookup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let id = identity();
    let cached = app("");
    let uncached = app("  cache_entries: 0");
    let now = cached.clock.now();
    let token = cached.sessions.mint(&id, now);
    let name = cached.cookies.name.clone();
    let valid = browser_request(&cookie_header(&name, &token));
    let bad = browser_request(&cookie_header(&name, &tampered(&token)));
    let none = browser_request("_ga=GA1.2.1843265470.1714032312; theme=dark; lang=zh-CN");

    let verify = |app: &AppState, headers: &HeaderMap| {
        rt.block_on(verify_cookies(app, headers, now))
            .expect("memory revocation store")
    };
    // Sanity: the cases are what they claim to be (this also fills the cache).
    assert!(verify(&cached, &valid).best.is_some());
    assert!(verify(&uncached, &valid).best.is_some());
    assert!(verify(&cached, &none).best.is_none());
    assert!(verify(&cached, &bad).best.is_none());

    let mut g = c.benchmark_group("session_lookup");
    g.bench_function("cache_hit", |b| {
        b.iter(|| verify(black_box(&cached), black_box(&valid)))
    });
    g.bench_function("cache_miss_hs256", |b| {
        b.iter(|| verify(black_box(&uncached), black_box(&valid)))
    });
    g.bench_function("no_session_cookie", |b| {
        b.iter(|| verify(black_box(&cached), black_box(&none)))
    });
    g.bench_function("tampered_token", |b| {
        b.iter(|| verify(black_box(&cached), black_box(&bad)))
    });
    g.finish();
}

fn identity_headers(c: &mut Criterion) {
    let app = app("");
    let id = identity();
    let token = app.sessions.mint(&id, app.clock.now());
    let request = browser_request(&cookie_header(&app.cookies.name, &token));
    let values = IdentityValues::new(&app.config.headers, &id);
    let mut spoofed = request.clone();
    spoofed.insert("x-forwarded-user", HeaderValue::from_static("admin"));
    spoofed.insert("x_dingtalk_userid", HeaderValue::from_static("manager0001"));
    let protected = app.upstream.protected();
    // Sanity: nothing to strip from the browser's own headers; both spoofed ones go.
    assert_eq!(strip_protected(&mut request.clone(), protected), 0);
    assert_eq!(strip_protected(&mut spoofed.clone(), protected), 2);
    let mut without_session = request.clone();
    strip_cookies(&mut without_session, |n| app.upstream.is_own_cookie(n));
    assert_eq!(
        without_session[COOKIE],
        "_ga=GA1.2.1843265470.1714032312; theme=dark; lang=zh-CN"
    );

    let mut g = c.benchmark_group("identity_headers");
    g.bench_function("encode_once_per_session", |b| {
        b.iter(|| IdentityValues::new(black_box(&app.config.headers), black_box(&id)))
    });
    g.bench_function("apply", |b| {
        b.iter_batched(
            || request.clone(),
            |mut h| {
                values.apply(&mut h);
                h
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("strip_protected", |b| {
        b.iter_batched(
            || request.clone(),
            |mut h| {
                black_box(strip_protected(&mut h, protected));
                h
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("strip_protected_spoofed", |b| {
        b.iter_batched(
            || spoofed.clone(),
            |mut h| {
                black_box(strip_protected(&mut h, protected));
                h
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("strip_cookies", |b| {
        b.iter_batched(
            || request.clone(),
            |mut h| {
                strip_cookies(&mut h, |n| app.upstream.is_own_cookie(n));
                h
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("remove_hop_by_hop", |b| {
        b.iter_batched(
            || request.clone(),
            |mut h| {
                remove_hop_by_hop(&mut h);
                h
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn path_normalization(c: &mut Criterion) {
    let plain = "/app/orders/12345";
    let dotted = "/app/static/../orders/./%E8%AE%A2%E5%8D%95//2024%2F../12345/item%20copy";
    let long: String = (0..64)
        .map(|i| format!("/segment-{i:02}-abcdefgh"))
        .collect();
    assert_eq!(normalize_path(plain).as_deref(), Ok(plain));
    assert_eq!(
        normalize_path(dotted).as_deref(),
        Ok("/app/orders/%E8%AE%A2%E5%8D%95/12345/item%20copy")
    );
    assert!(normalize_path(&long).is_ok());

    let mut g = c.benchmark_group("normalize_path");
    g.bench_function("plain", |b| b.iter(|| normalize_path(black_box(plain))));
    g.bench_function("dots_and_percent", |b| {
        b.iter(|| normalize_path(black_box(dotted)))
    });
    g.bench_function(format!("long_{}_bytes", long.len()), |b| {
        b.iter(|| normalize_path(black_box(&long)))
    });
    g.finish();
}

fn route_matching(c: &mut Criterion) {
    let config = config("");
    let routes = &config.routes;
    assert_eq!(routes.routes().len(), 10);
    let hit = ("app.example.com", "/app/orders/12345");
    let miss = ("app.example.com", "/unknown/page");
    let public = ("app.example.com", "/app/static/js/main.3f2a1c.js");
    let r = routes.resolve(Some(hit.0), hit.1).expect("hit");
    assert!(r.route.name == "app" && !r.public);
    assert!(routes.resolve(Some(miss.0), miss.1).is_none());
    assert!(
        routes
            .resolve(Some(public.0), public.1)
            .expect("public")
            .public
    );

    let mut g = c.benchmark_group("route_resolve");
    for (label, (host, path)) in [("hit", hit), ("miss", miss), ("public", public)] {
        g.bench_function(label, |b| {
            b.iter(|| routes.resolve(black_box(Some(host)), black_box(path)))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    session_lookup,
    identity_headers,
    path_normalization,
    route_matching
);
criterion_main!(benches);
