//! `[log]`: the log filter and format, and the wire loggers held back from it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `roomcast=debug,info`; `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Pretty,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Crates that log whole protocol messages at `debug`/`trace` (handshake auth payloads,
/// query strings, `auth.refresh` tokens). They are held at `info` unless the filter names
/// them itself, so `level = "trace"` never writes a token to the log.
const WIRE_LOGGERS: &[&str] = &[
    "socketioxide",
    "socketioxide_core",
    "socketioxide_parser_common",
    "socketioxide_redis",
    "engineioxide",
    "engineioxide_core",
    "tungstenite",
    "tokio_tungstenite",
];

/// The `tracing` filter for `level` (a `log.level` or `RUST_LOG` value), with the
/// [`WIRE_LOGGERS`] it does not name held at `info`.
pub fn log_filter(level: &str) -> String {
    let named = |krate: &str| {
        level
            .split(',')
            .any(|d| d.trim().split(['=', '[', ':']).next() == Some(krate))
    };
    let mut filter = level.trim().to_owned();
    for krate in WIRE_LOGGERS.iter().filter(|k| !named(k)) {
        if !filter.is_empty() {
            filter.push(',');
        }
        filter.push_str(krate);
        filter.push_str("=info");
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_loggers_stay_at_info_unless_named() {
        let f = log_filter("trace");
        assert!(f.starts_with("trace,"), "{f}");
        assert!(
            f.contains("socketioxide=info") && f.contains("tungstenite=info"),
            "{f}"
        );
        let f = log_filter("debug,socketioxide=trace");
        assert!(f.contains("socketioxide=trace"), "{f}");
        assert!(!f.contains("socketioxide=info"), "{f}");
        assert!(f.contains("engineioxide=info"), "{f}");
    }
}
