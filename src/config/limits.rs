//! `[limits]`: connection limits, sizes and token buckets.

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Rooms one socket may be in, counting `global` and its own `user:` room.
    pub max_rooms_per_socket: usize,
    /// Largest HTTP request body accepted by the API (bytes); larger is `413 payload_too_large`.
    pub max_http_body_bytes: usize,
    /// Largest request head (request line and headers, bytes) on any connection; larger is
    /// answered `431` and the connection closed.
    pub max_request_header_bytes: usize,
    /// Open TCP connections from one client address (an IPv6 /64 counts as one); past it a
    /// new connection is closed at once. `handshake_exempt` and `trusted_proxies` peers are
    /// not counted. 0 turns it off.
    pub connections_per_ip: u32,
    /// Descriptors (of `RLIMIT_NOFILE`) kept back from ordinary connections: past the
    /// limit less this, new connections are served `/health` and `/ready` only. 0: none.
    pub fd_reserve: u64,
    /// Largest WebSocket message / frame a client may send (bytes).
    pub ws_max_message_bytes: usize,
    pub ws_max_frame_bytes: usize,
    /// Largest HTTP long-polling payload a client may send (bytes).
    pub polling_max_payload_bytes: u64,
    /// Each websocket's read buffer (bytes), held for the socket's life: clients mostly
    /// receive, so a small one saves memory per socket; a bigger message takes more reads.
    pub ws_read_buffer_bytes: usize,
    /// Packets buffered per socket before further emits to it are dropped (and counted).
    pub socket_buffer_packets: usize,
    /// `project:`/`agent:` rooms with more users than this announce no `presence.joined` /
    /// `presence.left` (each would go to every member: quadratic in the room's size).
    pub presence_announce_max_users: u64,
    /// Binary attachments one Socket.IO packet may declare, and their total size (bytes).
    pub max_binary_attachments: usize,
    pub max_binary_bytes: usize,
    /// Sockets on this node, in one tenant, of one user (per node); past them a handshake
    /// is refused with `too_many_connections`. 0 turns a limit off.
    pub max_connections: u64,
    pub max_connections_per_tenant: u64,
    pub max_connections_per_user: u64,
    /// Handshakes per client address: a token bucket refilling `handshakes_per_ip_per_sec`,
    /// holding `handshakes_per_ip_burst`; past it `rate_limited`. 0 turns it off.
    pub handshakes_per_ip_per_sec: u32,
    pub handshakes_per_ip_burst: u32,
    /// Peers whose `X-Forwarded-For` is believed (addresses or CIDRs).
    pub trusted_proxies: Vec<IpRange>,
    /// Client addresses the handshake limit never applies to (addresses or CIDRs); exempt
    /// from `preauth_sessions_per_ip` too.
    /// Exempt from the refused-key limit too.
    pub handshake_exempt: Vec<IpRange>,
    /// Handshakes per user (tenant and `sub`), counted once the token verifies: a token
    /// bucket; past it the CONNECT is refused with `rate_limited`. 0 turns it off.
    pub handshakes_per_user_per_sec: u32,
    pub handshakes_per_user_burst: u32,
    /// Engine.IO sessions that have not had a CONNECT accepted yet, per client address and
    /// per node; past either a new handshake is answered `429 too_many_preauth_sessions`.
    /// 0 turns a bound off.
    pub preauth_sessions_per_ip: u64,
    pub preauth_sessions: u64,
    /// A long-polling session answers only the client address that opened it (another
    /// address gets `403`). Default `false`: clients whose address changes mid-session
    /// (mobile networks, proxy pools) would be cut off.
    pub bind_polling_to_address: bool,
    /// Events (commands) per socket: a token bucket; past it the event is dropped and
    /// answered with `rate_limited`. 0 turns it off.
    pub events_per_sec: u32,
    pub events_burst: u32,
    /// More than this many refused events within `event_abuse_window_secs` disconnect the
    /// socket. 0 never disconnects.
    pub event_abuse_refusals: u32,
    pub event_abuse_window_secs: u64,
    /// Requests needing the `publish` scope, per API key: a token bucket; past it
    /// `429 rate_limited` with `Retry-After`. 0 turns it off.
    pub publish_per_key_per_sec: u32,
    pub publish_per_key_burst: u32,
    /// Request-body bytes of publish-scope requests, per API key: a token bucket refilling
    /// `publish_bytes_per_key_per_sec`, holding `publish_bytes_per_key_burst` (at least
    /// `max_http_body_bytes`); past it `429 rate_limited`, nothing published. 0 turns it off.
    pub publish_bytes_per_key_per_sec: u32,
    pub publish_bytes_per_key_burst: u32,
    /// Rooms one publish may name (a custom event's `rooms`; typed events route to at most
    /// two); past it `422 too_many_rooms`. At least 2.
    pub max_rooms_per_publish: usize,
    /// Refused API keys (`401`) per client address: a token bucket refilling
    /// `auth_failures_per_ip_per_sec`, holding `auth_failures_per_ip_burst`. Once it is
    /// spent, every request from the address to an endpoint needing a key is `429
    /// rate_limited` (valid keys too, so guessing stays slow) until a token is back.
    /// `handshake_exempt` addresses are exempt. 0 turns it off.
    pub auth_failures_per_ip_per_sec: u32,
    pub auth_failures_per_ip_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_rooms_per_socket: 100,
            max_http_body_bytes: 256 * 1024,
            max_request_header_bytes: 16 * 1024,
            connections_per_ip: 256,
            fd_reserve: 64,
            ws_max_message_bytes: 64 * 1024,
            ws_max_frame_bytes: 64 * 1024,
            polling_max_payload_bytes: 64 * 1024,
            ws_read_buffer_bytes: 1024,
            socket_buffer_packets: 1024,
            presence_announce_max_users: 100,
            max_binary_attachments: 10,
            max_binary_bytes: 64 * 1024,
            max_connections: 20_000,
            max_connections_per_tenant: 10_000,
            max_connections_per_user: 20,
            handshakes_per_ip_per_sec: 10,
            handshakes_per_ip_burst: 20,
            trusted_proxies: Vec::new(),
            handshake_exempt: ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|net| IpRange::try_from(net.to_string()).ok())
                .collect(),
            bind_polling_to_address: false,
            handshakes_per_user_per_sec: 2,
            handshakes_per_user_burst: 20,
            preauth_sessions_per_ip: 16,
            preauth_sessions: 2000,
            events_per_sec: 20,
            events_burst: 40,
            event_abuse_refusals: 20,
            event_abuse_window_secs: 10,
            publish_per_key_per_sec: 1000,
            publish_per_key_burst: 2000,
            // 8 MiB/s is 2,000 events of 4 KiB a second, more than any one integration
            // sends, and 32 MiB lets a burst of 128 maximal bodies through; without it one
            // key could push 1,000 bodies of 256 KiB (250 MiB) a second.
            publish_bytes_per_key_per_sec: 8 * 1024 * 1024,
            publish_bytes_per_key_burst: 32 * 1024 * 1024,
            max_rooms_per_publish: 100,
            auth_failures_per_ip_per_sec: 1,
            auth_failures_per_ip_burst: 20,
        }
    }
}

