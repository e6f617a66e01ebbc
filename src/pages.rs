//! The gateway's own HTML pages (sign-in, in-client login, 403, errors, sign-out) and JSON/text bodies, all with one look.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::json;

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

/// Serializes `value` as JSON that is also safe inside an HTML `<script>` element: `<`, `>`, `&`,
/// U+2028 and U+2029 are written as `\uXXXX` escapes, so no value can close the script element,
/// open an HTML comment or end a JavaScript line.
pub fn script_json(value: &serde_json::Value) -> String {
    let raw = value.to_string();
    let mut out = String::with_capacity(raw.len() + 16);
    for c in raw.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The language a page is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// Simplified Chinese.
    Zh,
    /// English.
    En,
}

impl Lang {
    fn tag(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }

    fn pick<'a>(self, en: &'a str, zh: &'a str) -> &'a str {
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }
}

/// Most `Accept-Language` entries looked at; the rest of an oversized header is ignored.
const MAX_LANGUAGE_RANGES: usize = 32;

/// Picks the page language from `Accept-Language` (RFC 9110 §12.5.4): the range with the highest
/// q-value among `zh*` and `en*` wins, earlier entries win ties, `q=0` means "not acceptable".
/// Without a usable `zh` or `en` range the answer is [`Lang::En`].
pub fn negotiate_lang(headers: &HeaderMap) -> Lang {
    let mut best: Option<(u16, Lang)> = None;
    let ranges = headers
        .get_all(header::ACCEPT_LANGUAGE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .take(MAX_LANGUAGE_RANGES);
    for range in ranges {
        let mut parts = range.split(';');
        let tag = parts.next().unwrap_or("").trim();
        let primary = tag.split('-').next().unwrap_or("");
        let lang = if primary.eq_ignore_ascii_case("zh") {
            Lang::Zh
        } else if primary.eq_ignore_ascii_case("en") {
            Lang::En
        } else {
            continue;
        };
        let mut q = Some(1000);
        for param in parts {
            if let Some((k, v)) = param.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    q = parse_qvalue(v.trim());
                }
            }
        }
        // A malformed q-value makes the entry unusable rather than guessing its weight.
        let Some(q) = q.filter(|q| *q > 0) else {
            continue;
        };
        if best.is_none_or(|(b, _)| q > b) {
            best = Some((q, lang));
        }
    }
    best.map_or(Lang::En, |(_, lang)| lang)
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn parse_qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value = format!("{frac:0<3}").parse::<u16>().ok()?;
    match int {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
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
    /// The protected application's name (`ui.app_name`), in the title and footer.
    pub app_name: &'a str,
}

/// Renders `page` as a complete HTML response with `status`, English first.
pub fn html(status: StatusCode, page: &Page<'_>) -> Response<GatewayBody> {
    html_lang(status, page, Lang::En)
}

/// Renders `page` as a complete HTML response with `status`, both languages, `lang` first.
pub fn html_lang(status: StatusCode, page: &Page<'_>, lang: Lang) -> Response<GatewayBody> {
    let view = MessageView {
        status,
        lang,
        title: (page.title, page.title_zh),
        paragraphs: &[Paragraph {
            text: (page.message, page.message_zh),
            class: "",
        }],
        actions: page.actions,
        request_id: page.request_id,
        app_name: page.app_name,
    };
    view.render()
}

/// The signed-in user who may not enter, and why.
pub struct Forbidden<'a> {
    /// Language shown first.
    pub lang: Lang,
    /// The protected application's name (`ui.app_name`), in the title and footer.
    pub app_name: &'a str,
    /// Display name of the signed-in user.
    pub user_name: &'a str,
    /// Who may open the page, in plain words for the user (English); never config syntax,
    /// which goes to the log line with the request id.
    pub reason_en: &'a str,
    /// The same in Chinese.
    pub reason_zh: &'a str,
    /// Where the "sign out" link goes.
    pub sign_out_url: &'a str,
    /// Shown at the bottom.
    pub request_id: &'a str,
}

/// A 403 page naming the signed-in user and, in plain words, who may open the page, with a
/// sign-out link.
pub fn forbidden(p: &Forbidden<'_>) -> Response<GatewayBody> {
    let who = (
        format!(
            "You are signed in as “{}”, but your account may not open this page.",
            p.user_name
        ),
        format!(
            "您已以“{}”的身份登录，但该账号无权访问此页面。",
            p.user_name
        ),
    );
    let hint = (
        "If you think you should have access, ask the administrator and quote the request id: it lets them see the exact rule. To use another account, sign out first.",
        "如果您认为应当有权访问，请联系管理员并提供请求编号，管理员可据此查到具体规则。如需换一个账号，请先退出登录。",
    );
    let view = MessageView {
        status: StatusCode::FORBIDDEN,
        lang: p.lang,
        title: ("Access denied", "无权访问"),
        paragraphs: &[
            Paragraph {
                text: (&who.0, &who.1),
                class: "",
            },
            Paragraph {
                text: (p.reason_en, p.reason_zh),
                class: "reason",
            },
            Paragraph {
                text: hint,
                class: "",
            },
        ],
        actions: &[("Sign out · 退出登录", p.sign_out_url)],
        request_id: p.request_id,
        app_name: p.app_name,
    };
    view.render()
}

/// What the two sign-out buttons do, in English and Chinese (the confirmation page).
pub const SIGN_OUT_EXPLAINED: (&str, &str) = (
    "“Sign out” ends your session on this gateway (every application behind it) in this browser. “Sign out everywhere” also ends it in every other browser and device where you signed in. Either way you stay signed in to DingTalk itself, so signing in here again may need no more than a click.",
    "“退出登录”结束此浏览器中您在本网关（及其后面所有应用）上的会话；“在所有设备上退出”还会结束您在其他所有浏览器和设备上的会话。两种方式都不会退出钉钉本身，因此再次登录可能只需点击一下。",
);

/// The sign-out confirmation page.
pub struct SignOutConfirm<'a> {
    /// Language shown first.
    pub lang: Lang,
    /// Where the form posts (`{prefix}/sign_out`).
    pub action: &'a str,
    /// The validated return URL, sent back as a hidden field.
    pub rd: Option<&'a str>,
    /// Where "cancel" goes (a validated URL).
    pub cancel: &'a str,
    /// Absolute URLs the redirects after the POST may pass through (the return URL's host,
    /// public_url, DingTalk's login page): their origins join the CSP's `form-action`.
    pub redirects_via: &'a [&'a str],
    /// Shown at the bottom.
    pub request_id: &'a str,
    /// The protected application's name (`ui.app_name`), in the title and footer.
    pub app_name: &'a str,
}

/// Asks to confirm a sign-out: one button ends this browser's session, the other every session
/// of the person; both POST the form (a GET changes nothing). Browsers apply `form-action` to
/// every redirect after the POST (to `rd`, which, signed out, leads on to the login), so the
/// origins of `rd` and `redirects_via` are allowed there. `Referrer-Policy: same-origin` makes
/// browsers name the gateway's origin in the POST's `Origin` (with `no-referrer` it is `null`).
pub fn sign_out_confirm(p: &SignOutConfirm<'_>) -> Response<GatewayBody> {
    let lang = p.lang;
    let other = match lang {
        Lang::En => Lang::Zh,
        Lang::Zh => Lang::En,
    };
    let t = |en: &str, zh: &str| {
        (
            escape_html(lang.pick(en, zh)),
            escape_html(other.pick(en, zh)),
        )
    };
    let (title, title_alt) = t("Sign out?", "退出登录？");
    let (text, text_alt) = t(SIGN_OUT_EXPLAINED.0, SIGN_OUT_EXPLAINED.1);
    let rd =
        p.rd.map(|rd| {
            format!(
                r#"<input type="hidden" name="rd" value="{}">"#,
                escape_html(rd)
            )
        })
        .unwrap_or_default();
    let body = format!(
        r#"<main>
<h1>{title}</h1><h2 lang="{other_tag}">{title_alt}</h2>
<p>{text}</p>
<div class="alt" lang="{other_tag}"><p>{text_alt}</p></div>
<form method="post" action="{action}">{rd}
<div class="actions">
<button class="btn" type="submit" name="everywhere" value="0">Sign out · 退出登录</button>
<button class="btn secondary" type="submit" name="everywhere" value="1">Sign out everywhere · 在所有设备上退出</button>
<a class="btn secondary" href="{cancel}">Cancel · 取消</a>
</div>
</form>
{footer}
</main>"#,
        other_tag = other.tag(),
        action = escape_html(p.action),
        cancel = escape_html(p.cancel),
        footer = footer(lang, p.app_name, None, p.request_id),
    );
    let nonce = new_nonce();
    let mut csp = Csp::new(&nonce);
    let via = p.rd.iter().chain(p.redirects_via).copied();
    csp.form
        .extend(via.filter_map(Source::parse).filter_map(|s| s.origin));
    form_page(
        lang,
        lang.pick("Sign out?", "退出登录？"),
        p.app_name,
        &nonce,
        &body,
        &csp,
    )
}

