//! One bench socket's life: handshake, subscribe to its room, record events until told to
//! stop; in `storm`, also drop the connection now and then and come back where it left off;
//! in `chat`, also publish into its room.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, ensure};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::inbox::{Inbox, Progress};
use crate::measure::{clock, micros_since};
use crate::proto::{Conn, Packet, Protocol};
use crate::talk::{self, Talk, Talker};

/// Where a run is; sockets watch it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Phase {
    /// Connecting and publishing: storm sockets may drop.
    Running,
    /// Sockets with a [`Talk`] publish (set once they all joined, so that every member
    /// of a room is there for the first one).
    Talking,
    /// Publishing is over: no more drops, deliveries drain.
    Calm,
    /// Close and hand in the inbox.
    Stop,
}

/// State every socket of a run shares.
pub struct Shared {
    /// Limits sockets mid-handshake (connected ones do not hold a permit).
    pub gate: Semaphore,
    /// One permit per socket that joined, or failed before it could.
    pub ready: Semaphore,
    pub progress: Progress,
    /// Sockets between a drop and being back in their room.
    pub reconnecting: AtomicU64,
    pub phase: watch::Sender<Phase>,
}

impl Shared {
    pub fn new(connect_concurrency: usize) -> Arc<Self> {
        Arc::new(Self {
            gate: Semaphore::new(connect_concurrency),
            ready: Semaphore::new(0),
            progress: Progress::default(),
            reconnecting: AtomicU64::new(0),
            phase: watch::Sender::new(Phase::Running),
        })
    }
}

/// How a storm socket drops: after a random interval (uniform, mean `every`), it closes
/// the TCP connection and, after a random pause of up to `max_pause`, reconnects.
#[derive(Clone, Copy, Debug)]
pub struct Drops {
    pub every: Duration,
    pub max_pause: Duration,
}

impl Drops {
    fn interval(&self) -> Duration {
        self.every.mul_f64(rand::rng().random_range(0.0..2.0))
    }

    fn pause(&self) -> Duration {
        self.max_pause.mul_f64(rand::rng().random_range(0.0..1.0))
    }
}

/// What one socket does.
pub struct Plan {
    pub index: usize,
    /// Socket `i` connects to `urls[i % len]`; its k-th reconnect goes to `urls[(i + k) % len]`,
    /// so in a cluster a dropped socket comes back at another node.
    pub urls: Arc<[String]>,
    pub token: String,
    pub protocol: Protocol,
    /// Room to subscribe to and its index; `None` only connects.
    pub room: Option<(usize, String)>,
    pub drops: Option<Drops>,
    /// Publish into `room` while the phase is [`Phase::Talking`].
    pub talk: Option<Talk>,
}

impl Plan {
    fn url(&self, reconnects: usize) -> &str {
        &self.urls[(self.index + reconnects) % self.urls.len()]
    }
}

/// Runs one socket until [`Phase::Stop`]; its inbox, marked failed on an error.
pub async fn life(plan: Plan, shared: Arc<Shared>) -> Inbox {
    let mut inbox = Inbox::new(plan.room.as_ref().map(|(i, _)| *i));
    if let Err(e) = live(&plan, &shared, &mut inbox).await {
        eprintln!("socket {}: {e:#}", plan.index);
        inbox.failed = true;
        if !inbox.joined {
            shared.ready.add_permits(1);
        }
    }
    inbox
}

async fn live(plan: &Plan, shared: &Shared, inbox: &mut Inbox) -> anyhow::Result<()> {
    let mut phase = shared.phase.subscribe();
    let mut conn = {
        let _slot = shared.gate.acquire().await?;
        let auth = json!({ "token": plan.token });
        let (mut conn, established) = handshake(plan, 0, &auth, inbox, shared).await?;
        if let Some((_, room)) = &plan.room {
            // A room the server put the socket in (`global`, `user:`) has its position here.
            inbox.cursor.position(&established["positions"], room);
        }
        if let Some((_, room)) = plan.room.as_ref().filter(|(_, r)| !joined_at_connect(r)) {
            subscribe(&mut conn, room, inbox, shared).await?;
        }
        conn
    };
    inbox.joined = true;
    shared.ready.add_permits(1);
    let mut talker = plan
        .talk
        .clone()
        .zip(plan.room.clone())
        .map(|(t, r)| Talker::new(t, r));
    let mut reconnects = 0;
    loop {
        let drop_at = match plan.drops {
            Some(d) if *phase.borrow() == Phase::Running => Some(Instant::now() + d.interval()),
            _ => None,
        };
        match listen(&mut conn, inbox, shared, &mut phase, drop_at, &mut talker).await? {
            Wake::Stop => return Ok(()),
            // Nothing to resume from (the Node reference before the first event): stay and
            // try later. Roomcast gives a position with the subscribe ack.
            Wake::Drop if !inbox.cursor.resumable() => {}
            Wake::Drop => {
                drop(conn);
                reconnects += 1;
                conn = come_back(plan, reconnects, shared, inbox).await?;
            }
            Wake::Phase => {}
        }
    }
}

enum Wake {
    Drop,
    /// The phase changed, to anything but `Stop`.
    Phase,
    Stop,
}

