//! Rendering of the mock's non-JSON bodies: the login page, error pages, the JSAPI stand-in script, avatars.

use std::fmt::Write;

use crate::pages::escape_html;

const STYLE: &str = "
*{box-sizing:border-box}
body{margin:0;background:#f2f4f7;color:#1f2329;font:15px/1.5 -apple-system,BlinkMacSystemFont,'PingFang SC','Microsoft YaHei','Noto Sans CJK SC',sans-serif}
main{max-width:640px;margin:40px auto;padding:0 16px}
.card{background:#fff;border-radius:12px;box-shadow:0 2px 12px rgba(0,0,0,.06);padding:28px}
h1{font-size:20px;margin:0 0 4px}
.sub{color:#646a73;margin:0 0 20px;font-size:13px}
.badge{display:inline-block;background:#fff4e5;color:#b35900;border-radius:4px;padding:0 6px;font-size:12px;margin-left:6px;vertical-align:middle}
ul{list-style:none;margin:0;padding:0}
li{display:flex;align-items:center;gap:14px;padding:12px 0;border-top:1px solid #eff0f1}
.avatar{flex:none;width:40px;height:40px;border-radius:50%;background:#3370ff;color:#fff;display:flex;align-items:center;justify-content:center;font-weight:600}
.off .avatar{background:#bbbfc4}
.who{flex:1;min-width:0}
.name{font-weight:600}
.meta{color:#646a73;font-size:12px;overflow-wrap:anywhere}
a.btn{flex:none;background:#3370ff;color:#fff;text-decoration:none;border-radius:6px;padding:6px 14px;font-size:13px}
a.btn:hover{background:#245bdb}
.note{flex:none;color:#8f959e;font-size:12px}
.foot{margin-top:18px;display:flex;justify-content:space-between;align-items:center;font-size:13px;color:#646a73}
a.refuse{color:#d83931}
.err{color:#d83931;font-weight:600}
code{background:#f2f3f5;border-radius:4px;padding:0 4px}
";

fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>\n",
        escape_html(title)
    )
}

/// Whether a listed person can approve the login.
#[derive(Clone, Copy)]
pub(super) enum Standing {
    /// Can log in.
    Active,
    /// Never activated: shown, but cannot scan.
    Inactive,
}

/// One row of the login page. All text is raw; the renderer escapes it.
pub(super) struct LoginRow {
    pub name: String,
    pub userid: String,
    pub departments: String,
    pub corp: String,
    pub standing: Standing,
    pub approve_href: String,
}

/// What the login page shows besides the people.
pub(super) struct LoginPage {
    pub client_id: String,
    pub scope: String,
    pub rows: Vec<LoginRow>,
    pub refuse_href: String,
}

/// The consent page of `/oauth2/auth`: one approve button per active person, and a refuse link.
pub(super) fn login_page(page: &LoginPage) -> String {
    let mut items = String::new();
    for row in &page.rows {
        let initial: String = row
            .name
            .chars()
            .next()
            .map(String::from)
            .unwrap_or_default();
        let (class, action) = match row.standing {
            Standing::Active => (
                "",
                format!(
                    "<a class=\"btn\" href=\"{}\">以此身份登录</a>",
                    escape_html(&row.approve_href)
                ),
            ),
            Standing::Inactive => (
                " class=\"off\"",
                "<span class=\"note\">账号未激活，无法登录</span>".to_owned(),
            ),
        };
        // Writing to a String cannot fail.
        let _ = write!(
            items,
            "<li{class}><span class=\"avatar\">{}</span><div class=\"who\">\
             <div class=\"name\">{}</div><div class=\"meta\">userid <code>{}</code> · {} · {}</div></div>{action}</li>",
            escape_html(&initial),
            escape_html(&row.name),
            escape_html(&row.userid),
            escape_html(&row.departments),
            escape_html(&row.corp),
        );
    }
    let body = format!(
        "<div class=\"card\"><h1>钉钉登录<span class=\"badge\">模拟 · mock</span></h1>\
         <p class=\"sub\">应用 <code>{}</code> 请求获取你的身份信息（scope: <code>{}</code>）。选择要登录的账号：</p>\
         <ul>{items}</ul>\
         <div class=\"foot\"><span>这是 dinggate 的模拟钉钉，不会连接真实服务。</span>\
         <a class=\"refuse\" href=\"{}\">拒绝授权</a></div></div>",
        escape_html(&page.client_id),
        escape_html(&page.scope),
        escape_html(&page.refuse_href),
    );
    document("钉钉登录（模拟）", &body)
}

/// A DingTalk-style error page with a short, already user-safe message.
pub(super) fn error_page(message: &str) -> String {
    let body = format!(
        "<div class=\"card\"><h1>钉钉登录<span class=\"badge\">模拟 · mock</span></h1>\
         <p class=\"err\">{}</p><p class=\"sub\">请检查应用配置或重新发起登录。</p></div>",
        escape_html(message)
    );
    document("出错了 - 钉钉登录（模拟）", &body)
}

/// What an IP ban / throttling interstitial looks like to a JSON client: HTML, not JSON.
pub(super) fn throttle_page() -> String {
    document(
        "访问被拒绝",
        "<div class=\"card\"><h1>访问被拒绝</h1><p class=\"err\">您的访问过于频繁，请稍后再试。</p>\
         <p class=\"sub\">punish: deny · source: x5</p></div>",
    )
}

/// A small round avatar with the person's first character.
pub(super) fn avatar_svg(name: &str) -> String {
    let initial: String = name.chars().next().map(String::from).unwrap_or_default();
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"96\" height=\"96\" viewBox=\"0 0 96 96\">\
         <circle cx=\"48\" cy=\"48\" r=\"48\" fill=\"#3370ff\"/>\
         <text x=\"48\" y=\"62\" font-size=\"42\" text-anchor=\"middle\" fill=\"#fff\" \
         font-family=\"PingFang SC, Microsoft YaHei, sans-serif\">{}</text></svg>",
        escape_html(&initial)
    )
}

/// Stand-in for `ddlogin.js`: `DTFrameLogin(frame, login, onSuccess, onError)` puts the mock's
/// authorize page in an iframe (`mock_frame=1`), whose approval posts `{redirectUrl, authCode,
/// state}` back to this page; DingTalk's frame does the same after a scan.
pub(super) const QR_SCRIPT: &str = r#"/* dinggate mock DingTalk: stand-in for ddlogin.js (not the real script). */
(function () {
  "use strict";
  var script = document.currentScript;
  var base = script && script.src ? new URL(script.src, window.location.href).origin : "";
  window.DTFrameLogin = function (frame, login, onSuccess, onError) {
    var holder = document.getElementById(frame.id);
    var query = new URLSearchParams();
    Object.keys(login).forEach(function (k) {
      // loginParams.redirect_uri arrives encoded, as DingTalk documents it.
      query.set(k, k === "redirect_uri" ? decodeURIComponent(login[k]) : String(login[k]));
    });
    query.set("mock_frame", "1");
    var iframe = document.createElement("iframe");
    iframe.src = base + "/oauth2/auth?" + query.toString();
    iframe.width = String(frame.width || 300);
    iframe.height = String(frame.height || 300);
    iframe.setAttribute("frameborder", "0");
    holder.appendChild(iframe);
    window.addEventListener("message", function (ev) {
      if (ev.origin !== base || !ev.data || ev.data.source !== "dinggate-mock-login") return;
      if (ev.data.error) { if (onError) onError(ev.data.error); return; }
      if (onSuccess) onSuccess({ redirectUrl: ev.data.redirectUrl, authCode: ev.data.authCode, state: ev.data.state });
    });
  };
})();
"#;

/// What the authorize page in a `DTFrameLogin` frame answers an approval with: a message to the
/// page that embeds it (origin `target_origin`, the redirect URL's).
pub(super) fn frame_result(
    target_origin: &str,
    message: &serde_json::Value,
    nonce: &str,
) -> String {
    let inert = |v: String| v.replace('<', "\\u003c");
    format!(
        "<!doctype html><meta charset=\"utf-8\"><title>钉钉登录</title><p>登录成功</p><script nonce=\"{nonce}\">parent.postMessage({}, {});</script>",
        inert(message.to_string()),
        inert(serde_json::Value::from(target_origin).to_string())
    )
}

/// Stand-in for `dingtalk.open.js`: defines `window.dd` with `ready`, `error`, `env` (platform and
/// client version read from the User-Agent with the SDK's own patterns, `lib/env.js`) and
/// `runtime.permission.requestAuthCode` (V1); with `v2`, also `dd.requestAuthCode`, which — like
/// the real build's `runtime.permission.requestAuthCodeV2` — fails on clients older than 7.0.45
/// (mobile) / 7.0.50 (PC). Codes come from the mock's `/__mock/jsapi_code` on the script's own
/// origin, for the page's URL and the userid in the script URL's `?userid=` (default:
/// `default_userid`).
pub(super) fn jsapi_script(default_userid: &str, v2: bool) -> String {
    // serde_json string escaping is valid JavaScript string syntax; `<` is escaped so the text is inert in HTML too.
    let default_userid = serde_json::Value::from(default_userid)
        .to_string()
        .replace('<', "\\u003c");
    format!(
        r##"/* dinggate mock DingTalk: stand-in for dingtalk.open.js (not the real JSAPI). */
(function () {{
  "use strict";
  var script = document.currentScript;
  var src = script && script.src ? new URL(script.src, window.location.href) : null;
  var base = src ? src.origin : "";
  var userid = (src && src.searchParams.get("userid")) || {default_userid};
  var ua = navigator.userAgent;
  var inDingTalk = /DingTalk/i.test(ua);
  var platform = !inDingTalk ? "notInDingTalk" : /Android/i.test(ua) ? "android" : /iPhone|iPad|iPod/i.test(ua) ? "ios" : "pc";
  var m = /AliApp\(\w+\/([a-zA-Z0-9.-]+)\)/.exec(ua) || /DingTalk\/([a-zA-Z0-9.-]+)/.exec(ua) || /DingTalk\(([a-zA-Z0-9.-]+)\)/.exec(ua);
  var version = m ? m[1] : "";
  function atLeast(v, min) {{
    var a = v.split(/[.-]/), b = min.split(".");
    for (var i = 0; i < b.length; i++) {{
      var x = parseInt(a[i], 10) || 0, y = parseInt(b[i], 10);
      if (x !== y) return x > y;
    }}
    return true;
  }}
  function settle(p, opts) {{
    p.then(function (res) {{ if (opts.onSuccess) opts.onSuccess(res); }},
           function (err) {{ if (opts.onFail) opts.onFail(err); }});
    return p;
  }}
  function ask(api, opts) {{
    opts = opts || {{}};
    var url = base + "/__mock/jsapi_code?api=" + api + "&userid=" + encodeURIComponent(userid) +
      "&url=" + encodeURIComponent(window.location.href.split("#")[0]) +
      "&corpId=" + encodeURIComponent(opts.corpId || "") +
      (api === "v2" ? "&clientId=" + encodeURIComponent(opts.clientId || "") : "");
    return settle(fetch(url, {{ credentials: "omit" }}).then(function (r) {{
      return r.json().then(function (b) {{
        if (!r.ok || !b.code) {{
          throw {{ errorCode: String(b.errorCode || r.status), errorMessage: b.error || "requestAuthCode failed" }};
        }}
        return {{ code: b.code }};
      }});
    }}), opts);
  }}
  var dd = {{
    version: "mock",
    env: {{ platform: platform, version: version }},
    ready: function (fn) {{ setTimeout(fn, 0); }},
    error: function () {{}},
    config: function () {{}},
    runtime: {{ permission: {{ requestAuthCode: function (opts) {{ return ask("v1", opts); }} }} }}
  }};
  if ({v2}) {{
    dd.requestAuthCode = function (opts) {{
      var since = {{ ios: "7.0.45", android: "7.0.45", pc: "7.0.50" }}[platform];
      if (since && !atLeast(version, since)) {{
        // This client has no runtime.permission.requestAuthCodeV2.
        return settle(Promise.reject({{ errorCode: "-1", errorMessage: "jsapi not supported by this client version" }}), opts || {{}});
      }}
      return ask("v2", opts);
    }};
  }}
  window.dd = dd;
}})();
"##
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_page_escapes_everything_it_shows() {
        let page = LoginPage {
            client_id: "<id>".into(),
            scope: "openid corpid".into(),
            rows: vec![
                LoginRow {
                    name: "<b>张三</b>".into(),
                    userid: "zhang\"san".into(),
                    departments: "研发部 › 平台组".into(),
                    corp: "示例科技有限公司".into(),
                    standing: Standing::Active,
                    approve_href: "/oauth2/auth?a=1&mock_user=x".into(),
                },
                LoginRow {
                    name: "孙七".into(),
                    userid: "sunqi".into(),
                    departments: "市场部".into(),
                    corp: "示例科技有限公司".into(),
                    standing: Standing::Inactive,
                    approve_href: "/never".into(),
                },
            ],
            refuse_href: "/oauth2/auth?mock_refuse=1".into(),
        };
        let html = login_page(&page);
        assert!(html.contains("&lt;b&gt;张三&lt;/b&gt;"));
        assert!(!html.contains("<b>"));
        assert!(html.contains("zhang&quot;san"));
        assert!(html.contains("href=\"/oauth2/auth?a=1&amp;mock_user=x\""));
        assert!(!html.contains("/never"), "inactive users get no login link");
        assert!(html.contains("账号未激活"));
        assert!(html.contains("拒绝授权"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external assets"
        );
    }

    #[test]
    fn jsapi_script_embeds_the_default_user_as_a_js_string() {
        let js = jsapi_script("a\"</script>", true);
        assert!(js.contains(r#""a\"\u003c/script>""#), "{js}");
        assert!(js.contains("window.dd = dd"));
    }
}
