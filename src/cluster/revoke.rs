//! A revocation's hub connections on the other nodes: `POST /api/v1/users/{id}/disconnect`
//! closes the user's SSE, `/ws/json` and lean Socket.IO connections (the members of
//! [`SseHub`]) on every node, and counts them.
//!
//! The asking node publishes a [`Request`] on `p:revoke`; every other node closes its
//! connections in the request's rooms and answers how many on `p:revoked#<asker>`; the asker
//! adds up the answers of the live nodes, waiting at most `cluster.request_timeout_ms` (as
//! socketioxide's own requests do). A node that does not answer in time is not counted.
//! The count comes from the node that closes: the adapter's disconnect request, which also
//! reaches every node, is left to socketioxide's sockets (the driver's tap ignores it).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use socketioxide_redis::drivers::MessageStream;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::redis_conn::RedisConn;
use crate::sse::SseHub;

/// "Close your connections in these rooms and tell me how many": from `from` to every node.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Request {
    id: Uuid,
    from: String,
    rooms: Vec<String>,
}

/// A node's answer to a [`Request`], on the asker's answer channel.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Answer {
    id: Uuid,
    node: String,
    closed: u64,
}

/// This node's side of revocations: its requests waiting for answers, and the channels.
pub struct Revocations {
    conn: RedisConn,
    prefix: String,
    node_id: String,
    timeout: Duration,
    /// Requests of this node still waiting, by id: where their answers go.
    pending: Mutex<HashMap<Uuid, mpsc::UnboundedSender<Answer>>>,
}

impl Revocations {
    pub fn new(conn: RedisConn, prefix: &str, node_id: &str, timeout: Duration) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            node_id: node_id.to_owned(),
            timeout,
            pending: Mutex::default(),
        }
    }

    fn requests(&self) -> String {
        format!("{}:revoke", self.prefix)
    }

    fn answers(&self, node: &str) -> String {
        format!("{}:revoked#{node}", self.prefix)
    }

    /// What this node listens to: every node's requests, and the answers to its own.
    pub fn channels(&self) -> Vec<String> {
        vec![self.requests(), self.answers(&self.node_id)]
    }

    /// Has the nodes `others` close their hub connections in `rooms` and returns how many
    /// they closed, once each has answered or the timeout has passed. Every node hears the
    /// request (one that has not sent a heartbeat yet too, uncounted if it answers late);
    /// `Err` only when the request could not be published.
    pub async fn close_elsewhere(
        &self,
        others: HashSet<String>,
        rooms: &[Cow<'static, str>],
    ) -> redis::RedisResult<u64> {
        let request = Request {
            id: Uuid::now_v7(),
            from: self.node_id.clone(),
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
        };
        let (tx, mut answers) = mpsc::unbounded_channel();
        let _waiting = Waiting::new(&self.pending, request.id, tx);
        let bytes = serde_json::to_vec(&request).unwrap_or_default();
        self.conn.clone().publish(self.requests(), bytes).await?;
        let mut missing = others;
        let mut closed = 0;
        let deadline = tokio::time::Instant::now() + self.timeout;
        while !missing.is_empty() {
            match tokio::time::timeout_at(deadline, answers.recv()).await {
                Ok(Some(answer)) => {
                    missing.remove(&answer.node);
                    closed += answer.closed;
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        nodes = ?missing,
                        timeout_ms = self.timeout.as_millis() as u64,
                        "revocation: no answer in time; those nodes' connections are not counted"
                    );
                    break;
                }
            }
        }
        Ok(closed)
    }

    /// Answers the other nodes' requests with `hub`'s connections and hands this node's
    /// requests their answers, until `messages` ends.
    pub async fn run(
        self: Arc<Self>,
        hub: Arc<SseHub>,
        mut messages: MessageStream<(String, Vec<u8>)>,
    ) {
        let requests = self.requests();
        while let Some((channel, bytes)) = messages.next().await {
            if channel == requests {
                match serde_json::from_slice::<Request>(&bytes) {
                    Ok(request) if request.from != self.node_id => self.answer(&hub, request),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("unreadable revocation request: {e}"),
                }
                continue;
            }
            let answer = match serde_json::from_slice::<Answer>(&bytes) {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::warn!("unreadable revocation answer: {e}");
                    continue;
                }
            };
            let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            // None: the request was answered by every node or timed out already.
            if let Some(tx) = pending.get(&answer.id) {
                let _ = tx.send(answer);
            }
        }
    }

    /// Closes `hub`'s connections in the request's rooms, then tells the asker how many (in
    /// the background: a slow Redis does not hold up the next request).
    fn answer(&self, hub: &SseHub, request: Request) {
        let rooms: Vec<Cow<'static, str>> = request.rooms.into_iter().map(Cow::Owned).collect();
        let answer = Answer {
            id: request.id,
            node: self.node_id.clone(),
            closed: hub.close_rooms(&rooms),
        };
        let channel = self.answers(&request.from);
        let mut conn = self.conn.clone();
        tokio::spawn(async move {
            let bytes = serde_json::to_vec(&answer).unwrap_or_default();
            if let Err(e) = conn.publish(channel, bytes).await {
                tracing::warn!(closed = answer.closed, "revocation answer not sent: {e}");
            }
        });
    }
}

