//! Telemetry: what the process tells its operators. Logging set-up, the
//! Prometheus metrics every role records, and how secrets are kept out of
//! both. A leaf: it imports no other module of the crate, so every layer
//! may record through it.

pub mod logging;
pub mod metrics;
pub mod webhook_series;

pub use logging::{init as init_logging, LogFormat};

/// A URL fit for logs: any password (and user) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("redis://:secret@host:6379"),
            "redis://***@host:6379"
        );
        assert_eq!(redact_url("postgres://u:p@db/x"), "postgres://***@db/x");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
