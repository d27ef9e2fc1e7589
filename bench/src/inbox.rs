//! What one bench socket received, across reconnects: which `bench.tick` / `bench.chat`
//! events (by their publish number `data.n`), how late, duplicates and order, the cursor it
//! resumes from, and which events it published itself (`chat`).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use crate::measure::clock;

/// The event the HTTP publishers send; `data` is `{t: send time (µs), n: publish number}`.
pub const TICK: &str = "bench.tick";
/// The event sockets publish into their rooms (`chat`), with the same `data`.
pub const CHAT: &str = "bench.chat";

/// Counters all sockets share, read while publishing to see whether deliveries still come.
#[derive(Default)]
pub struct Progress {
    /// Every event received, duplicates included.
    pub received: AtomicU64,
    /// First receipts only.
    pub distinct: AtomicU64,
}

/// `42["bench.tick", envelope, offset?]` (or `bench.chat`): socket.io's connection state recovery appends
/// the packet's offset as a last argument; Roomcast puts `seq`/`epoch` in the envelope.
/// (A `/ws/json` frame is the envelope alone.)
#[derive(Deserialize)]
struct Frame<'a>(
    IgnoredAny,
    #[serde(borrow)] Envelope<'a>,
    #[serde(default, borrow)] Option<Cow<'a, str>>,
);

#[derive(Deserialize)]
struct Envelope<'a> {
    data: Tick,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default, borrow)]
    epoch: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Tick {
    t: u64,
    n: u64,
}

/// Where a socket resumes after a drop: Roomcast's `auth.since` `{room: {epoch, seq}}`, or
/// socket.io's connection state recovery `auth.{pid, offset}`, whichever the server gave.
#[derive(Default)]
pub struct Cursor {
    since: Option<(String, u64)>,
    pid: Option<String>,
    offset: Option<String>,
}

impl Cursor {
    /// Remembers the private session id of a CONNECT answer `{sid, pid?}`.
    pub fn connected(&mut self, answer: &str) {
        if let Ok(v) = serde_json::from_str::<Value>(answer) {
            self.pid = v["pid"].as_str().map(str::to_owned);
        }
    }

    /// The handshake auth payload that resumes `room` where this cursor stands.
    pub fn auth(&self, token: &str, room: &str) -> Value {
        let mut auth = json!({ "token": token });
        if let Some((epoch, seq)) = &self.since {
            auth["since"] = json!({ room: { "epoch": epoch, "seq": seq } });
        }
        if let (Some(pid), Some(offset)) = (&self.pid, &self.offset) {
            auth["pid"] = json!(pid);
            auth["offset"] = json!(offset);
        }
        auth
    }

    /// Whether a drop can be resumed from here: Roomcast gave a position or an event, or
    /// socket.io an offset.
    pub fn resumable(&self) -> bool {
        self.since.is_some() || (self.pid.is_some() && self.offset.is_some())
    }

    /// Takes `room`'s position `{epoch, seq}` from `positions` (a `subscribe` ack's or
    /// `connection.established`'s), unless the cursor is already further in that epoch.
    pub fn position(&mut self, positions: &Value, room: &str) {
        let p = &positions[room];
        if let (Some(epoch), Some(seq)) = (p["epoch"].as_str(), p["seq"].as_u64()) {
            self.move_to(epoch, seq);
        }
    }

    fn move_to(&mut self, epoch: &str, seq: u64) {
        match &mut self.since {
            Some((e, s)) if e == epoch => *s = (*s).max(seq),
            _ => self.since = Some((epoch.to_owned(), seq)),
        }
    }

    fn advance(&mut self, env: &Envelope, offset: Option<Cow<str>>) {
        if let (Some(seq), Some(epoch)) = (env.seq, &env.epoch) {
            self.move_to(epoch, seq);
        }
        if let Some(offset) = offset {
            let o = self.offset.get_or_insert_with(String::new);
            o.clear();
            o.push_str(&offset);
        }
    }
}

/// A set of publish numbers, which are dense from 0.
#[derive(Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn has(&self, n: u64) -> bool {
        self.0
            .get((n / 64) as usize)
            .is_some_and(|w| w & (1 << (n % 64)) != 0)
    }

    /// Adds `n`; false when it was there already.
    fn insert(&mut self, n: u64) -> bool {
        let (word, bit) = ((n / 64) as usize, 1 << (n % 64));
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let fresh = self.0[word] & bit == 0;
        self.0[word] |= bit;
        fresh
    }
}

#[derive(Default)]
pub struct Inbox {
    /// Room index this socket listens to, if it subscribed.
    pub room: Option<usize>,
    seen: Bits,
    /// What this socket published and the server accepted: the room's other sockets get
    /// it, this one does not.
    own: Bits,
    pub own_count: u64,
    highest: Option<u64>,
    pub received: u64,
    pub duplicated: u64,
    /// Arrived after a higher publish number (meaningful with sequential publishing).
    pub out_of_order: u64,
    pub latencies_us: Vec<u32>,
    pub cursor: Cursor,
    pub handshake_us: Vec<u32>,
    pub subscribe_us: Vec<u32>,
    /// From reconnecting (after the pause that follows a drop) to being back in the room.
    pub reconnect_us: Vec<u32>,
    pub recovered: u64,
    pub not_recovered: u64,
    /// Joined its room (or connected, without one) at least once.
    pub joined: bool,
    /// Ended with an error (its missing events count as lost).
    pub failed: bool,
}

impl Inbox {
    pub fn new(room: Option<usize>) -> Self {
        Self {
            room,
            ..Self::default()
        }
    }

    pub fn has(&self, n: u64) -> bool {
        self.seen.has(n)
    }

    /// Whether `n` is this socket's own accepted publish.
    pub fn sent(&self, n: u64) -> bool {
        self.own.has(n)
    }

    /// Records that the server accepted this socket's publish `n`.
    pub fn accepted(&mut self, n: u64) {
        if self.own.insert(n) {
            self.own_count += 1;
        }
    }

    /// Records one event (`42[...]`, or a `/ws/json` envelope); anything but `bench.tick` and
    /// `bench.chat` (e.g. Roomcast's `presence.joined`) is ignored.
    pub fn on_event(
        &mut self,
        packet: &crate::proto::Text,
        progress: &Progress,
    ) -> anyhow::Result<()> {
        if !packet.is_event(TICK) && !packet.is_event(CHAT) {
            return Ok(());
        }
        let arrived = clock();
        let (env, offset) = if packet.is_plain() {
            (serde_json::from_str(packet.json())?, None)
        } else {
            let Frame(_, env, offset) = serde_json::from_str(packet.json())?;
            (env, offset)
        };
        let n = env.data.n;
        self.received += 1;
        progress.received.fetch_add(1, Ordering::Relaxed);
        if !self.seen.insert(n) {
            self.duplicated += 1;
            return Ok(());
        }
        progress.distinct.fetch_add(1, Ordering::Relaxed);
        if self.highest.is_some_and(|h| n < h) {
            self.out_of_order += 1;
        }
        self.highest = Some(self.highest.map_or(n, |h| h.max(n)));
        let latency = arrived.saturating_sub(env.data.t);
        self.latencies_us.push(latency.min(u32::MAX as u64) as u32);
        self.cursor.advance(&env, offset);
        Ok(())
    }
}
