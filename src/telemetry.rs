//! Logging setup (tracing), from the validated log config, with control characters escaped in text logs.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::Subscriber;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`.
/// Calling it twice is harmless (the second call is ignored).
pub fn init(cfg: &LogConfig) {
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: escape codes in files and journald are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let _ = subscriber(cfg.format, filter, ansi, std::io::stdout).try_init();
}

/// The subscriber [`init`] installs, writing to `writer`: one line per event.
///
/// Text logs format every field value and message with [`EscapedFields`], so no value (a
/// DingTalk nickname, a path, a header) can start a new line or carry terminal escapes.
///
/// JSON logs are one flat object per line: `timestamp`, `level`, `message` and the event's
/// fields side by side (no `fields` object), for log pipelines that index top-level keys.
/// Inside a request's span (login, callback and re-validation work, see `gateway`), the span's
/// fields (`request_id`) are written beside them too, not as a nested `span` object (see
/// [`FlatSpans`]). serde_json escapes every control character below U+0020.
/// Fields whose value is absent (`Option::None`) are left out in both formats.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(
            builder
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(FlatSpans(
                    tracing_subscriber::fmt::format()
                        .json()
                        .flatten_event(true)
                        .with_current_span(true)
                        .with_span_list(false)
                        .with_target(false),
                ))
                .finish(),
        ),
        LogFormat::Text => Box::new(builder.fmt_fields(EscapedFields).finish()),
    }
}

/// The JSON event format with the current span's fields lifted to the top level: tracing's JSON
/// format can only nest them (`"span": {"name": …, "request_id": …}`), and pipelines index
/// top-level keys. Events outside any span (the proxy fast path, whose lines name their request
/// id themselves) are written as tracing formats them, without a second pass.
pub struct FlatSpans(
    tracing_subscriber::fmt::format::Format<
        tracing_subscriber::fmt::format::Json,
        tracing_subscriber::fmt::time::SystemTime,
    >,
);

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for FlatSpans
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        if ctx.lookup_current().is_none() {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let Ok(mut object) =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&line)
        else {
            return writer.write_str(&line);
        };
        if let Some(serde_json::Value::Object(span)) = object.remove("span") {
            for (key, value) in span {
                // The event's own fields win; the span's name is not a field.
                if key != "name" {
                    object.entry(key).or_insert(value);
                }
            }
        }
        writeln!(writer, "{}", serde_json::Value::Object(object))
    }
}

/// An error and its `source()` chain as one line, `outer: cause: root cause`, written when
/// displayed (nothing is allocated for a log line that is filtered out).
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// A field formatter for the text format: like tracing-subscriber's default (`message` first,
/// then `name=value` separated by spaces), but every character that could break a log line or
/// drive a terminal is escaped inside the message and every value (see [`escape_char`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl EscapingVisitor<'_> {
    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) -> fmt::Result {
        let name = field.name();
        if !self.first {
            self.writer.write_char(' ')?;
        }
        self.first = false;
        if name != "message" {
            // Field names are identifiers chosen in code, never input.
            write!(self.writer, "{}=", name.strip_prefix("r#").unwrap_or(name))?;
        }
        Escaper(&mut self.writer).write_fmt(value)
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `log.*` fields are the `log` crate's metadata, shown elsewhere by the default format.
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        self.result = self.write(field, format_args!("{value:?}"));
    }
}

/// Writes through to `W`, escaping as [`escape_char`] says.
struct Escaper<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaper<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut clean_from = 0;
        for (i, c) in s.char_indices() {
            if let Some(esc) = escape_char(c) {
                self.0.write_str(&s[clean_from..i])?;
                esc.write_to(self.0)?;
                clean_from = i + c.len_utf8();
            }
        }
        self.0.write_str(&s[clean_from..])
    }
}

/// How one character is written in a text log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escaped {
    /// `\n`, `\r` or `\t`, written as a backslash and the letter.
    Short(char),
    /// Any other escaped character, written as `\u{hex}`.
    Unicode(char),
}

impl Escaped {
    fn write_to<W: fmt::Write + ?Sized>(self, w: &mut W) -> fmt::Result {
        match self {
            Escaped::Short(letter) => write!(w, "\\{letter}"),
            Escaped::Unicode(c) => write!(w, "\\u{{{:x}}}", u32::from(c)),
        }
    }
}

/// Whether (and how) `c` is escaped in text logs: all C0 controls (newline, carriage return and
/// tab get their short forms; ESC, which starts terminal sequences, among the rest), DEL, all C1
/// controls (including NEL), the Unicode line and paragraph separators and the bidirectional
/// embedding/override/isolate marks (which reorder what a reader sees).
pub fn escape_char(c: char) -> Option<Escaped> {
    match c {
        '\n' => Some(Escaped::Short('n')),
        '\r' => Some(Escaped::Short('r')),
        '\t' => Some(Escaped::Short('t')),
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{2028}'
        | '\u{2029}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}' => Some(Escaped::Unicode(c)),
        _ => None,
    }
}

/// `s` as it appears in a text log (see [`escape_char`]).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    // Writing to a String cannot fail.
    let _ = Escaper(&mut out).write_str(s);
    out
}

/// A request's id: shown on error pages and in log lines, sent upstream and back to the client
/// as `X-Request-Id`. Random (16 hex digits), or adopted from a trusted proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(http::HeaderValue);

/// Longest `X-Request-Id` adopted from a trusted proxy.
const MAX_ADOPTED_ID: usize = 128;

