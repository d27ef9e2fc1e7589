//! `[server]`: the listener, Engine.IO timings, transports, CORS and the parser.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the HTTP + Socket.IO listener binds to.
    pub bind: SocketAddr,
    /// Name of this node in stats and `connection.established`; random when unset.
    pub node_id: Option<String>,
    /// Engine.IO ping interval and timeout, in milliseconds.
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    /// How long a client may take to send the Socket.IO CONNECT packet after the transport
    /// opened (a session not yet authenticated is closed after it).
    pub connect_timeout_ms: u64,
    /// How long a request head (request line and headers) may take to arrive, from its
    /// first byte; a slower client is disconnected.
    pub header_read_timeout_ms: u64,
    /// How long a connection may stay open with no request under way and nothing received
    /// (never sent a request, or idle on keep-alive). Websockets and long polls are not
    /// affected.
    pub idle_timeout_ms: u64,
    /// How long a write may wait for the client to take a single byte (it reads nothing,
    /// its window is full). Past it the connection is closed both ways: a client that stops
    /// reading cannot hold a connection, its buffers and a task for ever.
    pub write_timeout_ms: u64,
    /// Engine.IO transports offered. Polling needs sticky sessions behind a load balancer.
    pub transports: Vec<Transport>,
    /// On SIGTERM/SIGINT: how long publishes in flight may take to finish before sockets
    /// are closed, and the whole drain at most.
    pub shutdown_timeout_secs: u64,
    /// Sent to every socket in `server.shutdown`: when to reconnect (to another node).
    pub reconnect_after_ms: u64,
    /// Browser origins allowed to call the HTTP API and Socket.IO long-polling from
    /// another origin (CORS). Empty: same-origin only.
    pub cors_origins: Vec<String>,
    /// The Socket.IO parser every client of this server must use: one per server (and the
    /// same on every node of a cluster).
    pub parser: Parser,
    /// Serve Socket.IO clients that open a websocket directly (`transports: ["websocket"]`)
    /// on Roomcast's lean path instead of socketioxide's sessions (WEBSOCKET_API.md
    /// section 18). Only with the JSON parser; polling and upgrades stay socketioxide's.
    pub lean_websocket: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            node_id: None,
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            connect_timeout_ms: 10_000,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            write_timeout_ms: 30_000,
            transports: vec![Transport::Websocket, Transport::Polling],
            shutdown_timeout_secs: 30,
            reconnect_after_ms: 1000,
            cors_origins: Vec::new(),
            parser: Parser::Json,
            lean_websocket: true,
        }
    }
}

/// How Socket.IO packets are encoded: `json`, the stock parser, or `msgpack`, the
/// `socket.io-msgpack-parser` package's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parser {
    Json,
    Msgpack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Websocket,
    Polling,
}

impl ServerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if let Some(origin) = self.cors_origins.iter().find(|o| !is_origin(o)) {
            return invalid(format!(
                "server.cors_origins: {origin:?} is not an origin like \"https://app.example.com\" \
                 (scheme://host[:port], no path, no wildcard)"
            ));
        }
        if let Some(node_id) = &self.node_id
            && (node_id.is_empty() || node_id.len() > 128)
        {
            return invalid("server.node_id must be 1 to 128 characters".into());
        }
        if self.transports.is_empty() {
            return invalid("server.transports must list websocket, polling or both".into());
        }
        if self.connect_timeout_ms == 0 {
            return invalid("server.connect_timeout_ms must be at least 1".into());
        }
        for (name, ms) in [
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("write_timeout_ms", self.write_timeout_ms),
        ] {
            if ms < 100 {
                return invalid(format!("server.{name} must be at least 100"));
            }
        }
        Ok(())
    }
}

/// `scheme://host[:port]`: what a browser sends in `Origin`.
fn is_origin(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    #[test]
    fn cors_origins_are_validated() {
        Config::from_toml(
            "[server]\ncors_origins = [\"https://app.example.com\", \"http://localhost:3000\"]",
        )
        .unwrap();
        for bad in [
            "*",
            "https://app.example.com/",
            "app.example.com",
            "https://*.x.com",
            "",
        ] {
            let err = Config::from_toml(&format!("[server]\ncors_origins = [\"{bad}\"]"));
            assert!(err.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parser_is_json_or_msgpack() {
        assert_eq!(Config::default().server.parser, Parser::Json);
        let config = Config::from_toml("[server]\nparser = \"msgpack\"").unwrap();
        assert_eq!(config.server.parser, Parser::Msgpack);
        let err = Config::from_toml("[server]\nparser = \"cbor\"").unwrap_err();
        assert!(err.to_string().contains("parser"), "{err}");
    }
}
