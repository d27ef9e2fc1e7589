//! The whole configuration schema: defaults, the TOML file, `ROOMCAST_<SECTION>__<KEY>`
//! environment overrides and validation. Every setting is documented in `config.toml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::rooms::Tenant;

/// The JWT secret shipped in `config.toml` and used when none is configured.
pub const DEV_JWT_SECRET: &str = "roomcast-dev-secret-do-not-use-in-production";
/// The API key shipped in `config.toml` and used when no key is configured.
pub const DEV_API_KEY: &str = "roomcast-dev-key";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub api_keys: Vec<ApiKeyConfig>,
    pub limits: LimitsConfig,
    pub cluster: ClusterConfig,
    pub publish: PublishConfig,
    pub history: HistoryConfig,
    pub pages: PagesConfig,
    pub github: GithubConfig,
    pub ingest: IngestConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
}

/// The pages the server serves itself (HTML and JS embedded in the binary).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PagesConfig {
    /// `/debug`: the interactive test client. Holds no secrets; needs no key to load.
    pub debug: bool,
    /// `/admin`: the live dashboard. The page asks for an API key with scope `admin`.
    pub admin: bool,
}

impl Default for PagesConfig {
    fn default() -> Self {
        Self {
            debug: true,
            admin: true,
        }
    }
}

/// `POST /webhooks/github`: GitHub webhooks turned into `pr.*` / `issue.*` events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GithubConfig {
    /// The webhook's secret: every delivery must carry a valid `X-Hub-Signature-256`.
    /// Unset: the endpoint answers `404 github_not_configured`.
    pub webhook_secret: Option<String>,
    /// The tenant the events are published into.
    pub tenant: String,
    /// `"owner/repo" = "<project_id>"`: which `project:` room a repository's events go to
    /// (repository names compared case-insensitively). Other repositories are ignored.
    pub projects: BTreeMap<String, String>,
}

impl Default for GithubConfig {
    fn default() -> Self {
        Self {
            webhook_secret: None,
            tenant: "default".into(),
            projects: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Durable ingest from a Redis stream; off unless the section is present.
    pub redis_streams: Option<RedisStreamsIngest>,
}

/// Consume events from a Redis stream as one consumer group: every node of the group takes
/// a share, acknowledges an entry only after publishing it, and takes over the entries of
/// consumers that died.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisStreamsIngest {
    /// The Redis holding the stream; `cluster.redis_url` when unset (standalone Redis only).
    pub redis_url: Option<String>,
    pub stream: String,
    pub group: String,
    /// Where entries that can never be published go, with the validation error.
    pub dead_letter_stream: String,
    /// The dead-letter stream is trimmed to about this many entries.
    pub dead_letter_max_len: u64,
    /// Entries read per round trip.
    pub batch_size: usize,
    /// How long one XREADGROUP waits for new entries.
    pub block_ms: u64,
    /// An entry another consumer read but has not acknowledged for this long is taken over
    /// (its consumer is presumed dead).
    pub claim_idle_ms: u64,
    /// How often to look for such entries.
    pub claim_interval_ms: u64,
}

impl Default for RedisStreamsIngest {
    fn default() -> Self {
        Self {
            redis_url: None,
            stream: "roomcast:events".into(),
            group: "roomcast".into(),
            dead_letter_stream: "roomcast:events:dead".into(),
            dead_letter_max_len: 10_000,
            batch_size: 100,
            block_ms: 2_000,
            claim_idle_ms: 30_000,
            claim_interval_ms: 5_000,
        }
    }
}

/// `GET /metrics` (Prometheus text format).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` without an API key. By default it needs a key with the `read` scope
    /// (Prometheus sends it with `authorization: {credentials: ...}`): a loopback bind
    /// behind a same-host reverse proxy would otherwise publish it to the world.
    pub public: bool,
}

