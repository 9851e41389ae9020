//! The log subscriber: `RUST_LOG` (default: warnings and errors) on stderr, coloured only on
//! a terminal and never with `NO_COLOR`, and one JSON object per line with `--json`, so that
//! a journal holding both streams stays pure NDJSON.

use std::ffi::OsStr;
use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the subscriber for a binary; `json` when the command prints JSON.
pub fn init(json: bool) {
    // Warnings (a retried request, a failed mirror, an audit record not written) show unless
    // RUST_LOG says otherwise.
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::WARN.into())
        .from_env_lossy();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.event_format(JsonLine).init();
    } else {
        let no_color = std::env::var_os("NO_COLOR");
        builder
            .with_ansi(color(std::io::stderr().is_terminal(), no_color.as_deref()))
            .init();
    }
}

/// Whether to colour logs: on a terminal, unless `NO_COLOR` is set to anything but "".
fn color(terminal: bool, no_color: Option<&OsStr>) -> bool {
    terminal && no_color.is_none_or(OsStr::is_empty)
}

/// A log event as `{"event":"log","level":"warn","target":…,"message":…,…fields}`.
struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writeln!(writer, "{}", json_line(event))
    }
}

fn json_line(event: &Event<'_>) -> Value {
    let meta = event.metadata();
    let mut fields = Fields(Map::new());
    fields.0.insert("event".into(), "log".into());
    fields
        .0
        .insert("level".into(), meta.level().as_str().to_lowercase().into());
    fields.0.insert("target".into(), meta.target().into());
    event.record(&mut fields);
    Value::Object(fields.0)
}

/// An event's fields as JSON values (`message` included).
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(color(true, None));
        assert!(color(true, Some(OsStr::new(""))));
        assert!(!color(true, Some(OsStr::new("1"))));
        assert!(!color(false, None));
        assert!(!color(false, Some(OsStr::new("1"))));
    }

    #[test]
    fn json_lines_carry_level_message_and_fields() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .map_err(|_| std::io::ErrorKind::Other)?
                    .extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .event_format(JsonLine)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                url = "http://a/",
                attempt = 2u64,
                "range request failed, retrying"
            );
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["event"], "log");
        assert_eq!(line["level"], "warn");
        assert_eq!(line["message"], "range request failed, retrying");
        assert_eq!(line["url"], "http://a/");
        assert_eq!(line["attempt"], 2);
        assert_eq!(text.lines().count(), 1, "{text}");
    }
}