/// A 200 page whose forms POST back to the gateway: `Referrer-Policy: same-origin`, so
/// browsers name the gateway's origin in the POST's `Origin` (with `no-referrer` it is `null`,
/// which the same-origin check refuses).
fn form_page(
    lang: Lang,
    title: &str,
    app_name: &str,
    nonce: &str,
    body: &str,
    csp: &Csp,
) -> Response<GatewayBody> {
    let mut resp = page_response(
        StatusCode::OK,
        &document(lang, title, app_name, nonce, body, ""),
        csp,
    );
    resp.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// One row of the sessions page.
pub struct SessionRow<'a> {
    /// The session id (the value the "end" button posts).
    pub sid: &'a str,
    /// Browser and system.
    pub device: &'a str,
    /// The address it signed in from.
    pub address: &'a str,
    /// Unix seconds.
    pub signed_in_at: i64,
    /// Unix seconds.
    pub last_seen: i64,
    /// This browser's session.
    pub current: bool,
}

/// The sessions page: a person's active sessions, each with a button that ends it.
pub struct SessionsPage<'a> {
    /// Language shown first.
    pub lang: Lang,
    /// Where the "end" buttons post (`{prefix}/sessions`).
    pub action: &'a str,
    /// The sessions, newest first.
    pub rows: &'a [SessionRow<'a>],
    /// False with the memory store: only this browser's session is known.
    pub shared: bool,
    /// Shown at the bottom.
    pub request_id: &'a str,
    /// The protected application's name (`ui.app_name`), in the title and footer.
    pub app_name: &'a str,
}

/// Unix seconds as `2026-12-01 05:45 UTC`.
fn utc_minute(secs: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    let text = humantime::format_rfc3339_seconds(t).to_string();
    format!("{} {} UTC", &text[..10], &text[11..16])
}

/// Lists the person's sessions; each "end" button and "end all" POST to `action` (a GET changes
/// nothing), with `Referrer-Policy: same-origin` so the POST carries the gateway's `Origin`.
pub fn sessions(p: &SessionsPage<'_>) -> Response<GatewayBody> {
    let lang = p.lang;
    let mut rows = String::new();
    for row in p.rows {
        let this = if row.current {
            "<strong>This browser · 当前浏览器</strong><br>"
        } else {
            ""
        };
        rows.push_str(&format!(
            r#"<tr><td>{this}{device}</td><td>{address}</td><td>{signed_in}</td><td>{seen}</td><td><form method="post" action="{action}"><button class="btn secondary" type="submit" name="end" value="{sid}">End · 结束</button></form></td></tr>
"#,
            device = escape_html(row.device),
            address = escape_html(row.address),
            signed_in = utc_minute(row.signed_in_at),
            seen = utc_minute(row.last_seen),
            action = escape_html(p.action),
            sid = escape_html(row.sid),
        ));
    }
    let note = if p.shared {
        ""
    } else {
        "<p>Only this browser's session is shown: this gateway keeps no list of sessions (no shared store). “End all” still ends every one. · 仅显示当前浏览器的会话；“全部结束”仍会结束所有会话。</p>"
    };
    let body = format!(
        r#"<main>
<h1>{title}</h1><h2>{title_alt}</h2>
<p>Where you are signed in to this gateway. Ending a session signs that browser out of every application behind it within a second. · 您在本网关上的登录会话。结束某个会话后，该浏览器会在一秒内退出其后所有应用。</p>
{note}<table>
<thead><tr><th>Device · 设备</th><th>Address · 地址</th><th>Signed in · 登录时间</th><th>Last seen · 最近使用</th><th></th></tr></thead>
<tbody>
{rows}</tbody>
</table>
<form method="post" action="{action}"><div class="actions"><button class="btn" type="submit" name="end" value="all">End all sessions · 结束全部会话</button></div></form>
{footer}
</main>"#,
        title = escape_html(lang.pick("Your sessions", "您的登录会话")),
        title_alt = escape_html(match lang {
            Lang::En => "您的登录会话",
            Lang::Zh => "Your sessions",
        }),
        action = escape_html(p.action),
        footer = footer(lang, p.app_name, None, p.request_id),
    );
    let nonce = new_nonce();
    let csp = Csp::new(&nonce);
    form_page(
        lang,
        lang.pick("Your sessions", "您的登录会话"),
        p.app_name,
        &nonce,
        &body,
        &csp,
    )
}

/// The application the gateway protects, as shown on its pages.
pub struct Branding<'a> {
    /// Shown as the page heading.
    pub app_name: &'a str,
    /// An `http(s)` URL, a same-origin path or a `data:` URL of a small logo; anything else is not shown.
    pub logo_url: Option<&'a str>,
}

/// Parameters of DingTalk's embedded QR login (`DTFrameLogin`, dingtalk-api.md §2).
pub struct QrLogin<'a> {
    /// URL of `ddlogin.js`, which defines `window.DTFrameLogin`.
    pub script_url: &'a str,
    /// The app's client id (AppKey).
    pub client_id: &'a str,
    /// The gateway's callback URL (not yet encoded); the page must be served from its origin.
    pub redirect_uri: &'a str,
    /// `openid` or `openid corpid`.
    pub scope: &'a str,
    /// The login state, bound to a cookie by the caller.
    pub state: &'a str,
    /// The organization to pre-select; sent only when `scope` contains `corpid`.
    pub corp_id: Option<&'a str>,
    /// `dingtalk.exclusive_corp_id`: the exclusive-account (专属钉钉) organization to log in to.
    pub exclusive_corp_id: Option<&'a str>,
    /// Origin of `dingtalk.login_url`: allowed as a frame source besides DingTalk's own (a
    /// stand-in such as the mock's frames its own login page).
    pub login_origin: &'a str,
}

/// Everything the sign-in page shows.
pub struct SignInPage<'a> {
    /// App name and logo.
    pub branding: Branding<'a>,
    /// The page language.
    pub lang: Lang,
    /// Where "log in with DingTalk" goes (`{prefix}/start?rd=...`).
    pub start_url: &'a str,
    /// The embedded QR code, when configured.
    pub qr: Option<QrLogin<'a>>,
    /// The browser already has a valid session: offer to continue or to switch account
    /// instead of the login (`start_url` and `qr` are then not shown).
    pub signed_in: Option<SignedIn<'a>>,
    /// Shown at the bottom.
    pub request_id: &'a str,
}

/// The session a browser already has when it opens the sign-in page.
pub struct SignedIn<'a> {
    /// Display name of the signed-in person.
    pub name: &'a str,
    /// Where "continue" goes (the validated return URL).
    pub continue_url: &'a str,
    /// Where the "switch account" form posts (`{prefix}/sign_out`).
    pub sign_out_action: &'a str,
    /// The sign-out form's `rd`: this sign-in page again, so the next account can sign in.
    pub then: &'a str,
}

/// Origin of the iframe `ddlogin.js` creates; it is fixed in the script, not a parameter.
const DINGTALK_LOGIN_ORIGIN: &str = "https://login.dingtalk.com";
/// How long the sign-in page waits for `ddlogin.js` before hiding the QR area.
const QR_LOAD_TIMEOUT_MS: u32 = 10_000;

