//! Sockets publishing into their own rooms (`chat`): each sends the `publish` command on its
//! connection at a fixed rate and matches the acks. A [`Ledger`] all of them share numbers
//! the publishes and keeps, per room, those the server accepted, which is what the room's
//! other sockets must receive.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::inbox::{CHAT, Inbox};
use crate::measure::clock;
use crate::proto::Conn;

/// The publishes of a run, whoever sent them.
pub struct Ledger {
    /// The next publish number: one sequence for every socket, so an inbox's bitset tells
    /// the events of its room apart whoever published them.
    next: AtomicU64,
    /// Sent (or about to be), ack not in yet.
    in_flight: AtomicU64,
    /// Set by [`Ledger::close`]: no publish starts after it.
    closed: AtomicBool,
    /// Publishes still without an ack when `close` gave up waiting.
    unanswered: AtomicU64,
    /// Per room index, the publish numbers the server accepted.
    accepted: Mutex<Vec<Vec<u64>>>,
    /// Refused publishes per error code.
    refusals: Mutex<BTreeMap<String, u64>>,
}

impl Ledger {
    pub fn new(rooms: usize) -> Arc<Self> {
        Arc::new(Self {
            next: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            unanswered: AtomicU64::new(0),
            accepted: Mutex::new(vec![Vec::new(); rooms]),
            refusals: Mutex::default(),
        })
    }

    /// Ends publishing and waits until every publish has its ack, at most `limit`. A
    /// socket may not have seen the phase change yet: this, not the phase, decides.
    pub async fn close(&self, limit: Duration) {
        self.closed.store(true, Ordering::SeqCst);
        let give_up = Instant::now() + limit;
        while self.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let unanswered = self.in_flight.load(Ordering::SeqCst);
        self.unanswered.store(unanswered, Ordering::Relaxed);
    }

    pub fn published(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    pub fn accepted(&self) -> Vec<Vec<u64>> {
        self.accepted.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Refusals per code, with the publishes [`Ledger::close`] found unanswered as `no_ack`.
    pub fn refusals(&self) -> BTreeMap<String, u64> {
        let mut refusals = self.refusals.lock().map(|r| r.clone()).unwrap_or_default();
        let unanswered = self.unanswered.load(Ordering::Relaxed);
        if unanswered > 0 {
            refusals.insert("no_ack".into(), unanswered);
        }
        refusals
    }

    fn accept(&self, room: usize, n: u64) {
        if let Ok(mut rooms) = self.accepted.lock() {
            rooms[room].push(n);
        }
    }

    fn refuse(&self, code: &str, answer: &str) {
        if let Ok(mut refusals) = self.refusals.lock() {
            let count = refusals.entry(code.to_owned()).or_default();
            if *count == 0 {
                eprintln!("publish refused: {answer}");
            }
            *count += 1;
        }
    }
}

/// How a socket talks: `every` between its publishes, counted in `ledger`.
#[derive(Clone)]
pub struct Talk {
    pub every: Duration,
    pub ledger: Arc<Ledger>,
}

/// One socket's publishing: when the next one is due, and the acks it awaits.
pub struct Talker {
    talk: Talk,
    room: (usize, String),
    next_at: Option<Instant>,
    /// Ack id to publish number.
    pending: HashMap<u64, u64>,
}

impl Talker {
    pub fn new(talk: Talk, room: (usize, String)) -> Self {
        Self {
            talk,
            room,
            next_at: None,
            pending: HashMap::new(),
        }
    }

    /// Sleeps until the next publish is due; the first at a random point of the first
    /// interval, so that the sockets do not all publish at the same instant. Cancel-safe.
    async fn due(&mut self) {
        let every = self.talk.every;
        let at = *self
            .next_at
            .get_or_insert_with(|| Instant::now() + every.mul_f64(rand::rng().random()));
        tokio::time::sleep_until(at).await;
    }

    /// Publishes the next `bench.chat` into the room, unless the ledger is closed.
    pub async fn say(&mut self, conn: &mut Conn) -> anyhow::Result<()> {
        let ledger = &self.talk.ledger;
        // Counted in flight before the check, so that `close` either sees this publish and
        // waits for its ack, or this sees `closed` and backs out: none slips past both.
        ledger.in_flight.fetch_add(1, Ordering::SeqCst);
        if ledger.closed.load(Ordering::SeqCst) {
            ledger.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Ok(());
        }
        let n = ledger.next.fetch_add(1, Ordering::Relaxed);
        let command = json!({"room": self.room.1, "event": CHAT, "data": {"t": clock(), "n": n}});
        let id = conn.emit_with_ack("publish", &command).await?;
        self.pending.insert(id, n);
        // A socket that falls behind (a busy generator) publishes less, never in a burst.
        let now = Instant::now();
        self.next_at = self.next_at.map(|at| (at + self.talk.every).max(now));
        Ok(())
    }

    /// Takes the ack `id` with its `answer` (`[{ok, ...}]`) if it answers one of this
    /// socket's publishes.
    pub fn answered(&mut self, id: u64, answer: &str, inbox: &mut Inbox) {
        let Some(n) = self.pending.remove(&id) else {
            return;
        };
        let ledger = &self.talk.ledger;
        ledger.in_flight.fetch_sub(1, Ordering::SeqCst);
        let reply = serde_json::from_str::<Value>(answer).unwrap_or_default();
        if reply[0]["ok"] == true {
            ledger.accept(self.room.0, n);
            inbox.accepted(n);
        } else {
            let code = reply[0]["error"]["code"]
                .as_str()
                .unwrap_or("unreadable_ack");
            ledger.refuse(code, answer);
        }
    }
}

/// Until `talker`'s next publish is due; never without one.
pub async fn due(talker: &mut Option<Talker>) {
    match talker {
        Some(t) => t.due().await,
        None => std::future::pending().await,
    }
}
