//! How the daemons write their log (issue 17, obs): text, coloured only
//! when stderr is a terminal (journald and files get no escape codes), or
//! JSON, one object per line with the event's fields at the top level.

use std::io::IsTerminal as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the process's subscriber, writing to stderr.
pub fn init(format: LogFormat, filter: EnvFilter) {
    let ansi = std::io::stderr().is_terminal();
    tracing::subscriber::set_global_default(subscriber(format, filter, std::io::stderr, ansi))
        .expect("the log is set up once, first thing");
}

/// The subscriber of a format, writing to `writer`, with ANSI colour or not.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        // `flatten_event`: `{"timestamp", "level", "message", "request_id", ...}`
        // rather than the fields nested under `fields`.
        LogFormat::Json => Box::new(builder.json().flatten_event(true).with_current_span(false).with_ansi(false).finish()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(format: LogFormat, ansi: bool) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = subscriber(format, EnvFilter::new("info"), move || writer.clone(), ansi);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(method = "GET", status = 404u16, request_id = "r-1", "request");
            tracing::warn!("second \"line\"\nwith a newline");
            tracing::debug!("filtered out");
        });
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn json_is_one_object_per_line_with_the_fields_on_top() {
        let text = logged(LogFormat::Json, true);
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["message"], "request");
        assert_eq!(lines[0]["request_id"], "r-1");
        assert_eq!(lines[0]["status"], 404);
        assert_eq!(lines[1]["message"], "second \"line\"\nwith a newline");
        assert!(!text.contains('\u{1b}'), "no escape codes in JSON");
    }

    #[test]
    fn text_has_colour_only_when_asked() {
        let plain = logged(LogFormat::Text, false);
        assert!(
            plain.contains("request") && plain.contains("request_id=\"r-1\"") || plain.contains("request_id=r-1"),
            "{plain}"
        );
        assert!(!plain.contains('\u{1b}'), "{plain}");
        assert!(logged(LogFormat::Text, true).contains('\u{1b}'));
    }
}