/// How much of each room's past is kept for replay: the last `size` events, none older
/// than `ttl_secs`. `project`, `agent`, `user` and `global` override it per room kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    pub size: usize,
    pub ttl_secs: u64,
    pub project: Option<Retention>,
    pub agent: Option<Retention>,
    pub user: Option<Retention>,
    pub global: Option<Retention>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub size: usize,
    pub ttl_secs: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            size: 200,
            ttl_secs: 300,
            project: None,
            agent: None,
            user: None,
            global: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublishConfig {
    /// How long a publish's `Idempotency-Key` (or `X-GitHub-Delivery`) is remembered.
    pub idempotency_window_secs: u64,
    /// Most events one `POST /api/v1/events/batch` may carry.
    pub max_batch_events: usize,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            idempotency_window_secs: 300,
            max_batch_events: 100,
        }
    }
}

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
    /// How long a client may take to send the Socket.IO CONNECT packet after the transport opened.
    pub connect_timeout_ms: u64,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://host:port[/db]`: turns cluster mode on. Unset: a single node, in memory.
    /// With `mode = "cluster"`, one or more nodes of the Redis Cluster, comma-separated.
    pub redis_url: Option<String>,
    /// `standalone` (one Redis, or a primary behind a proxy) or `cluster` (Redis Cluster).
    pub mode: ClusterMode,
    /// Prefix of every Redis key and pub/sub channel Roomcast uses.
    pub key_prefix: String,
    /// A node that has not renewed its heartbeat for this long is dead: it leaves stats and
    /// presence, and its users' presence ends.
    pub node_ttl_secs: u64,
    /// A user's last socket leaving a room announces `presence.left` only after this long,
    /// so a quick reconnect does not flap.
    pub presence_grace_secs: u64,
    /// While Redis is unreachable: `fail` answers publishes with `503 cluster_unavailable`;
    /// `local` delivers them to this node's sockets only.
    pub on_unavailable: OnUnavailable,
    /// How long a cluster-wide request (fetching or disconnecting remote sockets) waits.
    pub request_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterMode {
    Standalone,
    Cluster,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnavailable {
    Fail,
    Local,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            mode: ClusterMode::Standalone,
            key_prefix: "roomcast".into(),
            node_ttl_secs: 15,
            presence_grace_secs: 5,
            on_unavailable: OnUnavailable::Fail,
            request_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HMAC secret: tokens are HS256/HS384/HS512.
    pub jwt_secret: Option<String>,
    /// PEM public key (RSA, EC P-256/P-384, Ed25519): tokens use the matching asymmetric algorithm.
    pub jwt_public_key_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_secs: u64,
    /// A connected socket is sent `auth.expiring` this long before its token expires.
    pub expiry_warning_secs: u64,
    /// Further verification keys, each named by the `kid` tokens carry: several at once
    /// let keys rotate without downtime.
    pub keys: Vec<KeyConfig>,
    /// A JWK Set (RFC 7517) on disk, re-read every `jwks_refresh_secs`.
    pub jwks_file: Option<PathBuf>,
    /// A JWK Set fetched over HTTP(S), refreshed every `jwks_refresh_secs`; when a refresh
    /// fails the last good set stays in use.
    pub jwks_url: Option<String>,
    pub jwks_refresh_secs: u64,
}

/// One `[[auth.keys]]` entry: a `kid` and exactly one of an HMAC secret or a PEM public key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub kid: String,
    pub secret: Option<String>,
    pub public_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub name: String,
    /// The key in plain text (convenient in development)...
    pub key: Option<String>,
    /// ...or its SHA-256 as hex, so the config file does not hold the secret.
    pub key_sha256: Option<String>,
    /// A key bound to a tenant may publish only into that tenant.
    pub tenant: Option<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<Scope>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `POST /api/v1/events`, `POST /api/v1/broadcast`.
    Publish,
    /// Stats, presence and history endpoints.
    Read,
    /// `GET /api/v1/admin/overview` (the `/admin` page).
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }
}

