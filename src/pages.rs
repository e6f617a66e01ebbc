//! The gateway's own HTML pages (errors, sign-out) and JSON error bodies, all with one look.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::GatewayBody;

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What an HTML page says. Texts are plain (escaped here); each comes in English and Chinese.
pub struct Page<'a> {
    /// Page heading (English).
    pub title: &'a str,
    /// Page heading (Chinese).
    pub title_zh: &'a str,
    /// One or two sentences for the person in front of the browser.
    pub message: &'a str,
    /// The same in Chinese.
    pub message_zh: &'a str,
    /// Links offered below the message: (label, href).
    pub actions: &'a [(&'a str, &'a str)],
    /// Shown small at the bottom so a user can quote it to the operator.
    pub request_id: &'a str,
}

/// Renders `page` as a complete HTML response with `status`.
pub fn html(status: StatusCode, page: &Page<'_>) -> Response<GatewayBody> {
    let actions: String = page
        .actions
        .iter()
        .map(|(label, href)| {
            format!(
                r#"<a class="btn" href="{}">{}</a>"#,
                escape_html(href),
                escape_html(label)
            )
        })
        .collect();
    let body = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · dinggate</title>
<style>
body{{font-family:-apple-system,"PingFang SC","Microsoft YaHei",system-ui,sans-serif;background:#f5f7fa;color:#1f2329;margin:0;display:flex;min-height:100vh;align-items:center;justify-content:center}}
main{{background:#fff;border-radius:12px;box-shadow:0 2px 12px rgba(0,0,0,.08);padding:32px 40px;max-width:520px}}
h1{{font-size:20px;margin:0 0 4px}} h2{{font-size:15px;color:#646a73;font-weight:normal;margin:0 0 20px}}
p{{line-height:1.6;margin:8px 0}} .zh{{color:#646a73}}
.btn{{display:inline-block;margin:16px 12px 0 0;padding:8px 18px;border-radius:6px;background:#0089ff;color:#fff;text-decoration:none}}
footer{{margin-top:24px;font-size:12px;color:#8f959e}}
</style></head>
<body><main>
<h1>{title}</h1><h2>{title_zh}</h2>
<p>{message}</p><p class="zh">{message_zh}</p>
<div>{actions}</div>
<footer>{status} · request id <code>{request_id}</code></footer>
</main></body></html>
"#,
        title = escape_html(page.title),
        title_zh = escape_html(page.title_zh),
        message = escape_html(page.message),
        message_zh = escape_html(page.message_zh),
        actions = actions,
        status = status.as_u16(),
        request_id = escape_html(page.request_id),
    );
    let mut resp = Response::new(GatewayBody::from(body));
    *resp.status_mut() = status;
    set_common(&mut resp, "text/html; charset=utf-8");
    resp
}

/// A JSON body `value` with `status`.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::from(value.to_string()));
    *resp.status_mut() = status;
    set_common(&mut resp, "application/json; charset=utf-8");
    resp
}

/// A plain-text body with `status` (health checks).
pub fn text(status: StatusCode, body: &'static str) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::from(body));
    *resp.status_mut() = status;
    set_common(&mut resp, "text/plain; charset=utf-8");
    resp
}

/// A 302 to `location` that is never cached.
pub fn redirect(location: &str) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::empty());
    *resp.status_mut() = StatusCode::FOUND;
    match HeaderValue::from_str(location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        // Callers only pass validated or self-built URLs; an unencodable one must not become
        // a redirect somewhere else, so fall back to the site root.
        Err(_) => {
            resp.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/"));
        }
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn set_common(resp: &mut Response<GatewayBody>, content_type: &'static str) {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Gateway pages carry per-user state and must never be cached or framed by other sites.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape_html("张三"), "张三");
    }

    #[test]
    fn redirect_refuses_header_injection() {
        let r = redirect("/ok\r\nSet-Cookie: x=1");
        assert_eq!(r.headers()[header::LOCATION], "/");
        assert_eq!(redirect("/a?b=c").headers()[header::LOCATION], "/a?b=c");
    }
}