/// An address (`10.0.0.7`, `::1`) or a CIDR block (`10.0.0.0/8`), as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpRange(pub ipnet::IpNet);

impl IpRange {
    pub fn contains(&self, ip: &std::net::IpAddr) -> bool {
        self.0.contains(ip)
    }
}

impl TryFrom<String> for IpRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let s = s.trim();
        s.parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map(IpRange)
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))
    }
}

impl From<IpRange> for String {
    fn from(r: IpRange) -> String {
        r.0.to_string()
    }
}

impl LimitsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.max_rooms_per_socket < 2 {
            return invalid(
                "limits.max_rooms_per_socket must be at least 2 (global and the user's own room)"
                    .into(),
            );
        }
        for (name, rate, burst) in [
            (
                "handshakes_per_ip",
                self.handshakes_per_ip_per_sec,
                self.handshakes_per_ip_burst,
            ),
            (
                "handshakes_per_user",
                self.handshakes_per_user_per_sec,
                self.handshakes_per_user_burst,
            ),
            ("events", self.events_per_sec, self.events_burst),
            (
                "publish_per_key",
                self.publish_per_key_per_sec,
                self.publish_per_key_burst,
            ),
            (
                "publish_bytes_per_key",
                self.publish_bytes_per_key_per_sec,
                self.publish_bytes_per_key_burst,
            ),
            (
                "auth_failures_per_ip",
                self.auth_failures_per_ip_per_sec,
                self.auth_failures_per_ip_burst,
            ),
        ] {
            if rate > 0 && burst == 0 {
                return invalid(format!(
                    "limits.{name}_burst must be at least 1 when limits.{name}_per_sec is set"
                ));
            }
        }
        if self.publish_bytes_per_key_per_sec > 0
            && (self.publish_bytes_per_key_burst as usize) < self.max_http_body_bytes
        {
            return invalid(format!(
                "limits.publish_bytes_per_key_burst ({}) must be at least limits.max_http_body_bytes ({}): \
                 a larger body could never be published",
                self.publish_bytes_per_key_burst, self.max_http_body_bytes
            ));
        }
        if self.max_rooms_per_publish < 2 {
            return invalid(
                "limits.max_rooms_per_publish must be at least 2 (a typed event may route to two rooms)"
                    .into(),
            );
        }
        if self.event_abuse_refusals > 0 && self.event_abuse_window_secs == 0 {
            return invalid("limits.event_abuse_window_secs must be at least 1".into());
        }
        if self.max_request_header_bytes < 1024 {
            return invalid("limits.max_request_header_bytes must be at least 1024".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn addresses_and_cidrs_are_ranges() {
        let config = Config::from_toml(
            "[limits]\ntrusted_proxies = [\"10.0.0.1\", \"10.1.0.0/16\", \"::1\"]",
        )
        .unwrap();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let proxies = &config.limits.trusted_proxies;
        assert!(proxies[0].contains(&ip("10.0.0.1")));
        assert!(proxies[1].contains(&ip("10.1.200.3")));
        assert!(proxies[2].contains(&ip("::1")));
        assert!(Config::from_toml("[limits]\ntrusted_proxies = [\"nope\"]").is_err());
        assert!(Config::from_toml("[limits]\nevents_per_sec = 5\nevents_burst = 0").is_err());
    }

    #[test]
    fn publish_cost_limits_are_validated() {
        for (toml, wanted) in [
            (
                "[limits]
max_rooms_per_publish = 1",
                "max_rooms_per_publish must be at least 2",
            ),
            (
                "[limits]
publish_bytes_per_key_burst = 1000",
                "must be at least limits.max_http_body_bytes",
            ),
            (
                "[limits]
publish_bytes_per_key_burst = 0",
                "publish_bytes_per_key_burst must be at least 1",
            ),
        ] {
            let err = Config::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(wanted), "{toml}: {err}");
        }
        // Off, the burst does not matter.
        Config::from_toml(
            "[limits]
publish_bytes_per_key_per_sec = 0
publish_bytes_per_key_burst = 0",
        )
        .unwrap();
    }
}
