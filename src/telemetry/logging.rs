//! Logging: human-readable text by default, JSON lines for journald/ELK,
//! on stderr (journald takes both streams; a command's stdout stays its
//! output alone, e.g. `simulate --report json`). RUST_LOG overrides the
//! default level filter.

use std::io::Write;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Starts logging for the process; `role` (`serve`, `worker`, …) is the
/// first field of every JSON line, so lines from several roles in one
/// journal or index can be told apart.
pub fn init(format: LogFormat, role: &'static str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,fred=warn,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match format {
        LogFormat::Text => builder.with_writer(std::io::stderr).init(),
        // One object per line: time, level, message and fields, and the
        // spans it was logged in (a request's id; an event's partition,
        // entry, id, type and key).
        LogFormat::Json => builder
            .json()
            .with_span_list(true)
            .with_current_span(false)
            .with_writer(WithRole(role))
            .init(),
    }
}

/// Writes each JSON line with `"role"` as its first field. The JSON
/// formatter writes one event per writer, in one piece, so the line is
/// complete when the writer is dropped.
struct WithRole(&'static str);

impl<'a> MakeWriter<'a> for WithRole {
    type Writer = RoleLine;

    fn make_writer(&'a self) -> RoleLine {
        RoleLine {
            role: self.0,
            line: Vec::with_capacity(256),
        }
    }
}

struct RoleLine {
    role: &'static str,
    line: Vec<u8>,
}

impl Write for RoleLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RoleLine {
    fn drop(&mut self) {
        let _ = std::io::stderr()
            .lock()
            .write_all(&stamped(self.role, &self.line));
    }
}

/// `line` with `"role":"<role>"` as its first field, if it is an object.
fn stamped(role: &str, line: &[u8]) -> Vec<u8> {
    let Some(rest) = line.strip_prefix(b"{") else {
        return line.to_vec();
    };
    let mut out = Vec::with_capacity(line.len() + 16 + role.len());
    out.extend_from_slice(b"{\"role\":");
    out.extend_from_slice(serde_json::to_string(role).expect("a string").as_bytes());
    // An empty object gets no trailing comma.
    if !rest.starts_with(b"}") {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_gets_the_role_first() {
        let out = stamped("worker", b"{\"timestamp\":\"t\",\"level\":\"INFO\"}\n");
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["role"], "worker");
        assert_eq!(value["level"], "INFO");
        assert!(out.starts_with(b"{\"role\":\"worker\","));
        assert_eq!(stamped("all", b"{}"), b"{\"role\":\"all\"}");
        assert_eq!(stamped("all", b"plain"), b"plain");
    }
}