fn default_scopes() -> Vec<Scope> {
    vec![Scope::Publish]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Rooms one socket may be in, counting `global` and its own `user:` room.
    pub max_rooms_per_socket: usize,
    /// Largest HTTP request body accepted by the API (bytes); larger is `413 payload_too_large`.
    pub max_http_body_bytes: usize,
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
    /// Client addresses the handshake limit never applies to (addresses or CIDRs).
    pub handshake_exempt: Vec<IpRange>,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `roomcast=debug,info`; `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            auth: AuthConfig::default(),
            api_keys: vec![ApiKeyConfig {
                name: "dev".into(),
                key: Some(DEV_API_KEY.into()),
                key_sha256: None,
                tenant: None,
                scopes: vec![Scope::Publish, Scope::Read, Scope::Admin],
            }],
            limits: LimitsConfig::default(),
            cluster: ClusterConfig::default(),
            publish: PublishConfig::default(),
            history: HistoryConfig::default(),
            pages: PagesConfig::default(),
            github: GithubConfig::default(),
            ingest: IngestConfig::default(),
            metrics: MetricsConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            node_id: None,
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            connect_timeout_ms: 45_000,
            transports: vec![Transport::Websocket, Transport::Polling],
            shutdown_timeout_secs: 30,
            reconnect_after_ms: 1000,
            cors_origins: Vec::new(),
            parser: Parser::Json,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            // Filled with the dev secret by `with_fallbacks` only when no key is configured, so
            // a file that sets `jwt_public_key_file` does not end up with both.
            jwt_secret: None,
            jwt_public_key_file: None,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            expiry_warning_secs: 60,
            keys: Vec::new(),
            jwks_file: None,
            jwks_url: None,
            jwks_refresh_secs: 300,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_rooms_per_socket: 100,
            max_http_body_bytes: 256 * 1024,
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
            events_per_sec: 20,
            events_burst: 40,
            event_abuse_refusals: 20,
            event_abuse_window_secs: 10,
            publish_per_key_per_sec: 1000,
            publish_per_key_burst: 2000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Pretty,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("invalid configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Where a configuration comes from.
pub enum Source<'a> {
    /// `--config PATH` given explicitly: the file must exist.
    Explicit(&'a Path),
    /// The default `./config.toml`: used when present, defaults otherwise.
    Default(&'a Path),
}

impl Config {
    /// Loads defaults, then the file, then `ROOMCAST_<SECTION>__<KEY>` environment variables,
    /// and validates the result.
    pub fn load(source: Source<'_>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match source {
            Source::Explicit(path) if !path.exists() => {
                return Err(ConfigError::Missing(path.into()));
            }
            Source::Explicit(path) | Source::Default(path) => {
                if path.exists() {
                    // A file that lists API keys replaces the default dev key instead of
                    // merging with it, so the dev key never lingers beside real ones.
                    figment = figment.merge(Toml::file_exact(path));
                }
            }
        }
        // Only keys with a section separator are settings: `ROOMCAST_CONFIG` and friends are not.
        figment = figment.merge(
            Env::prefixed("ROOMCAST_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        let config = figment
            .extract::<Config>()
            .map_err(Box::new)?
            .with_fallbacks();
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML string on top of the defaults (no environment); for tests and embedding.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract::<Config>()
            .map_err(Box::new)?
            .with_fallbacks();
        config.validate()?;
        Ok(config)
    }

    /// Uses the development JWT secret when no verification key is configured at all.
    pub fn with_fallbacks(mut self) -> Self {
        if !self.auth.has_any_key() {
            self.auth.jwt_secret = Some(DEV_JWT_SECRET.into());
        }
        self
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !self.auth.has_any_key() {
            return invalid(
                "auth: set jwt_secret, jwt_public_key_file, [[auth.keys]], jwks_file or jwks_url"
                    .into(),
            );
        }
        match (&self.auth.jwt_secret, &self.auth.jwt_public_key_file) {
            (Some(_), Some(_)) => {
                return invalid(
                    "auth: set only one of jwt_secret and jwt_public_key_file (the key type pins the algorithm)"
                        .into(),
                );
            }
            (Some(secret), None) if secret.len() < 16 => {
                return invalid("auth.jwt_secret must be at least 16 bytes".into());
            }
            _ => {}
        }
        self.auth.validate_keys()?;
        if let Some(origin) = self.server.cors_origins.iter().find(|o| !is_origin(o)) {
            return invalid(format!(
                "server.cors_origins: {origin:?} is not an origin like \"https://app.example.com\" \
                 (scheme://host[:port], no path, no wildcard)"
            ));
        }
        if self.dev_secrets_in_use() && !self.server.bind.ip().is_loopback() {
            return invalid(format!(
                "the development JWT secret or API key is in use and server.bind ({}) is not a loopback address; \
                 set auth.jwt_secret and api_keys (see `roomcast check-config`)",
                self.server.bind
            ));
        }
        let loopback = self.server.bind.ip().is_loopback();
        for (i, key) in self.api_keys.iter().enumerate() {
            if key.key.is_some() && !loopback {
                return invalid(format!(
                    "api_keys[{i}] ({}): a plain-text key is allowed only while server.bind is a \
                     loopback address (development); store key_sha256 instead \
                     (printf %s \"$KEY\" | sha256sum)",
                    key.name
                ));
            }
            match (&key.key, &key.key_sha256) {
                (None, None) | (Some(_), Some(_)) => {
                    return invalid(format!(
                        "api_keys[{i}] ({}): set exactly one of key and key_sha256",
                        key.name
                    ));
                }
                (Some(k), None) if k.len() < 8 => {
                    return invalid(format!(
                        "api_keys[{i}] ({}): key must be at least 8 characters",
                        key.name
                    ));
                }
                (None, Some(h)) if h.len() != 64 || hex::decode(h).is_err() => {
                    return invalid(format!(
                        "api_keys[{i}] ({}): key_sha256 must be 64 hex digits",
                        key.name
                    ));
                }
                _ => {}
            }
            if let Some(tenant) = &key.tenant
                && Tenant::parse(tenant).is_none()
            {
                return invalid(format!(
                    "api_keys[{i}] ({}): tenant {tenant:?} is not a valid tenant id",
                    key.name
                ));
            }
            if key.tenant.is_some() && key.scopes.contains(&Scope::Admin) {
                return invalid(format!(
                    "api_keys[{i}] ({}): the admin scope shows every tenant; a key bound to a tenant cannot have it",
                    key.name
                ));
            }
        }
        if let Some(node_id) = &self.server.node_id
            && (node_id.is_empty() || node_id.len() > 128)
        {
            return invalid("server.node_id must be 1 to 128 characters".into());
        }
        if self.server.transports.is_empty() {
            return invalid("server.transports must list websocket, polling or both".into());
        }
        let cluster = &self.cluster;
        if let Some(urls) = &cluster.redis_url
            && urls
                .split(',')
                .any(|url| redis::Client::open(url.trim()).is_err())
        {
            return invalid(
                "cluster.redis_url is not a valid redis:// URL (or list of them)".into(),
            );
        }
        if cluster.key_prefix.is_empty()
            || cluster
                .key_prefix
                .contains(|c: char| c.is_whitespace() || c == '#')
        {
            return invalid(
                "cluster.key_prefix must be non-empty, without spaces, '#', '{' or '}'".into(),
            );
        }
        if cluster.node_ttl_secs < 2 {
            return invalid("cluster.node_ttl_secs must be at least 2".into());
        }
        if self.limits.max_rooms_per_socket < 2 {
            return invalid(
                "limits.max_rooms_per_socket must be at least 2 (global and the user's own room)"
                    .into(),
            );
        }
        if self.publish.max_batch_events == 0 {
            return invalid("publish.max_batch_events must be at least 1".into());
        }
        self.validate_github()?;
        self.validate_ingest()?;
        let limits = &self.limits;
        for (name, rate, burst) in [
            (
                "handshakes_per_ip",
                limits.handshakes_per_ip_per_sec,
                limits.handshakes_per_ip_burst,
            ),
            ("events", limits.events_per_sec, limits.events_burst),
            (
                "publish_per_key",
                limits.publish_per_key_per_sec,
                limits.publish_per_key_burst,
            ),
        ] {
            if rate > 0 && burst == 0 {
                return invalid(format!(
                    "limits.{name}_burst must be at least 1 when limits.{name}_per_sec is set"
                ));
            }
        }
        if limits.event_abuse_refusals > 0 && limits.event_abuse_window_secs == 0 {
            return invalid("limits.event_abuse_window_secs must be at least 1".into());
        }
        Ok(())
    }

    fn validate_github(&self) -> Result<(), ConfigError> {
        let github = &self.github;
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if let Some(secret) = &github.webhook_secret
            && secret.len() < 16
        {
            return invalid("github.webhook_secret must be at least 16 bytes".into());
        }
        if Tenant::parse(&github.tenant).is_none() {
            return invalid(format!(
                "github.tenant {:?} is not a valid tenant id",
                github.tenant
            ));
        }
        for (repo, project) in &github.projects {
            if repo.split('/').filter(|part| !part.is_empty()).count() != 2 {
                return invalid(format!("github.projects: {repo:?} is not \"owner/repo\""));
            }
            if crate::rooms::Id::parse(project).is_none() {
                return invalid(format!(
                    "github.projects.\"{repo}\": {project:?} is not a valid project id"
                ));
            }
        }
        Ok(())
    }

    fn validate_ingest(&self) -> Result<(), ConfigError> {
        let Some(ingest) = &self.ingest.redis_streams else {
            return Ok(());
        };
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        match (
            &ingest.redis_url,
            &self.cluster.redis_url,
            self.cluster.mode,
        ) {
            (Some(url), _, _) => {
                if redis::Client::open(url.as_str()).is_err() {
                    return invalid(
                        "ingest.redis_streams.redis_url is not a valid redis:// URL".into(),
                    );
                }
            }
            (None, Some(_), ClusterMode::Standalone) => {}
            (None, Some(_), ClusterMode::Cluster) => {
                return invalid(
                    "ingest.redis_streams: set redis_url (ingest reads one standalone Redis, not a Redis Cluster)"
                        .into(),
                );
            }
            (None, None, _) => {
                return invalid(
                    "ingest.redis_streams needs redis_url (or cluster.redis_url)".into(),
                );
            }
        }
        if ingest.stream.is_empty()
            || ingest.group.is_empty()
            || ingest.dead_letter_stream.is_empty()
        {
            return invalid(
                "ingest.redis_streams: stream, group and dead_letter_stream must be non-empty"
                    .into(),
            );
        }
        if ingest.stream == ingest.dead_letter_stream {
            return invalid(
                "ingest.redis_streams: dead_letter_stream must differ from stream".into(),
            );
        }
        if ingest.batch_size == 0 || ingest.block_ms == 0 || ingest.claim_interval_ms == 0 {
            return invalid(
                "ingest.redis_streams: batch_size, block_ms and claim_interval_ms must be at least 1"
                    .into(),
            );
        }
        if ingest.claim_idle_ms < 1000 {
            return invalid("ingest.redis_streams.claim_idle_ms must be at least 1000".into());
        }
        Ok(())
    }

    /// The Redis the stream ingest reads, when it is on.
    pub fn ingest_redis_url(&self) -> Option<&str> {
        let ingest = self.ingest.redis_streams.as_ref()?;
        ingest
            .redis_url
            .as_deref()
            .or(self.cluster.redis_url.as_deref())
    }

    /// True when the shipped development secret or API key is configured.
    pub fn dev_secrets_in_use(&self) -> bool {
        self.auth.jwt_secret.as_deref() == Some(DEV_JWT_SECRET)
            || self
                .api_keys
                .iter()
                .any(|k| k.key.as_deref() == Some(DEV_API_KEY))
    }

    /// The configuration as TOML with every secret replaced by `"***"`.
    pub fn to_masked_toml(&self) -> String {
        let mut masked = self.clone();
        let mask = |s: &mut Option<String>| {
            if s.is_some() {
                *s = Some("***".into());
            }
        };
        mask(&mut masked.auth.jwt_secret);
        mask(&mut masked.github.webhook_secret);
        for key in &mut masked.auth.keys {
            mask(&mut key.secret);
        }
        for key in &mut masked.api_keys {
            mask(&mut key.key);
        }
        if let Some(urls) = &mut masked.cluster.redis_url {
            // Cluster mode lists several nodes, each with its own credentials.
            *urls = urls.split(',').map(mask_url).collect::<Vec<_>>().join(",");
        }
        if let Some(url) = masked
            .ingest
            .redis_streams
            .as_mut()
            .and_then(|i| i.redis_url.as_mut())
        {
            *url = mask_url(url);
        }
        if let Some(url) = &mut masked.auth.jwks_url {
            *url = mask_url(url);
        }
        toml::to_string_pretty(&masked).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
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

impl AuthConfig {
    /// Whether any verification key is configured (the dev secret fills in otherwise).
    pub fn has_any_key(&self) -> bool {
        self.jwt_secret.is_some()
            || self.jwt_public_key_file.is_some()
            || !self.keys.is_empty()
            || self.jwks_file.is_some()
            || self.jwks_url.is_some()
    }

    fn validate_keys(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let mut seen = std::collections::HashSet::new();
        for (i, key) in self.keys.iter().enumerate() {
            if key.kid.is_empty() || key.kid.len() > 256 {
                return invalid(format!("auth.keys[{i}]: kid must be 1 to 256 characters"));
            }
            if !seen.insert(key.kid.as_str()) {
                return invalid(format!("auth.keys[{i}]: kid {:?} is listed twice", key.kid));
            }
            match (&key.secret, &key.public_key_file) {
                (Some(_), Some(_)) | (None, None) => {
                    return invalid(format!(
                        "auth.keys[{i}] ({}): set exactly one of secret and public_key_file",
                        key.kid
                    ));
                }
                (Some(secret), None) if secret.len() < 16 => {
                    return invalid(format!(
                        "auth.keys[{i}] ({}): secret must be at least 16 bytes",
                        key.kid
                    ));
                }
                _ => {}
            }
        }
        if self.jwks_file.is_some() && self.jwks_url.is_some() {
            return invalid("auth: set at most one of jwks_file and jwks_url".into());
        }
        if let Some(url) = &self.jwks_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return invalid("auth.jwks_url must be an http:// or https:// URL".into());
        }
        if self.jwks_refresh_secs == 0 {
            return invalid("auth.jwks_refresh_secs must be at least 1".into());
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

/// A URL with its user-info (`user:password@`) replaced by `***` and its query dropped.
fn mask_url(url: &str) -> String {
    let mut url = match url.split_once('?') {
        Some((base, _)) => format!("{base}?***"),
        None => url.to_owned(),
    };
    if let Some(scheme_end) = url.find("://") {
        let authority_end = url[scheme_end + 3..]
            .find(['/', '?'])
            .map_or(url.len(), |i| scheme_end + 3 + i);
        if let Some(at) = url[..authority_end].rfind('@')
            && at > scheme_end
        {
            url.replace_range(scheme_end + 3..at, "***");
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_on_loopback() {
        let config = Config::default().with_fallbacks();
        config.validate().unwrap();
        assert!(config.dev_secrets_in_use());
    }

    #[test]
    fn dev_secrets_refused_off_loopback() {
        let err = Config::from_toml("[server]\nbind = \"0.0.0.0:8000\"").unwrap_err();
        assert!(err.to_string().contains("not a loopback"), "{err}");
    }

    #[test]
    fn real_secrets_allowed_off_loopback() {
        Config::from_toml(
            "[server]\nbind = \"0.0.0.0:8000\"\n[auth]\njwt_secret = \"0123456789abcdef0123\"\n\
             [[api_keys]]\nname = \"b\"\nkey_sha256 = \"8d969eef6ecad3c29a3a629280e686cf0c3f5d5a86aff3ca12020c923adc6c92\"",
        )
        .unwrap();
    }

    #[test]
    fn masked_output_hides_secrets() {
        let text = Config::default().with_fallbacks().to_masked_toml();
        assert!(!text.contains(DEV_JWT_SECRET));
        assert!(!text.contains(DEV_API_KEY));
        assert!(text.contains("***"));
    }

    #[test]
    fn redis_credentials_are_masked() {
        let config =
            Config::from_toml("[cluster]\nredis_url = \"redis://user:hunter2@127.0.0.1:6379/0\"")
                .unwrap();
        let text = config.to_masked_toml();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("redis://***@127.0.0.1:6379/0"), "{text}");
    }

    #[test]
    fn the_shipped_file_matches_the_defaults() {
        let shipped = Config::from_toml(include_str!("../config.toml")).unwrap();
        let default = Config::default().with_fallbacks();
        assert_eq!(shipped.to_masked_toml(), default.to_masked_toml());
    }

    #[test]
    fn tenant_keys_cannot_be_admins() {
        let err = Config::from_toml(
            "[[api_keys]]\nname = \"t\"\nkey = \"tenant-key-1\"\ntenant = \"acme\"\nscopes = [\"read\", \"admin\"]",
        )
        .unwrap_err();
        assert!(err.to_string().contains("admin scope"), "{err}");
    }

    #[test]
    fn github_projects_must_be_repositories_and_ids() {
        Config::from_toml("[github]\nwebhook_secret = \"0123456789abcdef\"\n[github.projects]\n\"acme/web\" = \"42\"").unwrap();
        for bad in [
            "\"acme\" = \"42\"",
            "\"acme/web\" = \"a b\"",
            "\"a/b/c\" = \"1\"",
        ] {
            let err = Config::from_toml(&format!("[github.projects]\n{bad}")).unwrap_err();
            assert!(err.to_string().contains("github.projects"), "{bad}: {err}");
        }
        assert!(Config::from_toml("[github]\nwebhook_secret = \"short\"").is_err());
    }

    #[test]
    fn ingest_needs_a_redis() {
        let err = Config::from_toml("[ingest.redis_streams]\nstream = \"s\"").unwrap_err();
        assert!(err.to_string().contains("redis_url"), "{err}");
        let config = Config::from_toml(
            "[cluster]\nredis_url = \"redis://127.0.0.1:1\"\n[ingest.redis_streams]",
        )
        .unwrap();
        assert_eq!(config.ingest_redis_url(), Some("redis://127.0.0.1:1"));
        assert!(Config::default().ingest_redis_url().is_none());
    }

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
    fn every_credential_in_a_url_is_masked() {
        let config = Config::from_toml(
            "[cluster]\nmode = \"cluster\"\nredis_url = \"redis://a:pw1@h1:7000,redis://b:pw2@h2:7000\"\n\
             [auth]\njwks_url = \"https://u:pw3@idp.example/jwks?token=pw4\"",
        )
        .unwrap();
        let text = config.to_masked_toml();
        for secret in ["pw1", "pw2", "pw3", "pw4"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(
            text.contains("redis://***@h1:7000,redis://***@h2:7000"),
            "{text}"
        );
        assert!(text.contains("https://***@idp.example/jwks?***"), "{text}");
    }

    #[test]
    fn key_secrets_are_masked() {
        let config = Config::from_toml(
            "[auth]\n[[auth.keys]]\nkid = \"k1\"\nsecret = \"rotation-secret-0123456789\"",
        )
        .unwrap();
        let text = config.to_masked_toml();
        assert!(!text.contains("rotation-secret"), "{text}");
        assert!(text.contains("kid = \"k1\""), "{text}");
    }

    /// "Development" is a loopback `server.bind`: there plain-text API keys are fine, on any
    /// other address only `key_sha256`.
    #[test]
    fn plain_api_keys_only_on_loopback() {
        let keys = "[auth]\njwt_secret = \"0123456789abcdef0123\"\n\
                    [[api_keys]]\nname = \"b\"\nkey = \"a-plain-key-123\"";
        for bind in ["127.0.0.1:8000", "[::1]:8000"] {
            Config::from_toml(&format!("[server]\nbind = \"{bind}\"\n{keys}")).unwrap();
        }
        for bind in ["0.0.0.0:8000", "10.1.2.3:8000", "[::]:8000"] {
            let err = Config::from_toml(&format!("[server]\nbind = \"{bind}\"\n{keys}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("plain-text key"), "{bind}: {err}");
            assert!(!err.contains("a-plain-key-123"), "{err}");
        }
    }

    #[test]
    fn auth_keys_are_validated() {
        for (toml, wanted) in [
            (
                "[[auth.keys]]\nkid = \"\"\nsecret = \"0123456789abcdef\"",
                "kid must be",
            ),
            (
                "[[auth.keys]]\nkid = \"a\"\nsecret = \"0123456789abcdef\"\n\
                 [[auth.keys]]\nkid = \"a\"\nsecret = \"0123456789abcdef\"",
                "listed twice",
            ),
            ("[[auth.keys]]\nkid = \"a\"", "exactly one of"),
            (
                "[[auth.keys]]\nkid = \"a\"\nsecret = \"short\"",
                "at least 16",
            ),
            (
                "[auth]\njwks_file = \"a\"\njwks_url = \"https://x/\"",
                "at most one of",
            ),
            ("[auth]\njwks_url = \"ftp://x/\"", "http://"),
            (
                "[auth]\njwks_file = \"a\"\njwks_refresh_secs = 0",
                "at least 1",
            ),
        ] {
            let err = Config::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(wanted), "{toml}: {err}");
            assert!(!err.contains("0123456789abcdef"), "{err}");
        }
        // Keys alone are a complete auth config: no dev secret is added beside them.
        let config =
            Config::from_toml("[[auth.keys]]\nkid = \"a\"\nsecret = \"0123456789abcdef\"").unwrap();
        assert_eq!(config.auth.jwt_secret, None);
    }

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

    #[test]
    fn unknown_keys_are_errors() {
        assert!(Config::from_toml("[server]\nbnid = \"x\"").is_err());
    }
}