/// A request's entry among the pending ones, removed when the asker stops waiting (done,
/// timed out or dropped).
struct Waiting<'a> {
    pending: &'a Mutex<HashMap<Uuid, mpsc::UnboundedSender<Answer>>>,
    id: Uuid,
}

impl<'a> Waiting<'a> {
    fn new(
        pending: &'a Mutex<HashMap<Uuid, mpsc::UnboundedSender<Answer>>>,
        id: Uuid,
        tx: mpsc::UnboundedSender<Answer>,
    ) -> Self {
        pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        Self { pending, id }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::driver::ResilientDriver;
    use crate::config::ClusterMode;
    use crate::sse::Kind;

    /// A real `redis-server` on a free port, keeping nothing on disk; killed on drop.
    struct Redis(std::process::Child);

    impl Redis {
        /// Returns once it answers `PING` (the test has no heartbeat to subscribe again after
        /// a refused connection).
        async fn start(port: u16) -> Self {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server must be installed (.ci/run installs it)");
            let redis = Self(child);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let mut pong = [0u8; 7];
                if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                    && s.write_all(b"PING\r\n").await.is_ok()
                    && s.read_exact(&mut pong).await.is_ok()
                    && &pong == b"+PONG\r\n"
                {
                    return redis;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "redis-server did not start"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    impl Drop for Redis {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A node: its revocations, answering with `hub` once subscribed.
    async fn node(url: &str, id: &str, hub: Arc<SseHub>) -> Arc<Revocations> {
        let driver = ResilientDriver::new(ClusterMode::Standalone, url).unwrap();
        let revocations = Arc::new(Revocations::new(
            driver.connection(),
            "rv",
            id,
            Duration::from_millis(400),
        ));
        let messages = driver.listen(revocations.channels(), 16);
        tokio::spawn(revocations.clone().run(hub, messages));
        // Subscribed in the background: wait until Redis counts this node on its channel.
        let answers = revocations.answers(id);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while driver.connection().subscribers(&answers).await.unwrap_or(0) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} never subscribed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        revocations
    }

    fn member(hub: &Arc<SseHub>, kind: Kind, room: &str) -> crate::sse::Queue {
        let queue = hub.open_lean(kind, "sid", 8);
        hub.join(&queue.conn, [room.to_owned()]);
        queue
    }

    /// The asker counts what the other nodes closed, each node closes only the user's
    /// connections, the asker's own are left to it, and a silent node costs the timeout and
    /// counts nothing.
    #[tokio::test]
    async fn other_nodes_close_the_users_connections_and_say_how_many() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let _redis = Redis::start(port).await;
        let url = format!("redis://127.0.0.1:{port}");
        let (hub_a, hub_b) = (Arc::new(SseHub::new(8)), Arc::new(SseHub::new(8)));
        let on_a = member(&hub_a, Kind::Json, "#default/alice");
        let on_b = [
            member(&hub_b, Kind::Socket { ns: "/" }, "#default/alice"),
            member(&hub_b, Kind::Json, "#default/alice"),
            member(&hub_b, Kind::Sse, "#default/alice"),
        ];
        let editor = member(&hub_b, Kind::Editor, "#default/alice");
        let bob = member(&hub_b, Kind::Socket { ns: "/" }, "#default/bob");
        let a = node(&url, "a", hub_a).await;
        let _b = node(&url, "b", hub_b).await;

        let rooms = [Cow::Borrowed("#default/alice")];
        let closed = a.close_elsewhere(HashSet::from(["b".to_owned()]), &rooms);
        assert_eq!(closed.await.unwrap(), 3);
        assert!(on_b.iter().all(|q| q.conn.is_closed()));
        assert!(editor.conn.is_closed(), "closed, if not counted");
        assert!(!bob.conn.is_closed());
        assert!(
            !on_a.conn.is_closed(),
            "a node does not answer its own request"
        );
        assert!(a.pending.lock().unwrap().is_empty());

        // Nothing left to close at b; c is silent.
        let started = tokio::time::Instant::now();
        let others = HashSet::from(["b".to_owned(), "c".to_owned()]);
        assert_eq!(a.close_elsewhere(others, &rooms).await.unwrap(), 0);
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert!(a.pending.lock().unwrap().is_empty());
    }
}