/// The sign-in page: app name and logo, the embedded QR code (when `qr` is set and its script
/// loads) and a "log in with DingTalk" button that works without JavaScript. A successful scan
/// navigates only to a URL on the callback's origin and path.
pub fn sign_in(p: &SignInPage<'_>) -> Response<GatewayBody> {
    if let Some(who) = &p.signed_in {
        return already_signed_in(p, who);
    }
    let lang = p.lang;
    let nonce = new_nonce();
    let logo = p.branding.logo_url.and_then(Source::parse);
    let qr = p.qr.as_ref().and_then(|qr| {
        let script = Source::parse(qr.script_url)?;
        let callback = url::Url::parse(qr.redirect_uri).ok()?;
        Some((qr, script, callback))
    });

    let mut csp = Csp::new(&nonce);
    if let Some(logo) = &logo {
        csp.img.push(logo.csp_source());
    }
    let mut qr_html = String::new();
    let mut scripts = String::new();
    if let Some((qr, script, callback)) = &qr {
        csp.script.push(script.csp_source());
        csp.frame.push(DINGTALK_LOGIN_ORIGIN.to_owned());
        if qr.login_origin != DINGTALK_LOGIN_ORIGIN {
            csp.frame.push(qr.login_origin.to_owned());
        }
        // `ddlogin.js` may size its iframe through style attributes; they cannot run code.
        csp.style_attr = true;
        let mut login = json!({
            "redirect_uri": qr.redirect_uri,
            "response_type": "code",
            "client_id": qr.client_id,
            "scope": qr.scope,
            "prompt": "consent",
            "state": qr.state,
        });
        // In iframe mode a `corpid` scope needs the organization (dingtalk-api.md §2). `org_type`
        // is not sent. Evidence: DingTalk's documentation lists one value, `management`, which
        // lists only organizations the person administers (§2 table) — it would hide ours from
        // every ordinary member; the official type comments say iframe + `corpid` wants
        // `org_type` and `corpId`, yet give no value that keeps members in; Logto's connector
        // (npm @logto/connector-dingtalk-web 0.4.5, read 2026-11-30) sends neither, with scope
        // `openid`. Not verified here: ddlogin.js as served (g.alicdn.com is not reachable from
        // the build machine, and npm has no copy). If DingTalk ever refuses the frame without
        // `org_type`, the button's full-page login (no frame) still works.
        if qr.scope.split_whitespace().any(|s| s == "corpid") {
            if let Some(corp) = qr.corp_id {
                login["corpId"] = corp.into();
            }
        }
        if let Some(exclusive) = qr.exclusive_corp_id {
            login["exclusiveLogin"] = "true".into();
            login["exclusiveCorpId"] = exclusive.into();
        }
        let config = json!({
            "script": qr.script_url,
            "login": login,
            "callbackOrigin": callback.origin().ascii_serialization(),
            "callbackPath": callback.path(),
            "loadTimeoutMs": QR_LOAD_TIMEOUT_MS,
        });
        qr_html = format!(
            r#"<section class="qr" id="dg-qr" aria-live="polite">
<p class="muted">{scan}</p>
<div id="dg-qr-frame" class="qr-frame"><div class="qr-loading"><span class="spinner small"></span>{loading}</div></div>
<p class="error" id="dg-qr-error" hidden></p>
</section>
<div class="divider">{or}</div>
"#,
            scan = lang.pick("Scan with the DingTalk app", "打开钉钉 App 扫码登录"),
            loading = lang.pick("Loading QR code…", "正在加载二维码…"),
            or = lang.pick("or", "或"),
        );
        scripts = format!(
            "<script nonce=\"{nonce}\">var DINGGATE_QR = {};\n{SIGN_IN_JS}</script>",
            script_json(&config)
        );
    }

    let logo_html = logo
        .as_ref()
        .map(|l| format!(r#"<img class="logo" src="{}" alt="">"#, escape_html(l.url)))
        .unwrap_or_default();
    let body = format!(
        r#"<main class="narrow center">
<div class="brand">{logo_html}<h1>{app}</h1></div>
<p class="muted">{lead}</p>
{qr_html}<a class="btn block" id="dg-login" href="{start}">{button}</a>
<p class="hint">{hint}</p>
{footer}
</main>"#,
        app = escape_html(p.branding.app_name),
        lead = lang.pick("Sign in with DingTalk to continue", "请使用钉钉登录后继续"),
        start = escape_html(p.start_url),
        button = lang.pick("Log in with DingTalk", "使用钉钉登录"),
        hint = lang.pick(
            "You will be taken to DingTalk to confirm who you are.",
            "将跳转到钉钉确认您的身份。"
        ),
        footer = footer(lang, p.branding.app_name, None, p.request_id),
    );
    page_response(
        StatusCode::OK,
        &document(
            lang,
            lang.pick("Sign in", "登录"),
            p.branding.app_name,
            &nonce,
            &body,
            &scripts,
        ),
        &csp,
    )
}

/// The sign-in page for a browser that is already signed in: "continue" to the return URL, or
/// "switch account", a form that POSTs the sign-out and comes back to the sign-in page.
/// `Referrer-Policy: same-origin` makes browsers send the gateway's origin in the POST's
/// `Origin`, which the sign-out requires.
fn already_signed_in(p: &SignInPage<'_>, who: &SignedIn<'_>) -> Response<GatewayBody> {
    let lang = p.lang;
    let nonce = new_nonce();
    let logo = p.branding.logo_url.and_then(Source::parse);
    let mut csp = Csp::new(&nonce);
    if let Some(logo) = &logo {
        csp.img.push(logo.csp_source());
    }
    let logo_html = logo
        .as_ref()
        .map(|l| format!(r#"<img class="logo" src="{}" alt="">"#, escape_html(l.url)))
        .unwrap_or_default();
    let name = escape_html(who.name);
    let body = format!(
        r#"<main class="narrow center">
<div class="brand">{logo_html}<h1>{app}</h1></div>
<p id="dg-signed-in">{already}</p>
<a class="btn block" id="dg-continue" href="{continue_url}">{continue_label}</a>
<form method="post" action="{action}"><input type="hidden" name="rd" value="{then}">
<button class="btn block secondary" id="dg-switch" type="submit">{switch}</button>
</form>
<p class="hint">{hint}</p>
{footer}
</main>"#,
        app = escape_html(p.branding.app_name),
        already = match lang {
            Lang::En => format!("You are already signed in as “{name}”."),
            Lang::Zh => format!("您已以“{name}”的身份登录。"),
        },
        continue_url = escape_html(who.continue_url),
        continue_label = lang.pick("Continue", "继续"),
        action = escape_html(who.sign_out_action),
        then = escape_html(who.then),
        switch = lang.pick("Switch account", "切换账号"),
        hint = lang.pick(
            "Switch account signs you out of this gateway in this browser, then lets you sign in with DingTalk again. You stay signed in to DingTalk itself: to use another DingTalk account, switch it in the DingTalk app or on DingTalk's login page.",
            "切换账号会先退出此浏览器中的网关登录，然后重新使用钉钉登录。钉钉本身不会退出：如需使用另一个钉钉账号，请在钉钉 App 或钉钉登录页中切换。"
        ),
        footer = footer(lang, p.branding.app_name, None, p.request_id),
    );
    let mut resp = page_response(
        StatusCode::OK,
        &document(
            lang,
            lang.pick("Signed in", "已登录"),
            p.branding.app_name,
            &nonce,
            &body,
            "",
        ),
        &csp,
    );
    resp.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// Everything the in-client (免登) login page needs.
pub struct InAppPage<'a> {
    /// App name (the logo is not shown: the page loads nothing but the JSAPI script).
    pub branding: Branding<'a>,
    /// The page language.
    pub lang: Lang,
    /// URL of `dingtalk.open.js` (or the mock's stand-in).
    pub jsapi_url: &'a str,
    /// The organization to request the code for.
    pub corp_id: &'a str,
    /// The app's client id (AppKey).
    pub client_id: &'a str,
    /// The login state, bound to a cookie by the caller.
    pub state: &'a str,
    /// Same-origin URL that takes `POST {"code","state"}`.
    pub callback_url: &'a str,
    /// Where to go when the in-client login does not work (the QR login, `start?rd=...`).
    pub fallback_url: &'a str,
    /// How long to wait for a code before falling back.
    pub timeout_ms: u32,
    /// Shown at the bottom.
    pub request_id: &'a str,
}

/// How long the page waits for the callback's answer before falling back; the gateway's own
/// DingTalk calls time out well before this.
const INAPP_POST_TIMEOUT_MS: u32 = 30_000;
/// How long the fallback message stays before the QR login opens.
const INAPP_FALLBACK_DELAY_MS: u32 = 1_500;

/// The in-client login page: loads the JSAPI, asks the client for a login-free code, posts it
/// with the state to `callback_url` and follows the answer (`{"redirect"}`, one `{"retry",
/// "state"}` with a fresh code); anything else, or no code within `timeout_ms`, falls back to
/// `fallback_url`. Works without any AMD loader on the page (dingtalk-api.md §7.1).
pub fn in_app(p: &InAppPage<'_>) -> Response<GatewayBody> {
    let lang = p.lang;
    let nonce = new_nonce();
    let jsapi = Source::parse(p.jsapi_url);
    let mut csp = Csp::new(&nonce);
    // Client bridges signal the native side through hidden iframes, custom-scheme navigations
    // or requests we cannot enumerate; only what can run code stays locked down here.
    csp.open_bridge = true;
    csp.style_attr = true;
    let mut scripts = String::new();
    let config = json!({
        "corpId": p.corp_id,
        "clientId": p.client_id,
        "state": p.state,
        "callback": p.callback_url,
        "fallback": p.fallback_url,
        "timeoutMs": p.timeout_ms,
        "postTimeoutMs": INAPP_POST_TIMEOUT_MS,
        "fallbackDelayMs": INAPP_FALLBACK_DELAY_MS,
    });
    if let Some(jsapi) = &jsapi {
        csp.script.push(jsapi.csp_source());
        // The UMD build registers itself as an AMD module instead of setting `window.dd` when a
        // `define` is present (some containers inject one), so hide it while the script runs.
        scripts.push_str(&format!(
            "<script nonce=\"{nonce}\">{HIDE_AMD_JS}</script>\n<script src=\"{}\"></script>\n",
            escape_html(jsapi.url)
        ));
    }
    scripts.push_str(&format!(
        "<script nonce=\"{nonce}\">var DINGGATE_INAPP = {};\n{IN_APP_JS}</script>",
        script_json(&config)
    ));
    let body = format!(
        r#"<main class="narrow center">
<div class="brand"><h1>{app}</h1></div>
<div id="dg-working"><span class="spinner"></span><p>{working}</p><p class="muted">{working_more}</p></div>
<div id="dg-fallback" hidden><p>{fallback}</p><p id="dg-fallback-domain" class="muted" hidden>{fallback_domain}</p><a class="btn" href="{fallback_url}">{fallback_button}</a></div>
<noscript><p>{noscript}</p><a class="btn" href="{fallback_url}">{fallback_button}</a></noscript>
{footer}
</main>"#,
        app = escape_html(p.branding.app_name),
        working = lang.pick("Signing in…", "正在登录…"),
        working_more = lang.pick(
            "Signing you in with your DingTalk account.",
            "正在使用当前钉钉账号自动登录。"
        ),
        fallback = lang.pick(
            "Automatic sign-in inside DingTalk did not work. Opening the QR code sign-in…",
            "无法在钉钉内自动登录，正在转到扫码登录…"
        ),
        fallback_domain = lang.pick(
            "DingTalk does not allow signing in to this app from this address. An administrator must add this site to the app's login-free address (端内免登地址) in the DingTalk developer console.",
            "钉钉不允许在此地址免登此应用。请管理员在钉钉开发者后台将本站点添加为应用的端内免登地址。"
        ),
        fallback_button = lang.pick("Continue", "继续"),
        noscript = lang.pick(
            "Automatic sign-in needs JavaScript.",
            "自动登录需要启用 JavaScript。"
        ),
        fallback_url = escape_html(p.fallback_url),
        footer = footer(lang, p.branding.app_name, None, p.request_id),
    );
    page_response(
        StatusCode::OK,
        &document(
            lang,
            lang.pick("Signing in", "正在登录"),
            p.branding.app_name,
            &nonce,
            &body,
            &scripts,
        ),
        &csp,
    )
}

/// A JSON body `value` with `status`.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::from(value.to_string()));
    *resp.status_mut() = status;
    set_common(&mut resp, "application/json; charset=utf-8");
    resp
}

/// The JWKS document of the assertion keys (`/_dinggate/jwks.json`): public, the same for
/// everyone, so caches may keep it for five minutes (publish a next key at least that long
/// before it signs).
pub fn jwks(body: bytes::Bytes) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::from(body));
    set_common(&mut resp, "application/jwk-set+json");
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
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

/// A fresh CSP nonce: 128 random bits, base64.
fn new_nonce() -> String {
    STANDARD.encode(rand::random::<[u8; 16]>())
}

/// A URL a page loads something from, and the CSP source that allows exactly its origin.
struct Source<'a> {
    url: &'a str,
    origin: Option<String>,
}

impl<'a> Source<'a> {
    /// An absolute `http(s)` URL or a same-origin path; `None` for anything else (a
    /// `javascript:` URL, a scheme-relative `//host`, an origin that would not be a clean CSP
    /// token).
    fn parse(url: &'a str) -> Option<Source<'a>> {
        if url.starts_with('/') && !url.starts_with("//") && !url.starts_with("/\\") {
            return Some(Source { url, origin: None });
        }
        let parsed = url::Url::parse(url).ok()?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return None;
        }
        let origin = parsed.origin().ascii_serialization();
        // The origin goes into a header whose tokens are separated by spaces, `;` and `,`.
        let clean = origin
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:/[]".contains(&b));
        clean.then_some(Source {
            url,
            origin: Some(origin),
        })
    }

    fn csp_source(&self) -> String {
        self.origin.clone().unwrap_or_else(|| "'self'".to_owned())
    }
}

/// A Content-Security-Policy: nothing is allowed unless listed; inline script and style only
/// with the response's nonce.
struct Csp {
    nonce: String,
    script: Vec<String>,
    connect: Vec<String>,
    img: Vec<String>,
    frame: Vec<String>,
    /// Origins forms may post to (or be redirected to after posting), besides `'self'`.
    form: Vec<String>,
    /// Allow `style="..."` attributes.
    style_attr: bool,
    /// Restrict only script, style, plugins, `<base>`, forms and framing, leaving fetches,
    /// images and frames open (for the DingTalk client's JSAPI bridge).
    open_bridge: bool,
}

impl Csp {
    fn new(nonce: &str) -> Csp {
        Csp {
            nonce: nonce.to_owned(),
            script: Vec::new(),
            connect: vec!["'self'".to_owned()],
            img: vec!["'self'".to_owned(), "data:".to_owned()],
            frame: Vec::new(),
            form: Vec::new(),
            style_attr: false,
            open_bridge: false,
        }
    }

    fn header(&self) -> String {
        let list = |v: &[String]| {
            let mut unique: Vec<&str> = Vec::new();
            for s in v {
                if !unique.contains(&s.as_str()) {
                    unique.push(s);
                }
            }
            if unique.is_empty() {
                "'none'".to_owned()
            } else {
                unique.join(" ")
            }
        };
        let nonce = format!("'nonce-{}'", self.nonce);
        let mut script = vec![nonce.clone()];
        script.extend(self.script.iter().cloned());
        let mut out = if self.open_bridge {
            format!(
                "script-src {}; style-src {nonce}; object-src 'none'",
                list(&script)
            )
        } else {
            format!(
                "default-src 'none'; script-src {}; style-src {nonce}; img-src {}; connect-src {}; frame-src {}",
                list(&script),
                list(&self.img),
                list(&self.connect),
                list(&self.frame),
            )
        };
        let mut form = vec!["'self'".to_owned()];
        form.extend(self.form.iter().cloned());
        out.push_str(&format!(
            "; base-uri 'none'; form-action {}; frame-ancestors 'none'",
            list(&form)
        ));
        if self.style_attr {
            out.push_str("; style-src-attr 'unsafe-inline'");
        }
        out
    }
}

fn page_response(status: StatusCode, html: &str, csp: &Csp) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::from(html.to_owned()));
    *resp.status_mut() = status;
    set_common(&mut resp, "text/html; charset=utf-8");
    // Every part of the header is either fixed text, base64 or a checked origin.
    let csp = HeaderValue::from_str(&csp.header())
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
    resp.headers_mut()
        .insert(header::CONTENT_SECURITY_POLICY, csp);
    resp
}

