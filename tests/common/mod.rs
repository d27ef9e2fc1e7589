//! A real server started in-process on an ephemeral port, and a minimal Engine.IO v4 /
//! Socket.IO v5 client over a real WebSocket, for the behaviour tests.
#![allow(dead_code)]
// Shared by every test binary through `mod common;`: nothing is reachable from another crate.
#![allow(unreachable_pub)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roomcast::auth::jwt::{TokenClaims, now_secs, sign_hs256};
use roomcast::rooms::Grant;
use roomcast::{Config, EventBroadcaster, Roomcast};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-0123456789abcdef";
pub const KEY: &str = "test-key-full";
pub const ACME_KEY: &str = "test-key-acme";
pub const READ_KEY: &str = "test-key-read";
pub const ADMIN_KEY: &str = "test-key-admin";
/// How long any wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub addr: SocketAddr,
    pub broadcaster: EventBroadcaster,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// Starts a server with the test keys plus `extra` TOML (sections not set here).
    pub async fn start_with(extra: &str) -> Self {
        Self::start_node("test-node", extra).await
    }

    /// Starts one node of a cluster on `redis`, sharing `prefix` with its peers.
    pub async fn start_cluster_node(node_id: &str, redis: &RedisServer, prefix: &str) -> Self {
        Self::start_cluster_node_with(node_id, redis, prefix, "").await
    }

    /// [`Self::start_cluster_node`] plus `extra` TOML (sections other than `[cluster]`).
    pub async fn start_cluster_node_with(
        node_id: &str,
        redis: &RedisServer,
        prefix: &str,
        extra: &str,
    ) -> Self {
        let url = format!("redis://127.0.0.1:{}", redis.port);
        Self::start_cluster_node_on(node_id, &url, "standalone", prefix, extra).await
    }

    /// Starts one node on the Redis at `urls` in `mode` (`standalone` or `cluster`).
    pub async fn start_cluster_node_on(
        node_id: &str,
        urls: &str,
        mode: &str,
        prefix: &str,
        extra: &str,
    ) -> Self {
        let server = Self::start_node(
            node_id,
            &format!(
                "{extra}\n[cluster]\nredis_url = \"{urls}\"\nmode = \"{mode}\"\nkey_prefix = \"{prefix}\"\n\
                 node_ttl_secs = 3\npresence_grace_secs = 1"
            ),
        )
        .await;
        server.until_ready(true).await;
        server
    }

    /// Waits, within the deadline, until `/ready` answers 200 (`true`) or 503 (`false`).
    pub async fn until_ready(&self, ready: bool) {
        let want = if ready { 200 } else { 503 };
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while self.get("/ready", None).await.0 != want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "/ready never answered {want}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn start_node(node_id: &str, extra: &str) -> Self {
        Self::start_full(
            node_id,
            &format!("[auth]\njwt_secret = \"{SECRET}\"\nleeway_secs = 0"),
            extra,
        )
        .await
    }

    /// Starts a server whose `[auth]` section is `auth` (it must use [`SECRET`]).
    pub async fn start_with_auth(auth: &str) -> Self {
        Self::start_full("test-node", auth, "").await
    }

    async fn start_full(node_id: &str, auth: &str, extra: &str) -> Self {
        let toml = format!(
            r#"
            [server]
            bind = "127.0.0.1:0"
            node_id = "{node_id}"
            {auth}
            [[api_keys]]
            name = "full"
            key = "{KEY}"
            scopes = ["publish", "read"]
            [[api_keys]]
            name = "acme"
            key = "{ACME_KEY}"
            tenant = "acme"
            scopes = ["publish"]
            [[api_keys]]
            name = "reader"
            key = "{READ_KEY}"
            scopes = ["read"]
            [[api_keys]]
            name = "admin"
            key = "{ADMIN_KEY}"
            scopes = ["admin"]
            {extra}
            "#
        );
        Self::start_toml(&toml).await
    }

    /// Starts a server from a whole TOML config (its `server.bind` is ignored).
    pub async fn start_toml(toml: &str) -> Self {
        let config = Config::from_toml(toml).expect("test config");
        let server = Roomcast::new(&config).await.expect("server");
        let broadcaster = server.broadcaster();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(server.serve(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            broadcaster,
            stop: Some(stop),
            served: Some(served),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A socket connected with `token` in the handshake auth (the connect must succeed).
    pub async fn connect(&self, token: &str) -> Client {
        Client::connect(self.addr, Auth::Payload(json!({ "token": token })))
            .await
            .unwrap_or_else(|code| panic!("connect refused: {code}"))
    }

    /// `POST path` with the full-scope key; returns status and JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_raw(path, Some(KEY), body.to_string()).await
    }

    /// Publishes `system.notification` to the default tenant's `global` room: a marker every
    /// socket of that tenant receives, to prove that something else did not arrive before it.
    pub async fn publish_marker(&self) {
        let (status, body) = self
            .post(
                "/api/v1/events",
                json!({"type": "system.notification", "data": {"title": "t", "message": "m"}}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }

    /// Publishes `count` `system.notification`s to `global`, titled `0`, `1`, …, each with a
    /// message of `bytes` bytes: more than a client's socket buffers hold when it does not
    /// read (the server's rate limits must be off).
    pub async fn publish_bulky(&self, count: usize, bytes: usize) {
        let message = "m".repeat(bytes);
        for i in 0..count {
            let (status, body) = self
                .post(
                    "/api/v1/events",
                    json!({"type": "system.notification", "data": {"title": format!("{i}"), "message": message}}),
                )
                .await;
            assert_eq!(status, 202, "{body}");
        }
    }

    pub async fn post_raw(&self, path: &str, key: Option<&str>, body: String) -> (u16, Value) {
        let (status, _, body) = self.post_with(path, key, body, &[]).await;
        (status, body)
    }

    /// `POST` with extra headers; returns status, response headers and JSON body.
    pub async fn post_with(
        &self,
        path: &str,
        key: Option<&str>,
        body: String,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = reqwest::Client::new()
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.json().await.unwrap_or(Value::Null))
    }

    /// `GET path` with `key` (as `X-API-Key`); returns status and the body as text.
    pub async fn get_text(&self, path: &str, key: Option<&str>) -> (u16, String) {
        let mut req = reqwest::Client::new().get(self.url(path));
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut req = reqwest::Client::new().get(self.url(path));
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

impl TestServer {
    /// Starts the graceful shutdown (as SIGTERM would).
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestServer {
    /// Whether `serve` returned (its drain over) within `limit` after [`Self::shutdown`].
    pub async fn stopped_within(&mut self, limit: Duration) -> bool {
        let Some(served) = self.served.as_mut() else {
            return true;
        };
        match tokio::time::timeout(limit, served).await {
            Ok(result) => {
                self.served = None;
                result.expect("serve panicked").expect("serve failed");
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A port nothing listens on now (for a child process to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real `redis-server` on a free port, keeping nothing on disk; stopped on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    pub async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    pub async fn start_on(port: u16) -> Self {
        Self::spawn(port, &[]).await
    }

    async fn spawn(port: u16, extra: &[&str]) -> Self {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it)");
        let server = Self {
            port,
            child: Some(child),
        };
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !server.pings().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    async fn pings(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").await.is_ok()
            && s.read_exact(&mut buf).await.is_ok()
            && &buf == b"+PONG\r\n"
    }

    /// Kills the server (as a crash would) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real three-shard Redis Cluster on free ports, stopped (and its files removed) on drop.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    shards: Vec<RedisServer>,
    dir: std::path::PathBuf,
}

impl RedisCluster {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "roomcast-redis-cluster-{}-{}",
            std::process::id(),
            now_secs()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut shards = Vec::new();
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let conf = dir.join(format!("nodes-{port}.conf"));
            shards.push(
                RedisServer::spawn(
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        conf.to_str().unwrap(),
                        "--dir",
                        dir.to_str().unwrap(),
                    ],
                )
                .await,
            );
        }
        let ports: Vec<u16> = shards.iter().map(|s| s.port).collect();
        let status = std::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("redis-cli must be installed (redis-tools)");
        assert!(status.success(), "redis-cli --cluster create failed");
        let deadline = tokio::time::Instant::now() + DEADLINE;
        for port in &ports {
            loop {
                let out = std::process::Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .unwrap();
                if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cluster never became ok"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Self { ports, shards, dir }
    }

    /// `redis_url` for Roomcast: two of the shards are enough to discover the cluster.
    pub fn urls(&self) -> String {
        self.ports[..2]
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.shards.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn claims(sub: &str) -> TokenClaims {
    TokenClaims::new(sub, now_secs() + 3600)
}

pub fn token(claims: &TokenClaims) -> String {
    sign_hs256(SECRET, claims).unwrap()
}

/// A token for `sub` in `tenant` with the given project grant (`"*"`, or ids).
pub fn token_for(sub: &str, tenant: &str, projects: &[&str]) -> String {
    let mut c = claims(sub);
    c.tenant = Some(tenant.into());
    c.projects = match projects {
        ["*"] => Grant::All,
        ids => Grant::Some(
            ids.iter()
                .map(|i| roomcast::rooms::Id::parse(i).unwrap())
                .collect(),
        ),
    };
    token(&c)
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A Socket.IO client speaking the protocol over one WebSocket.
pub struct Client {
    ws: Ws,
    ns: String,
    next_ack: u64,
    /// Events received while waiting for something else: (name, payload).
    pending: VecDeque<(String, Value)>,
    pub established: Value,
    /// How long a read waits for the next message ([`DEADLINE`] unless changed).
    pub patience: Duration,
}

/// How to present the token in the handshake.
pub enum Auth<'a> {
    None,
    Payload(Value),
    Header(&'a str),
    Query(&'a str),
    /// `auth: {token: ""}` in the handshake and the real token in the query.
    EmptyPayloadThenQuery(&'a str),
}

impl Client {
    pub async fn connect(addr: SocketAddr, auth: Auth<'_>) -> Result<Self, String> {
        Self::connect_ns(addr, "/", auth).await
    }

    /// Opens the transport and connects to `ns`; `Err` carries the `connect_error` message,
    /// or the `code` of a handshake refused over HTTP.
    pub async fn connect_ns(addr: SocketAddr, ns: &str, auth: Auth<'_>) -> Result<Self, String> {
        Self::connect_with(addr, ns, auth, &[]).await
    }

    /// [`Self::connect_ns`] with extra HTTP headers on the websocket request.
    pub async fn connect_with(
        addr: SocketAddr,
        ns: &str,
        auth: Auth<'_>,
        headers: &[(&str, &str)],
    ) -> Result<Self, String> {
        let mut url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        if let Auth::Query(t) | Auth::EmptyPayloadThenQuery(t) = &auth {
            url.push_str(&format!("&token={t}"));
        }
        let mut req = url.into_client_request().unwrap();
        if let Auth::Header(t) = &auth {
            req.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        for (name, value) in headers {
            let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
            req.headers_mut().append(name, value.parse().unwrap());
        }
        let (ws, _) = match tokio_tungstenite::connect_async(req).await {
            Ok(ok) => ok,
            // Refused over HTTP before any session exists (`429 rate_limited`, ...): the
            // `code` of its body, else the status.
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let code = resp
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                    .and_then(|v| v["code"].as_str().map(str::to_owned));
                return Err(code.unwrap_or_else(|| format!("HTTP {}", resp.status())));
            }
            Err(e) => return Err(e.to_string()),
        };
        let mut client = Client {
            ws,
            ns: ns.to_owned(),
            next_ack: 0,
            pending: VecDeque::new(),
            established: Value::Null,
            patience: DEADLINE,
        };
        let open = client.recv_text().await.ok_or("no open packet")?;
        assert!(open.starts_with('0'), "engine.io open packet: {open}");
        let prefix = client.prefix();
        let connect = match &auth {
            Auth::Payload(v) => format!("40{prefix}{v}"),
            Auth::EmptyPayloadThenQuery(_) => format!("40{prefix}{}", json!({"token": ""})),
            _ => format!("40{prefix}"),
        };
        client.send(connect).await;
        loop {
            let text = client.recv_text().await.ok_or("closed during connect")?;
            let Some(sio) = text.strip_prefix('4') else {
                continue;
            };
            match client.split(sio) {
                ('0', rest) => {
                    assert!(rest.contains("\"sid\""), "connect packet: {rest}");
                    break;
                }
                ('4', rest) => {
                    let v: Value = serde_json::from_str(rest).unwrap();
                    return Err(v["message"].as_str().unwrap_or_default().to_owned());
                }
                _ => continue,
            }
        }
        client.established = client.event("connection.established").await;
        Ok(client)
    }

    fn prefix(&self) -> String {
        if self.ns == "/" {
            String::new()
        } else {
            format!("{},", self.ns)
        }
    }

    /// Splits a Socket.IO packet into its type digit and its body after the namespace.
    fn split<'a>(&self, packet: &'a str) -> (char, &'a str) {
        let Some(kind) = packet.chars().next() else {
            return ('?', "");
        };
        let rest = &packet[kind.len_utf8()..];
        let prefix = self.prefix();
        (kind, rest.strip_prefix(prefix.as_str()).unwrap_or(rest))
    }

    async fn send(&mut self, text: String) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.send(text.to_owned()).await;
    }

    /// Sends one text message without reading anything: `Ok(true)` once the server took
    /// it, `Ok(false)` when the connection is gone, `Err` when it hung for `limit` (the
    /// server neither reads nor closes).
    pub async fn try_send_raw(&mut self, text: &str, limit: Duration) -> Result<bool, ()> {
        match tokio::time::timeout(limit, self.ws.send(Message::text(text.to_owned()))).await {
            Ok(sent) => Ok(sent.is_ok()),
            Err(_) => Err(()),
        }
    }

    /// Sends one binary websocket message (a Socket.IO binary attachment).
    pub async fn send_binary(&mut self, data: Vec<u8>) {
        self.ws.send(Message::binary(data)).await.expect("send");
    }

    /// Next engine.io text message, answering pings; `None` when closed or past the deadline.
    async fn recv_text(&mut self) -> Option<String> {
        loop {
            let msg = tokio::time::timeout(self.patience, self.ws.next())
                .await
                .ok()??
                .ok()?;
            match msg {
                Message::Text(t) => {
                    if t.as_str() == "2" {
                        self.send("3".into()).await;
                        continue;
                    }
                    return Some(t.to_string());
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Reads packets until an EVENT or ACK arrives: returns (Some(name), args) or (None, ack).
    async fn recv_packet(&mut self) -> Option<(Option<String>, u64, Value)> {
        loop {
            let text = self.recv_text().await?;
            let Some(sio) = text.strip_prefix('4') else {
                continue;
            };
            let (kind, rest) = self.split(sio);
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            let body: Value = serde_json::from_str(&rest[digits.len()..]).ok()?;
            let id = digits.parse().unwrap_or(0);
            match kind {
                '2' => {
                    let name = body[0].as_str()?.to_owned();
                    return Some((Some(name), id, body[1].clone()));
                }
                '3' => return Some((None, id, body[0].clone())),
                '1' => return None,
                _ => continue,
            }
        }
    }

    /// Reads one message (answering a ping, keeping an event for later calls): a socket
    /// that waits for something else meanwhile stays alive (a client that reads nothing for
    /// the ping interval plus timeout is rightly dropped). Cancel-safe between messages.
    pub async fn pump(&mut self) {
        if let Some((Some(name), _, payload)) = self.recv_packet().await {
            self.pending.push_back((name, payload));
        }
    }

    /// Waits for the event `name`, keeping others for later calls.
    pub async fn event(&mut self, name: &str) -> Value {
        self.try_event(name)
            .await
            .unwrap_or_else(|| panic!("no {name:?} event within {DEADLINE:?}"))
    }

    /// The next event of any name (kept ones first); `None` when closed or past the deadline.
    pub async fn next_event(&mut self) -> Option<(String, Value)> {
        if let Some(kept) = self.pending.pop_front() {
            return Some(kept);
        }
        loop {
            if let (Some(n), _, v) = self.recv_packet().await? {
                return Some((n, v));
            }
        }
    }

    pub async fn try_event(&mut self, name: &str) -> Option<Value> {
        if let Some(i) = self.pending.iter().position(|(n, _)| n == name) {
            return self.pending.remove(i).map(|(_, v)| v);
        }
        loop {
            match self.recv_packet().await? {
                (Some(n), _, v) if n == name => return Some(v),
                (Some(n), _, v) => self.pending.push_back((n, v)),
                (None, _, _) => {}
            }
        }
    }

    /// True once the server disconnected this socket (a DISCONNECT packet or the transport
    /// closing), within the deadline.
    pub async fn closed(&mut self) -> bool {
        loop {
            match tokio::time::timeout(DEADLINE, self.ws.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(Message::Text(t)))) => {
                    let (kind, _) = self.split(t.strip_prefix('4').unwrap_or(""));
                    if t.starts_with('4') && kind == '1' {
                        return true;
                    }
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// How the connection ends: `"engine.io close"` (packet `1`), `"socket.io disconnect"`
    /// (`41`), `"transport"` (websocket close or end of stream) or `"open"` (still open at the
    /// deadline). Stock clients reconnect by themselves only after `"transport"`.
    pub async fn ending(&mut self) -> &'static str {
        loop {
            match tokio::time::timeout(DEADLINE, self.ws.next()).await {
                Err(_) => return "open",
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return "transport",
                Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "1" => return "engine.io close",
                Ok(Some(Ok(Message::Text(t)))) if t.starts_with("41") => {
                    return "socket.io disconnect";
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Leaves like socket.io-client's `disconnect()`: a DISCONNECT packet and, right behind
    /// it in the same write, the transport's close.
    pub async fn disconnect(mut self) {
        let packet = format!("41{}", self.prefix());
        let _ = self.ws.feed(Message::text(packet)).await;
        let _ = self.ws.feed(Message::Close(None)).await;
        let _ = self.ws.flush().await;
        // Until the server's close answers ours, so the server has read both.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(DEADLINE, self.ws.next()).await {}
    }

    /// Every event received so far and not yet consumed.
    pub fn received(&self) -> Vec<String> {
        self.pending.iter().map(|(n, _)| n.clone()).collect()
    }

    pub async fn emit_with_ack(&mut self, event: &str, data: Value) -> Value {
        let id = self.next_ack;
        self.next_ack += 1;
        let prefix = self.prefix();
        self.send(format!("42{prefix}{id}{}", json!([event, data])))
            .await;
        loop {
            match self.recv_packet().await {
                Some((None, ack, v)) if ack == id => return v,
                Some((Some(n), _, v)) => self.pending.push_back((n, v)),
                Some(_) => {}
                None => panic!("no ack for {event:?} within {DEADLINE:?}"),
            }
        }
    }

    /// [`Self::emit_with_ack`], also returning every event that came before the ack, in
    /// the order they came (those kept from earlier reads first).
    pub async fn emit_with_ack_seen(
        &mut self,
        event: &str,
        data: Value,
    ) -> (Vec<(String, Value)>, Value) {
        let before = self.pending.len();
        let ack = self.emit_with_ack(event, data).await;
        assert!(self.pending.len() >= before);
        (self.pending.drain(..).collect(), ack)
    }

    pub async fn emit(&mut self, event: &str, data: Value) {
        let prefix = self.prefix();
        self.send(format!("42{prefix}{}", json!([event, data])))
            .await;
    }

    pub async fn subscribe(&mut self, room: &str) -> Value {
        self.emit_with_ack("subscribe", json!({ "room": room }))
            .await
    }

    /// Asserts no event `name` arrived before `marker` (published after it) did.
    pub async fn assert_not_before(&mut self, name: &str, marker: &str) {
        self.event(marker).await;
        assert!(
            !self.pending.iter().any(|(n, _)| n == name),
            "unexpected {name:?} event; received {:?}",
            self.received()
        );
    }
}

/// A `roomcast serve` process (the real binary) in a directory of its own, for tests that
/// stop it with a signal and start it again on the same data.
pub struct BinaryNode {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl BinaryNode {
    /// Starts the binary in `dir` (with `[storage] path = "data"` when `storage`), on a new
    /// port, and waits until `/health` answers.
    pub async fn start(dir: &std::path::Path, storage: bool) -> Self {
        let port = free_port();
        let storage = if storage {
            "[storage]\npath = \"data\"\n"
        } else {
            ""
        };
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nbind = \"127.0.0.1:{port}\"\nshutdown_timeout_secs = 2\n\
                 [auth]\njwt_secret = \"{SECRET}\"\n\
                 [[api_keys]]\nname = \"full\"\nkey = \"{KEY}\"\nscopes = [\"publish\", \"read\"]\n\
                 {storage}"
            ),
        )
        .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .args(["serve", "--config"])
            .arg(&config)
            .current_dir(dir)
            .env_remove("ROOMCAST_CONFIG")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("run roomcast");
        let node = Self {
            child,
            addr: ([127, 0, 0, 1], port).into(),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let up = reqwest::get(format!("http://{}/health", node.addr)).await;
            if up.is_ok_and(|r| r.status().is_success()) {
                return node;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the process with `signal` and waits until it is gone.
    pub async fn stop(mut self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not stop on {signal}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for BinaryNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