/// Records events (and, talking, publishes) until the phase changes or it is time to drop.
async fn listen(
    conn: &mut Conn,
    inbox: &mut Inbox,
    shared: &Shared,
    phase: &mut watch::Receiver<Phase>,
    drop_at: Option<Instant>,
    talker: &mut Option<Talker>,
) -> anyhow::Result<Wake> {
    let now = *phase.borrow_and_update();
    if now == Phase::Stop {
        return Ok(Wake::Stop);
    }
    let talking = now == Phase::Talking;
    let far = Instant::now() + Duration::from_secs(86_400);
    let drop_time = tokio::time::sleep_until(drop_at.unwrap_or(far));
    tokio::pin!(drop_time);
    loop {
        let msg = tokio::select! {
            changed = phase.changed() => {
                let stop = changed.is_err() || *phase.borrow_and_update() == Phase::Stop;
                return Ok(if stop { Wake::Stop } else { Wake::Phase });
            }
            () = &mut drop_time, if drop_at.is_some() => return Ok(Wake::Drop),
            () = talk::due(talker), if talking => {
                if let Some(t) = talker {
                    t.say(conn).await?;
                }
                continue;
            }
            msg = conn.recv() => msg,
        };
        let Some(msg) = msg else {
            bail!("the server closed the connection")
        };
        match conn.decode(msg?).await? {
            Some(Packet::Event(e)) => inbox.on_event(&e, &shared.progress)?,
            Some(Packet::Ack(id, answer)) => {
                if let Some(t) = talker {
                    t.answered(id, answer.json(), inbox);
                }
            }
            Some(Packet::Disconnected) => bail!("the server disconnected the socket"),
            _ => {}
        }
    }
}

/// Reconnects after a drop with the cursor in the handshake; subscribes again unless the
/// server recovered the room (then the missed events follow, before live ones).
async fn come_back(
    plan: &Plan,
    reconnects: usize,
    shared: &Shared,
    inbox: &mut Inbox,
) -> anyhow::Result<Conn> {
    shared.reconnecting.fetch_add(1, Ordering::Relaxed);
    let result = async {
        if let Some(d) = plan.drops {
            tokio::time::sleep(d.pause()).await;
        }
        // Timed from the end of the pause: what the server makes a reconnect cost.
        let started = clock();
        let _slot = shared.gate.acquire().await?;
        let room = plan.room.as_ref().map_or("", |(_, r)| r.as_str());
        let auth = inbox.cursor.auth(&plan.token, room);
        let (mut conn, established) = handshake(plan, reconnects, &auth, inbox, shared).await?;
        if established["recovered"] == true {
            inbox.recovered += 1;
        } else {
            inbox.not_recovered += 1;
            if joined_at_connect(room) {
                inbox.cursor.position(&established["positions"], room);
            } else if !room.is_empty() {
                subscribe(&mut conn, room, inbox, shared).await?;
            }
        }
        inbox.reconnect_us.push(micros_since(started));
        Ok(conn)
    }
    .await;
    shared.reconnecting.fetch_sub(1, Ordering::Relaxed);
    result
}

/// Whether the server puts every socket in `room` when it connects (no subscribe needed).
fn joined_at_connect(room: &str) -> bool {
    room == "global" || room.starts_with("user:")
}

/// Opens the connection of the `reconnects`-th attempt and connects with `auth`; returns
/// it with `connection.established`. Events that arrive first (socket.io replays missed
/// packets before its CONNECT answer) are recorded.
async fn handshake(
    plan: &Plan,
    reconnects: usize,
    auth: &Value,
    inbox: &mut Inbox,
    shared: &Shared,
) -> anyhow::Result<(Conn, Value)> {
    let started = clock();
    let mut conn = Conn::connect_with(plan.url(reconnects), plan.protocol, auth).await?;
    loop {
        match conn.next().await? {
            Packet::Connected(answer) => inbox.cursor.connected(answer.json()),
            Packet::Event(e) if e.is_event("connection.established") => {
                inbox.handshake_us.push(micros_since(started));
                return Ok((conn, e.event_arg()?));
            }
            Packet::Event(e) => inbox.on_event(&e, &shared.progress)?,
            Packet::Refused(why) => bail!("connect refused: {}", why.json()),
            Packet::Disconnected => bail!("disconnected during the handshake"),
            Packet::Ack(..) => {}
        }
    }
}

/// Subscribes to `room` and waits for the ack, recording events meanwhile.
async fn subscribe(
    conn: &mut Conn,
    room: &str,
    inbox: &mut Inbox,
    shared: &Shared,
) -> anyhow::Result<()> {
    let started = clock();
    let id = conn
        .emit_with_ack("subscribe", &json!({ "room": room }))
        .await?;
    loop {
        match conn.next().await? {
            Packet::Ack(got, answer) if got == id => {
                let answer = answer.ack_answer()?;
                ensure!(answer["ok"] == true, "subscribe refused: {answer}");
                // Where the room is: a drop before its first event still recovers.
                inbox.cursor.position(&answer["positions"], room);
                inbox.subscribe_us.push(micros_since(started));
                return Ok(());
            }
            Packet::Event(e) => inbox.on_event(&e, &shared.progress)?,
            Packet::Disconnected => bail!("disconnected while subscribing"),
            _ => {}
        }
    }
}