/// A paragraph in both languages (plain text) and an optional CSS class.
struct Paragraph<'a> {
    text: (&'a str, &'a str),
    class: &'static str,
}

/// A titled message page in both languages, the preferred one first.
struct MessageView<'a> {
    status: StatusCode,
    lang: Lang,
    title: (&'a str, &'a str),
    paragraphs: &'a [Paragraph<'a>],
    actions: &'a [(&'a str, &'a str)],
    request_id: &'a str,
    app_name: &'a str,
}

impl MessageView<'_> {
    fn render(&self) -> Response<GatewayBody> {
        let lang = self.lang;
        let other = match lang {
            Lang::En => Lang::Zh,
            Lang::Zh => Lang::En,
        };
        let ordered = |(en, zh): (&str, &str)| match lang {
            Lang::En => (escape_html(en), escape_html(zh)),
            Lang::Zh => (escape_html(zh), escape_html(en)),
        };
        let (title, title_alt) = ordered(self.title);
        let (mut primary, mut secondary) = (String::new(), String::new());
        for p in self.paragraphs {
            let (a, b) = ordered(p.text);
            let class = if p.class.is_empty() {
                String::new()
            } else {
                format!(r#" class="{}""#, p.class)
            };
            primary.push_str(&format!("<p{class}>{a}</p>\n"));
            secondary.push_str(&format!("<p{class}>{b}</p>\n"));
        }
        let actions: String = self
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
        let actions = if actions.is_empty() {
            actions
        } else {
            format!(r#"<div class="actions">{actions}</div>"#)
        };
        let body = format!(
            r#"<main>
<h1>{title}</h1><h2 lang="{other_tag}">{title_alt}</h2>
{primary}<div class="alt" lang="{other_tag}">
{secondary}</div>
{actions}
{footer}
</main>"#,
            other_tag = other.tag(),
            footer = footer(lang, self.app_name, Some(self.status), self.request_id),
        );
        let nonce = new_nonce();
        let title_text = lang.pick(self.title.0, self.title.1);
        page_response(
            self.status,
            &document(lang, title_text, self.app_name, &nonce, &body, ""),
            &Csp::new(&nonce),
        )
    }
}

/// `{app} · {status} · request id {id}`: what a user quotes to the administrator.
fn footer(lang: Lang, app_name: &str, status: Option<StatusCode>, request_id: &str) -> String {
    let status = status
        .map(|s| format!("{} · ", s.as_u16()))
        .unwrap_or_default();
    format!(
        "<footer>{app} · {status}{label} <code>{}</code></footer>",
        escape_html(request_id),
        app = escape_html(app_name),
        label = lang.pick("request id", "请求编号"),
    )
}

/// The one page skeleton: every gateway page has this head, style and layout. The document
/// title is `{title} · {app_name}`.
fn document(
    lang: Lang,
    title: &str,
    app_name: &str,
    nonce: &str,
    body: &str,
    scripts: &str,
) -> String {
    format!(
        r#"<!doctype html>
<html lang="{tag}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · {app}</title>
<style nonce="{nonce}">{STYLE}</style></head>
<body>
{body}
{scripts}
</body></html>
"#,
        tag = lang.tag(),
        title = escape_html(title),
        app = escape_html(app_name),
    )
}

const STYLE: &str = r#"
*{box-sizing:border-box}
[hidden]{display:none!important}
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;background:#f5f7fa;color:#1f2329;font:15px/1.6 -apple-system,BlinkMacSystemFont,"PingFang SC","Microsoft YaHei","Noto Sans CJK SC",system-ui,sans-serif}
main{background:#fff;border-radius:12px;box-shadow:0 2px 12px rgba(0,0,0,.08);padding:32px 40px;margin:24px;width:calc(100% - 48px);max-width:520px}
main.narrow{max-width:400px}
main.center{text-align:center}
h1{font-size:20px;margin:0 0 4px}
h2{font-size:15px;color:#646a73;font-weight:normal;margin:0 0 20px}
p{margin:8px 0}
.alt,.muted{color:#646a73}
.alt{margin-top:12px;font-size:14px}
.hint{color:#8f959e;font-size:13px}
.reason{background:#fff3f0;border-left:3px solid #f54a45;border-radius:4px;padding:8px 12px}
.actions{display:flex;flex-wrap:wrap;gap:12px;margin-top:20px}
.btn{display:inline-block;padding:8px 18px;border-radius:6px;background:#0089ff;color:#fff;text-decoration:none;font-weight:500}
.btn:hover,.btn:focus{background:#0075db}
button.btn{border:0;cursor:pointer;font:inherit;font-weight:500}
.btn.secondary{background:#f2f3f5;color:#1f2329}
.btn.secondary:hover,.btn.secondary:focus{background:#e5e6eb}
.btn.block{display:block;width:100%;padding:11px 18px;font-size:16px;margin-top:8px}
.brand{display:flex;align-items:center;justify-content:center;gap:12px;margin-bottom:4px}
.brand h1{margin:0}
.logo{width:40px;height:40px;border-radius:8px;object-fit:contain}
.qr{display:flex;flex-direction:column;align-items:center;margin-top:16px}
.qr-frame{width:300px;height:300px;display:flex;align-items:center;justify-content:center;border:1px solid #e5e6eb;border-radius:8px;overflow:hidden}
.qr-frame.ready{border:0}
.qr-loading{color:#8f959e;font-size:13px;display:flex;align-items:center;gap:8px}
.error{color:#d83931;font-size:13px}
.divider{display:flex;align-items:center;gap:12px;color:#8f959e;font-size:13px;margin:16px 0 8px}
.divider::before,.divider::after{content:"";flex:1;border-top:1px solid #e5e6eb}
.spinner{display:block;width:36px;height:36px;margin:20px auto 12px;border:3px solid #d6eaff;border-top-color:#0089ff;border-radius:50%;animation:dg-spin .9s linear infinite}
.spinner.small{display:inline-block;width:16px;height:16px;margin:0;border-width:2px}
@keyframes dg-spin{to{transform:rotate(360deg)}}
footer{margin-top:28px;font-size:12px;color:#8f959e}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f2f3f5;border-radius:4px;padding:0 4px}
"#;

/// Sign-in page script: loads `ddlogin.js` without blocking the page, starts `DTFrameLogin`, and
/// follows a scan only to the callback. Reads `DINGGATE_QR`.
const SIGN_IN_JS: &str = r#"(function () {
  "use strict";
  var c = DINGGATE_QR;
  var box = document.getElementById("dg-qr");
  var frame = document.getElementById("dg-qr-frame");
  var started = false;
  function giveUp() {
    if (started) return;
    started = true;
    box.hidden = true;
    var divider = box.nextElementSibling;
    if (divider) divider.hidden = true;
  }
  function onSuccess(result) {
    var target;
    try { target = new URL(result && result.redirectUrl, window.location.href); } catch (e) { return; }
    // Only ever follow a scan to our own callback: DTFrameLogin's result is data from a frame.
    if (target.origin === c.callbackOrigin && target.pathname === c.callbackPath) {
      window.location.assign(target.href);
    }
  }
  function onError(message) {
    var el = document.getElementById("dg-qr-error");
    el.textContent = String(message || "");
    el.hidden = !message;
  }
  var timer = setTimeout(giveUp, c.loadTimeoutMs);
  var s = document.createElement("script");
  s.src = c.script;
  s.async = true;
  s.onerror = function () { clearTimeout(timer); giveUp(); };
  s.onload = function () {
    clearTimeout(timer);
    if (started || typeof window.DTFrameLogin !== "function") return giveUp();
    var login = {};
    for (var k in c.login) { if (Object.prototype.hasOwnProperty.call(c.login, k)) login[k] = c.login[k]; }
    login.redirect_uri = encodeURIComponent(c.login.redirect_uri);
    try {
      frame.textContent = "";
      window.DTFrameLogin({ id: "dg-qr-frame", width: 300, height: 300 }, login, onSuccess, onError);
      started = true;
      frame.className += " ready";
    } catch (e) {
      giveUp();
    }
  };
  document.head.appendChild(s);
})();
"#;

/// Runs before the JSAPI script: sets any AMD `define` aside (IN_APP_JS puts it back).
const HIDE_AMD_JS: &str = r#"try { if (typeof window.define === "function") { window.__dinggateDefine = window.define; window.define = undefined; } } catch (e) {}"#;

/// In-client login script: code from the JSAPI → POST to the callback → follow the answer, with
/// one retry and a fallback to the QR login. Reads `DINGGATE_INAPP`.
const IN_APP_JS: &str = r##"(function () {
  "use strict";
  var c = DINGGATE_INAPP;
  try {
    if (window.__dinggateDefine) { window.define = window.__dinggateDefine; window.__dinggateDefine = undefined; }
  } catch (e) {}
  var state = c.state;
  var retried = false;
  var finished = false;
  // `errorCode` of the client's refusal, if any: passed on to the QR login so the gateway can log
  // it for the operator (only a short token; the gateway shows nothing of it to anyone).
  function fallback(errorCode) {
    if (finished) return;
    finished = true;
    var target = c.fallback;
    var delay = c.fallbackDelayMs;
    var code = errorCode === undefined || errorCode === null ? "" : String(errorCode);
    if (/^[A-Za-z0-9_-]{1,16}$/.test(code)) {
      target += (target.indexOf("?") < 0 ? "?" : "&") + "inapp_error=" + code;
      if (code === "3") {
        // DingTalk found no app of this organization registered for this page's domain.
        document.getElementById("dg-fallback-domain").hidden = false;
        delay = c.fallbackDelayMs * 3;
      }
    }
    document.getElementById("dg-working").hidden = true;
    document.getElementById("dg-fallback").hidden = false;
    setTimeout(function () { window.location.replace(target); }, delay);
  }
  function go(url) {
    var target;
    try { target = new URL(url, window.location.href); } catch (e) { return fallback(); }
    if (target.protocol !== "https:" && target.protocol !== "http:") return fallback();
    finished = true;
    window.location.replace(target.href);
  }
  // Oldest clients that have `runtime.permission.requestAuthCodeV2`, which `dd.requestAuthCode`
  // calls (dingtalk-jsapi >= 3.0.31, api/union/requestAuthCode.js); older clients only have V1.
  var V2_SINCE = { ios: "7.0.45", android: "7.0.45", pc: "7.0.50", harmony: "7.0.0" };
  function atLeast(version, min) {
    var a = String(version).split(/[.-]/), b = min.split(".");
    for (var i = 0; i < b.length; i++) {
      var x = parseInt(a[i], 10) || 0, y = parseInt(b[i], 10);
      if (x !== y) return x > y;
    }
    return true;
  }
  // The ways to ask this client for a code, best first. V2 (`dd.requestAuthCode`) binds the
  // code to our clientId; V1 (`dd.runtime.permission.requestAuthCode`) picks the app by the
  // page's URL, which DingTalk's PC client needs as `url`.
  function codeApis(dd) {
    var apis = [];
    var env = dd.env || {};
    var since = V2_SINCE[env.platform];
    // An unknown platform or version (PC detection is unreliable) still tries V2 first.
    if (typeof dd.requestAuthCode === "function" && (!since || !env.version || atLeast(env.version, since))) {
      apis.push(function (opts) { return dd.requestAuthCode(opts); });
    }
    var v1 = dd.runtime && dd.runtime.permission && dd.runtime.permission.requestAuthCode;
    if (typeof v1 === "function") {
      apis.push(function (opts) {
        opts.url = window.location.href.split("#")[0];
        return v1.call(dd.runtime.permission, opts);
      });
    }
    return apis;
  }
  function requestCode(then) {
    var dd = window.dd;
    if (!dd || typeof dd.ready !== "function") return fallback();
    var settled = false;
    var timer = setTimeout(function () { fail(); }, c.timeoutMs);
    function fail(err) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      fallback(err && err.errorCode);
    }
    function ok(res) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      var code = res && res.code;
      if (typeof code === "string" && code) { then(code); } else { fallback(); }
    }
    if (typeof dd.error === "function") dd.error(fail);
    dd.ready(function () {
      var apis = codeApis(dd);
      var next = 0;
      function attempt(lastError) {
        if (settled) return;
        if (next >= apis.length) return fail(lastError);
        var api = apis[next++];
        var done = false;
        function good(res) { if (!done) { done = true; ok(res); } }
        function bad(err) { if (!done) { done = true; attempt(err); } }
        try {
          var p = api({ corpId: c.corpId, clientId: c.clientId, onSuccess: good, onFail: bad });
          if (p && typeof p.then === "function") p.then(good, bad);
        } catch (e) {
          bad(e);
        }
      }
      attempt();
    });
  }
  function post(code) {
    if (finished) return;
    var ctl = typeof AbortController === "function" ? new AbortController() : null;
    var timer = setTimeout(function () { if (ctl) ctl.abort(); fallback(); }, c.postTimeoutMs);
    fetch(c.callback, {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      redirect: "error",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify({ code: code, state: state }),
      signal: ctl ? ctl.signal : undefined
    }).then(function (r) { return r.json(); }).then(function (answer) {
      clearTimeout(timer);
      if (finished) return;
      if (answer && typeof answer.redirect === "string") return go(answer.redirect);
      if (answer && answer.retry === true && typeof answer.state === "string" && answer.state && !retried) {
        retried = true;
        state = answer.state;
        return requestCode(post);
      }
      fallback();
    }, function () {
      clearTimeout(timer);
      fallback();
    });
  }
  if (typeof window.fetch !== "function") return fallback();
  requestCode(post);
})();
"##;

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn body(resp: Response<GatewayBody>) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let bytes = rt
            .block_on(resp.into_body().collect())
            .expect("body")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    fn csp(resp: &Response<GatewayBody>) -> String {
        resp.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ascii CSP")
            .to_owned()
    }

    /// The value of one CSP directive, e.g. `script-src`.
    fn directive(csp: &str, name: &str) -> Option<String> {
        csp.split(';')
            .map(str::trim)
            .find_map(|d| d.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned))
    }

    /// Every `nonce="..."` in `html` is the same and is the one the CSP allows for script and style.
    fn assert_nonce_matches(html: &str, policy: &str) -> String {
        let nonces: Vec<&str> = html
            .split("nonce=\"")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap_or(""))
            .collect();
        assert!(!nonces.is_empty(), "no nonce in {html}");
        assert!(nonces.iter().all(|n| *n == nonces[0]), "{nonces:?}");
        let nonce = nonces[0];
        assert!(nonce.len() >= 22, "nonce too short: {nonce}");
        let token = format!("'nonce-{nonce}'");
        assert!(
            directive(policy, "script-src").unwrap().contains(&token),
            "{policy}"
        );
        assert!(
            directive(policy, "style-src").unwrap().contains(&token),
            "{policy}"
        );
        assert_eq!(
            html.matches("<style").count(),
            html.matches("<style nonce=").count()
        );
        let inline_scripts = html.matches("<script nonce=").count();
        let external_scripts = html.matches("<script src=").count();
        assert_eq!(
            html.matches("<script").count(),
            inline_scripts + external_scripts
        );
        nonce.to_owned()
    }

    /// The JSON assigned to `var NAME = ...;` in an inline script.
    fn script_config(html: &str, name: &str) -> serde_json::Value {
        let marker = format!("var {name} = ");
        let start = html.find(&marker).expect("config") + marker.len();
        let end = start + html[start..].find(";\n").expect("end of config");
        serde_json::from_str(&html[start..end]).expect("config is JSON")
    }

    const HOSTILE: &str = "</script><script>alert(1)</script>\"'<!--&\u{2028}\u{2029}";

    fn accept_language(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_str(v).unwrap());
        h
    }

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

    #[test]
    fn script_json_cannot_leave_the_script_element() {
        let value = json!({ "a": HOSTILE, "b": ["</SCRIPT >", "]]>"] });
        let out = script_json(&value);
        for bad in ['<', '>', '&', '\u{2028}', '\u{2029}'] {
            assert!(!out.contains(bad), "{bad:?} in {out}");
        }
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&out).unwrap(),
            value
        );
    }

    #[test]
    fn language_negotiation() {
        let cases = [
            ("", Lang::En),
            ("zh-CN,zh;q=0.9,en;q=0.8", Lang::Zh),
            ("en-US,en;q=0.9,zh-CN;q=0.8", Lang::En),
            ("en;q=0.5, zh;q=0.8", Lang::Zh),
            ("ZH-tw", Lang::Zh),
            ("zh-Hans-CN", Lang::Zh),
            ("fr-FR, de;q=0.9, zh;q=0.3", Lang::Zh),
            ("fr-FR, de;q=0.9", Lang::En),
            ("zh;q=0, en;q=0.1", Lang::En),
            ("zh;q=0", Lang::En),
            ("zh;q=0.000", Lang::En),
            ("en, zh", Lang::En),
            ("zh, en", Lang::Zh),
            ("en;q=0.8, zh;q=0.800", Lang::En),
            ("zh;q=1.5, en;q=0.1", Lang::En),
            ("zh;q=abc, en;q=0.1", Lang::En),
            ("zh;q=0.0001, en;q=0.1", Lang::En),
            ("zh ; q=0.9 , en ; q=0.5", Lang::Zh),
            ("zhx, en;q=0.1", Lang::En),
            ("*, zh;q=0.2", Lang::Zh),
            ("*", Lang::En),
            ("en;q=1.000,zh;q=1", Lang::En),
        ];
        for (header, want) in cases {
            assert_eq!(negotiate_lang(&accept_language(header)), want, "{header:?}");
        }
        assert_eq!(negotiate_lang(&HeaderMap::new()), Lang::En);
        let mut two = HeaderMap::new();
        two.append(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("en;q=0.3"),
        );
        two.append(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("zh;q=0.6"),
        );
        assert_eq!(negotiate_lang(&two), Lang::Zh, "all header lines count");
        let long = format!("{}zh", "fr;q=0.1,".repeat(MAX_LANGUAGE_RANGES));
        assert_eq!(negotiate_lang(&accept_language(&long)), Lang::En, "bounded");
        assert_eq!(parse_qvalue("0.5"), Some(500));
        assert_eq!(parse_qvalue("1."), Some(1000));
        assert_eq!(parse_qvalue("1.001"), None);
        assert_eq!(parse_qvalue("-1"), None);
    }

    fn qr<'a>(scope: &'a str, corp: Option<&'a str>) -> QrLogin<'a> {
        QrLogin {
            script_url: "https://g.alicdn.com/dingding/h5-dingtalk-login/0.21.0/ddlogin.js",
            client_id: HOSTILE,
            redirect_uri: "https://gw.example.com/_dinggate/callback",
            scope,
            state: HOSTILE,
            corp_id: corp,
            exclusive_corp_id: None,
            login_origin: DINGTALK_LOGIN_ORIGIN,
        }
    }

    fn sign_in_page(qr: Option<QrLogin<'_>>, lang: Lang) -> SignInPage<'_> {
        SignInPage {
            branding: Branding {
                app_name: "<script>alert('app')</script>",
                logo_url: Some("https://cdn.example.com/logo.png?a=\"><script>x</script>"),
            },
            lang,
            start_url: "/_dinggate/start?rd=%2F&x=\"><script>y</script>",
            qr,
            signed_in: None,
            request_id: "<rid>",
        }
    }

    #[test]
    fn sign_in_escapes_everything_and_allows_only_its_own_script() {
        let resp = sign_in(&sign_in_page(
            Some(qr("openid corpid", Some("ding</script>corp"))),
            Lang::En,
        ));
        assert_eq!(resp.status(), StatusCode::OK);
        let policy = csp(&resp);
        let html = body(resp);
        assert_eq!(html.matches("<script").count(), 1, "{html}");
        assert_eq!(html.matches("</script>").count(), 1, "{html}");
        assert!(!html.contains("alert(1)</script>"));
        assert!(html.contains("&lt;script&gt;alert(&#39;app&#39;)&lt;/script&gt;"));
        assert!(html.contains(
            r#"src="https://cdn.example.com/logo.png?a=&quot;&gt;&lt;script&gt;x&lt;/script&gt;""#
        ));
        assert!(html.contains(
            r#"id="dg-login" href="/_dinggate/start?rd=%2F&amp;x=&quot;&gt;&lt;script&gt;y&lt;/script&gt;""#
        ));
        assert!(html.contains("<code>&lt;rid&gt;</code>"));
        assert!(html.contains("Log in with DingTalk") && html.contains(r#"<html lang="en">"#));
        assert!(!html.contains('\u{2028}') && !html.contains('\u{2029}'));

        assert_nonce_matches(&html, &policy);
        let script_src = directive(&policy, "script-src").unwrap();
        assert_eq!(script_src.split(' ').count(), 2, "{policy}");
        assert!(script_src.ends_with(" https://g.alicdn.com"), "{policy}");
        assert_eq!(directive(&policy, "default-src").as_deref(), Some("'none'"));
        assert_eq!(
            directive(&policy, "frame-src").as_deref(),
            Some("https://login.dingtalk.com")
        );
        assert_eq!(
            directive(&policy, "img-src").as_deref(),
            Some("'self' data: https://cdn.example.com")
        );
        assert_eq!(
            directive(&policy, "frame-ancestors").as_deref(),
            Some("'none'")
        );

        let config = script_config(&html, "DINGGATE_QR");
        assert_eq!(config["login"]["client_id"], HOSTILE);
        assert_eq!(config["login"]["state"], HOSTILE);
        assert_eq!(config["login"]["scope"], "openid corpid");
        assert_eq!(config["login"]["corpId"], "ding</script>corp");
        assert!(config["login"].get("org_type").is_none());
        assert_eq!(
            config["login"]["redirect_uri"],
            "https://gw.example.com/_dinggate/callback"
        );
        assert_eq!(config["callbackOrigin"], "https://gw.example.com");
        assert_eq!(config["callbackPath"], "/_dinggate/callback");
        assert_eq!(
            config["script"],
            "https://g.alicdn.com/dingding/h5-dingtalk-login/0.21.0/ddlogin.js"
        );
    }

    #[test]
    fn sign_in_sends_the_corp_only_with_a_corpid_scope() {
        let html = body(sign_in(&sign_in_page(
            Some(qr("openid", Some("dingcorp"))),
            Lang::En,
        )));
        assert!(script_config(&html, "DINGGATE_QR")["login"]
            .get("corpId")
            .is_none());
    }

    #[test]
    fn sign_in_without_qr_has_no_script_and_a_working_button() {
        for qr in [
            None,
            Some(QrLogin {
                script_url: "javascript:alert(1)",
                ..qr("openid", None)
            }),
            Some(QrLogin {
                script_url: "//evil.example/ddlogin.js",
                ..qr("openid", None)
            }),
        ] {
            let resp = sign_in(&sign_in_page(qr, Lang::Zh));
            let policy = csp(&resp);
            let html = body(resp);
            assert!(!html.contains("<script"), "{html}");
            assert!(!html.contains("dg-qr"), "{html}");
            assert!(html.contains(r#"id="dg-login" href="/_dinggate/start"#));
            assert!(html.contains("使用钉钉登录") && html.contains(r#"<html lang="zh-CN">"#));
            let nonce = assert_nonce_matches(&html, &policy);
            assert_eq!(
                directive(&policy, "script-src"),
                Some(format!("'nonce-{nonce}'"))
            );
            assert_eq!(directive(&policy, "frame-src").as_deref(), Some("'none'"));
        }
    }

    #[test]
    fn every_response_gets_a_fresh_nonce() {
        let a = csp(&sign_in(&sign_in_page(None, Lang::En)));
        let b = csp(&sign_in(&sign_in_page(None, Lang::En)));
        assert_ne!(a, b);
    }

    #[test]
    fn logo_is_shown_only_from_safe_urls() {
        for (logo, shown) in [
            (Some("/static/logo.svg"), true),
            (Some("javascript:alert(1)"), false),
            (Some("https://a;b.example/x.png"), false),
            (None, false),
        ] {
            let mut page = sign_in_page(None, Lang::En);
            page.branding.logo_url = logo;
            let resp = sign_in(&page);
            let policy = csp(&resp);
            let html = body(resp);
            assert_eq!(html.contains("<img"), shown, "{logo:?}");
            assert_eq!(
                directive(&policy, "img-src").as_deref(),
                Some("'self' data:"),
                "{logo:?}"
            );
        }
    }

    fn in_app_page(jsapi_url: &str) -> InAppPage<'_> {
        InAppPage {
            branding: Branding {
                app_name: "<b>应用</b>",
                logo_url: Some("https://cdn.example.com/logo.png"),
            },
            lang: Lang::Zh,
            jsapi_url,
            corp_id: HOSTILE,
            client_id: "client</script>",
            state: HOSTILE,
            callback_url: "/_dinggate/inapp/callback",
            fallback_url: "/_dinggate/start?rd=%2Fa&b=\"<x>",
            timeout_ms: 8000,
            request_id: "<rid>",
        }
    }

    #[test]
    fn in_app_loads_only_the_jsapi_and_escapes_everything() {
        let jsapi = "http://127.0.0.1:9999/dingtalk.open.js?userid=lisi&x=\"<y>";
        let resp = in_app(&in_app_page(jsapi));
        assert_eq!(resp.status(), StatusCode::OK);
        let policy = csp(&resp);
        let html = body(resp);
        assert_nonce_matches(&html, &policy);
        assert_eq!(html.matches("<script").count(), 3, "{html}");
        assert_eq!(html.matches("</script>").count(), 3, "{html}");
        assert_eq!(
            html.matches("src=").count(),
            1,
            "one external asset: {html}"
        );
        assert!(html.contains(
            r#"<script src="http://127.0.0.1:9999/dingtalk.open.js?userid=lisi&amp;x=&quot;&lt;y&gt;"></script>"#
        ));
        assert!(!html.contains("<img") && !html.contains("<link"));
        assert!(html.contains("&lt;b&gt;应用&lt;/b&gt;"));
        assert!(html.contains(r#"href="/_dinggate/start?rd=%2Fa&amp;b=&quot;&lt;x&gt;""#));
        assert!(html.contains("正在登录…") && html.contains("<code>&lt;rid&gt;</code>"));
        assert!(!html.contains("alert(1)</script>"));
        // The define-hiding script must run before the JSAPI and the main script after it.
        let hide = html
            .find("window.__dinggateDefine = window.define")
            .unwrap();
        let load = html.find("<script src=").unwrap();
        let main = html.find("var DINGGATE_INAPP").unwrap();
        assert!(hide < load && load < main);

        let script_src = directive(&policy, "script-src").unwrap();
        assert!(script_src.ends_with(" http://127.0.0.1:9999"), "{policy}");
        assert_eq!(script_src.split(' ').count(), 2, "{policy}");
        assert!(
            directive(&policy, "default-src").is_none(),
            "bridge stays open: {policy}"
        );
        assert_eq!(directive(&policy, "object-src").as_deref(), Some("'none'"));
        assert_eq!(directive(&policy, "base-uri").as_deref(), Some("'none'"));

        let config = script_config(&html, "DINGGATE_INAPP");
        assert_eq!(config["corpId"], HOSTILE);
        assert_eq!(config["state"], HOSTILE);
        assert_eq!(config["clientId"], "client</script>");
        assert_eq!(config["callback"], "/_dinggate/inapp/callback");
        assert_eq!(config["fallback"], "/_dinggate/start?rd=%2Fa&b=\"<x>");
        assert_eq!(config["timeoutMs"], 8000);
    }

    #[test]
    fn in_app_with_a_same_origin_or_unusable_jsapi_url() {
        let resp = in_app(&in_app_page("/static/dingtalk.open.js"));
        let policy = csp(&resp);
        let html = body(resp);
        let nonce = assert_nonce_matches(&html, &policy);
        assert_eq!(
            directive(&policy, "script-src"),
            Some(format!("'nonce-{nonce}' 'self'"))
        );
        assert!(html.contains(r#"<script src="/static/dingtalk.open.js">"#));

        let resp = in_app(&in_app_page("javascript:alert(1)"));
        let policy = csp(&resp);
        let html = body(resp);
        let nonce = assert_nonce_matches(&html, &policy);
        assert_eq!(
            directive(&policy, "script-src"),
            Some(format!("'nonce-{nonce}'"))
        );
        assert!(!html.contains("src="), "{html}");
        assert_eq!(
            html.matches("<script").count(),
            1,
            "main script still falls back"
        );
    }

    #[test]
    fn sign_out_confirm_posts_a_form_and_escapes_rd() {
        let page = |rd, lang| SignOutConfirm {
            lang,
            action: "/_dinggate/sign_out",
            rd,
            cancel: rd.unwrap_or("/"),
            redirects_via: &["https://gate.example.com/", "https://login.dingtalk.com/"],
            request_id: "<rid>",
            app_name: "Wiki",
        };
        let resp = sign_out_confirm(&page(Some("/a?b=\"><script>x</script>&c"), Lang::Zh));
        assert_eq!(resp.status(), StatusCode::OK);
        let policy = csp(&resp);
        assert!(
            policy.contains(
                "form-action 'self' https://gate.example.com https://login.dingtalk.com;"
            ),
            "{policy}"
        );
        assert_eq!(resp.headers()[header::REFERRER_POLICY], "same-origin");
        let html = body(resp);
        assert_nonce_matches(&html, &policy);
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains(r#"<form method="post" action="/_dinggate/sign_out">"#));
        assert!(html.contains(
            r#"<input type="hidden" name="rd" value="/a?b=&quot;&gt;&lt;script&gt;x&lt;/script&gt;&amp;c">"#
        ));
        assert!(html.contains(r#"name="everywhere" value="0""#));
        assert!(html.contains(r#"name="everywhere" value="1""#));
        assert!(html.find("退出登录？").unwrap() < html.find("Sign out?").unwrap());
        // Without rd: no hidden field; cancel goes home.
        let html = body(sign_out_confirm(&page(None, Lang::En)));
        assert!(!html.contains(r#"name="rd""#));
        assert!(html.contains(r#"href="/">Cancel"#));
        assert!(html.find("Sign out?").unwrap() < html.find("退出登录？").unwrap());
        // An allowed absolute rd: the redirect after the POST is allowed by form-action.
        let resp = sign_out_confirm(&page(Some("https://hr.example.com/x"), Lang::En));
        let policy = csp(&resp);
        assert!(
            policy.contains(
                "form-action 'self' https://hr.example.com https://gate.example.com https://login.dingtalk.com;"
            ),
            "{policy}"
        );
    }

    #[test]
    fn forbidden_names_the_user_and_says_who_may_enter() {
        let page = |lang| Forbidden {
            lang,
            app_name: "<Wiki>",
            user_name: "<img src=x>张三",
            reason_en: "This page is only open to people in the department “<Finance>”.",
            reason_zh: "此页面仅对部门“财务部”及其下级部门的成员开放 & co。",
            sign_out_url: "/_dinggate/sign_out?rd=/\"x",
            request_id: "<rid>",
        };
        let resp = forbidden(&page(Lang::Zh));
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let policy = csp(&resp);
        let html = body(resp);
        assert_nonce_matches(&html, &policy);
        assert!(!html.contains("<script") && !html.contains("<img"));
        assert!(html.contains("“&lt;img src=x&gt;张三”"));
        assert!(html.contains(
            r#"<p class="reason">This page is only open to people in the department “&lt;Finance&gt;”.</p>"#
        ));
        assert!(html.contains("此页面仅对部门“财务部”及其下级部门的成员开放 &amp; co。"));
        assert!(!html.contains("Reason (route"), "no config syntax: {html}");
        assert!(html.contains(r#"href="/_dinggate/sign_out?rd=/&quot;x">Sign out · 退出登录</a>"#));
        assert!(html.contains("&lt;Wiki&gt; · 403 · 请求编号 <code>&lt;rid&gt;</code>"));
        assert!(
            html.contains("<title>无权访问 · &lt;Wiki&gt;</title>"),
            "{html}"
        );
        assert!(html.find("无权访问").unwrap() < html.find("Access denied").unwrap());
        let html = body(forbidden(&page(Lang::En)));
        assert!(html.find("Access denied").unwrap() < html.find("无权访问").unwrap());
        assert!(html.contains("&lt;Wiki&gt; · 403 · request id"));
    }

    #[test]
    fn message_pages_escape_and_order_languages() {
        let page = Page {
            title: "<t>",
            title_zh: "<标题>",
            message: "<m> & \"q\"",
            message_zh: "<消息>",
            actions: &[("<label>", "/x?a=1&b=\"2\"")],
            request_id: "<rid>",
            app_name: "<HR>",
        };
        let resp = html(StatusCode::BAD_GATEWAY, &page);
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        let policy = csp(&resp);
        assert_eq!(directive(&policy, "default-src").as_deref(), Some("'none'"));
        let en = body(resp);
        assert_nonce_matches(&en, &policy);
        for escaped in [
            "&lt;t&gt;",
            "&lt;标题&gt;",
            "&lt;m&gt; &amp; &quot;q&quot;",
            "&lt;消息&gt;",
            r#"<a class="btn" href="/x?a=1&amp;b=&quot;2&quot;">&lt;label&gt;</a>"#,
            "&lt;HR&gt; · 502 · request id <code>&lt;rid&gt;</code>",
            "<title>&lt;t&gt; · &lt;HR&gt;</title>",
        ] {
            assert!(en.contains(escaped), "{escaped} in {en}");
        }
        assert!(!en.contains("<t>") && !en.contains("<m>") && !en.contains("<script"));
        assert!(en.find("&lt;m&gt;").unwrap() < en.find("&lt;消息&gt;").unwrap());
        let zh = body(html_lang(StatusCode::BAD_GATEWAY, &page, Lang::Zh));
        assert!(zh.find("&lt;消息&gt;").unwrap() < zh.find("&lt;m&gt;").unwrap());
        assert!(zh.contains(r#"<html lang="zh-CN">"#) && zh.contains("请求编号"));
    }

    #[test]
    fn titles_name_the_app_once() {
        let mut page = sign_in_page(None, Lang::Zh);
        page.branding.app_name = "dinggate";
        let html = body(sign_in(&page));
        assert!(html.contains("<title>登录 · dinggate</title>"), "{html}");
        assert_eq!(html.matches("dinggate · dinggate").count(), 0, "{html}");
        let html = body(in_app(&in_app_page("/x.js")));
        assert!(html.contains("<title>正在登录 · &lt;b&gt;应用&lt;/b&gt;</title>"));
        assert!(
            html.contains("&lt;b&gt;应用&lt;/b&gt; · 请求编号"),
            "{html}"
        );
    }

    #[test]
    fn sign_in_when_signed_in_offers_continue_and_switch() {
        for lang in [Lang::En, Lang::Zh] {
            let mut page = sign_in_page(Some(qr("openid", None)), lang);
            page.signed_in = Some(SignedIn {
                name: "<i>张三</i>",
                continue_url: "/wiki?a=1&b=\"<x>",
                sign_out_action: "/_dinggate/sign_out",
                then: "/_dinggate/sign_in?rd=%2Fwiki",
            });
            let resp = sign_in(&page);
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()[header::REFERRER_POLICY], "same-origin");
            let policy = csp(&resp);
            let html = body(resp);
            assert_nonce_matches(&html, &policy);
            assert!(
                !html.contains("<script") && !html.contains("dg-login"),
                "{html}"
            );
            assert!(!html.contains("dg-qr"), "no login is offered: {html}");
            assert!(html.contains("“&lt;i&gt;张三&lt;/i&gt;”"), "{html}");
            assert!(html.contains(r#"id="dg-continue" href="/wiki?a=1&amp;b=&quot;&lt;x&gt;""#));
            assert!(html.contains(
                r#"<form method="post" action="/_dinggate/sign_out"><input type="hidden" name="rd" value="/_dinggate/sign_in?rd=%2Fwiki">"#
            ));
            assert!(html.contains(r#"id="dg-switch" type="submit""#));
            let (cont, switch) = match lang {
                Lang::En => ("Continue", "Switch account"),
                Lang::Zh => ("继续", "切换账号"),
            };
            assert!(html.contains(cont) && html.contains(switch), "{html}");
        }
    }

    #[test]
    fn sign_out_confirm_says_what_each_button_does() {
        let page = |lang| SignOutConfirm {
            lang,
            action: "/_dinggate/sign_out",
            rd: None,
            cancel: "/",
            redirects_via: &[],
            request_id: "r",
            app_name: "Wiki",
        };
        let html = body(sign_out_confirm(&page(Lang::En)));
        for needle in [
            "in this browser",
            "every other browser and device",
            "signed in to DingTalk itself",
        ] {
            assert!(html.contains(needle), "{needle} in {html}");
        }
        assert!(html.contains("<title>Sign out? · Wiki</title>"));
        let html = body(sign_out_confirm(&page(Lang::Zh)));
        assert!(html.contains("不会退出钉钉本身"), "{html}");
        assert!(html.find("退出登录？").unwrap() < html.find("Sign out?").unwrap());
    }

    #[test]
    fn page_scripts_contain_no_end_tags() {
        // An end tag inside the inline script text would close the script element early.
        for js in [SIGN_IN_JS, IN_APP_JS, HIDE_AMD_JS] {
            assert!(!js.contains("</"));
        }
    }
}