impl RequestId {
    /// A new random id.
    pub fn random() -> Self {
        Self::from_u64(rand::random())
    }

    /// The id `n` as 16 hex digits.
    pub fn from_u64(n: u64) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut digits = [0u8; 16];
        for (i, d) in digits.iter_mut().enumerate() {
            *d = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
        }
        // Hex digits are always a valid header value.
        Self(http::HeaderValue::from_bytes(&digits).unwrap_or(http::HeaderValue::from_static("0")))
    }

    /// A proxy's `X-Request-Id`, when it looks like an id: 1 to 128 of `A-Z a-z 0-9 - _ . : = / + @ ~`
    /// (UUIDs, ULIDs, hex, base64, nginx's `$request_id`). Anything else — spaces, quotes,
    /// markup, control characters — is not adopted, so an id is always safe to show and log.
    pub fn adopt(value: &http::HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let plain = (1..=MAX_ADOPTED_ID).contains(&bytes.len())
            && bytes.iter().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'-' | b'_' | b'.' | b':' | b'=' | b'/' | b'+' | b'@' | b'~'
                    )
            });
        plain.then(|| Self(value.clone()))
    }

    /// The id as a header value.
    pub fn header(&self) -> &http::HeaderValue {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only ever built from visible ASCII (hex digits or an adopted, checked id).
        f.write_str(self.0.to_str().unwrap_or("-"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};

    #[test]
    fn escapes_every_control_and_keeps_the_rest() {
        assert_eq!(escape("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(escape("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(
            escape("\0\u{7f}\u{85}\u{9f}"),
            "\\u{0}\\u{7f}\\u{85}\\u{9f}"
        );
        assert_eq!(escape("x\u{2028}y\u{202e}z"), "x\\u{2028}y\\u{202e}z");
        for keep in [
            "张三",
            "Zhang San",
            "émoji 🎉",
            "back\\slash",
            "\u{a0}nbsp",
            "",
        ] {
            assert_eq!(escape(keep), keep);
        }
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            if c.is_control() {
                assert!(escape_char(c).is_some(), "{c:?} must be escaped");
            }
        }
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn capture(json: bool, f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let format = if json {
            LogFormat::Json
        } else {
            LogFormat::Text
        };
        let sub = subscriber(format, EnvFilter::new("trace"), false, move || buf.clone());
        tracing::subscriber::with_default(sub, f);
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    const FORGED: &str =
        "Mallory\n2026-01-01T00:00:00Z  INFO login succeeded union_id=forged\r\u{1b}[2K";

    #[test]
    fn text_format_keeps_one_line_per_event_whatever_the_values() {
        let out = capture(false, || {
            let span = tracing::info_span!("req", path = %FORGED);
            let _g = span.enter();
            tracing::info!(name = %FORGED, title = FORGED, debug = ?FORGED, "hello {}", FORGED);
            tracing::warn!(error = %format_args!("a\nb"), "second");
        });
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(!out.contains('\r') && !out.contains('\u{1b}'), "{out}");
        let esc =
            "Mallory\\n2026-01-01T00:00:00Z  INFO login succeeded union_id=forged\\r\\u{1b}[2K";
        let first = out.lines().next().unwrap();
        assert!(
            first.contains(&format!("req{{path={esc}}}: hello {esc} name={esc} ")),
            "{first}"
        );
        // Plain &str and `?` values keep Debug's quoting, as the default format does.
        assert!(
            first.ends_with(&format!(" title=\"{esc}\" debug=\"{esc}\"")),
            "{first}"
        );
        assert!(
            out.lines()
                .nth(1)
                .unwrap()
                .ends_with(": second error=a\\nb"),
            "{out}"
        );
    }

    #[test]
    fn json_format_is_already_one_line_per_event() {
        let out = capture(true, || {
            tracing::info!(name = %FORGED, "login {}", FORGED);
        });
        assert_eq!(out.lines().count(), 1, "{out}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["name"], FORGED);
    }

    #[test]
    fn json_lines_are_flat_objects_without_absent_fields() {
        let out = capture(true, || {
            let span = tracing::info_span!("req", request_id = "r1");
            let _g = span.enter();
            let absent: Option<&str> = None;
            tracing::info!(
                status = 200_u16,
                user_id = absent.map(tracing::field::display),
                union_id = Some(tracing::field::display("u1")),
                "request"
            );
        });
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let obj = v.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        // The span's field sits beside the event's (no nested `span` object).
        assert_eq!(
            keys,
            [
                "level",
                "message",
                "request_id",
                "status",
                "timestamp",
                "union_id"
            ],
            "{out}"
        );
        assert_eq!(v["request_id"], "r1");
        assert_eq!(
            (&v["message"], &v["status"]),
            (&"request".into(), &200.into())
        );
        assert!(
            obj.values().all(|v| !v.is_object() && !v.is_array()),
            "{out}"
        );
    }

    #[test]
    fn text_format_leaves_absent_fields_out() {
        let out = capture(false, || {
            let absent: Option<&str> = None;
            tracing::info!(
                hint = absent.map(tracing::field::display),
                status = 500_u16,
                "failed"
            );
        });
        assert!(out.trim_end().ends_with(" failed status=500"), "{out}");
        assert!(!out.contains("hint"), "{out}");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[test]
    fn error_chain_lists_every_cause() {
        assert_eq!(ErrorChain(&Outer(Inner)).to_string(), "outer: inner");
        assert_eq!(ErrorChain(&Inner).to_string(), "inner");
    }
}
