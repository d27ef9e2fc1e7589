//! All the sockets of a run: connect them (spread over the node URLs and rooms), wait
//! until deliveries have drained, stop them, and add up what they received.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use roomcast::auth::jwt::{TokenClaims, now_secs, sign_hs256};
use roomcast::rooms::{Grant, Id};
use tokio::task::JoinHandle;

use crate::Common;
use crate::inbox::Inbox;
use crate::proto::Protocol;
use crate::socket::{Drops, Phase, Plan, Shared, life};
use crate::talk::Talk;

/// `project:bench` for one room (the name BENCHMARKS.md uses), else `project:bench-<r>`.
pub fn room_names(rooms: usize) -> Vec<String> {
    match rooms {
        1 => vec!["project:bench".into()],
        n => (0..n).map(|r| format!("project:bench-{r}")).collect(),
    }
}

/// A token for `sub` granting exactly the project of `room` (`project:<id>`).
pub(crate) fn token(secret: &str, sub: String, room: &str) -> anyhow::Result<String> {
    let project = room.strip_prefix("project:").unwrap_or("bench");
    let claims = TokenClaims {
        projects: Grant::Some(vec![Id::parse(project).context("room id")?].into()),
        ..TokenClaims::new(sub, now_secs() + 3600)
    };
    sign_hs256(secret, &claims)
}

pub struct Crowd {
    pub shared: Arc<Shared>,
    /// Each socket's task, with its room index.
    tasks: Vec<(Option<usize>, JoinHandle<Inbox>)>,
    /// Sockets per room index.
    pub members: Vec<u64>,
    /// From the first connect to the last socket in its room.
    pub connect_secs: f64,
}

impl Crowd {
    /// Connects `common.sockets` sockets, socket `i` to room `i % rooms.len()` (none when
    /// `subscribe` is false), and waits until every one joined or failed. With `drops`
    /// `(how, k)`, the first `k` sockets drop now and then; with `talk`, every subscribed
    /// socket publishes into its room once the phase is [`Phase::Talking`]. Every socket
    /// speaks `protocol`.
    pub async fn gather(
        common: &Common,
        protocol: Protocol,
        rooms: &[String],
        subscribe: bool,
        drops: Option<(Drops, usize)>,
        talk: Option<Talk>,
    ) -> anyhow::Result<Self> {
        let shared = Shared::new(common.connect_concurrency);
        let urls: Arc<[String]> = common.url.clone().into();
        let mut members = vec![0; rooms.len()];
        let mut tasks = Vec::with_capacity(common.sockets);
        let started = Instant::now();
        for i in 0..common.sockets {
            let r = i % rooms.len();
            members[r] += 1;
            let plan = Plan {
                index: i,
                urls: urls.clone(),
                token: token(&common.secret, common.sub(i), &rooms[r])?,
                protocol,
                room: subscribe.then(|| (r, rooms[r].clone())),
                drops: drops.filter(|(_, k)| i < *k).map(|(d, _)| d),
                talk: talk.clone().filter(|_| subscribe),
            };
            tasks.push((
                plan.room.as_ref().map(|(r, _)| *r),
                tokio::spawn(life(plan, shared.clone())),
            ));
        }
        let limit = Duration::from_secs(common.join_timeout);
        tokio::time::timeout(limit, shared.ready.acquire_many(common.sockets as u32))
            .await
            .with_context(|| format!("sockets did not all join within {limit:?}"))??
            .forget();
        Ok(Self {
            shared,
            tasks,
            members: if subscribe {
                members
            } else {
                vec![0; rooms.len()]
            },
            connect_secs: started.elapsed().as_secs_f64(),
        })
    }

    /// Deliveries a publish of these accepted events should make; one fewer each when
    /// `by_members` (a socket does not receive what it published).
    pub fn expected(&self, accepted: &[Vec<u64>], by_members: bool) -> u64 {
        accepted
            .iter()
            .zip(&self.members)
            .map(|(events, members)| {
                events.len() as u64 * members.saturating_sub(u64::from(by_members))
            })
            .sum()
    }

    /// Waits until `expected` distinct deliveries arrived and no socket is reconnecting, or
    /// nothing new arrived for `quiet` (then the rest is lost), at most two minutes.
    pub async fn drain(&self, expected: u64, quiet: Duration) {
        let shared = &self.shared;
        let give_up = Instant::now() + Duration::from_secs(120);
        let (mut last, mut quiet_since) = (u64::MAX, Instant::now());
        while Instant::now() < give_up {
            let got = shared.progress.distinct.load(Ordering::Relaxed);
            let busy = shared.reconnecting.load(Ordering::Relaxed) > 0;
            if got >= expected && !busy {
                return;
            }
            if got != last || busy {
                (last, quiet_since) = (got, Instant::now());
            } else if quiet_since.elapsed() > quiet {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every socket (they close their connections) and returns their inboxes.
    pub async fn disperse(self) -> Vec<Inbox> {
        self.shared.phase.send_replace(Phase::Stop);
        let mut inboxes = Vec::with_capacity(self.tasks.len());
        for (room, task) in self.tasks {
            // A panicked socket task hands in an empty inbox: its deliveries count as lost.
            inboxes.push(task.await.unwrap_or_else(|_| {
                let mut empty = Inbox::new(room);
                empty.failed = true;
                empty
            }));
        }
        inboxes
    }
}

/// What all sockets received against what was published.
#[derive(Default)]
pub struct Totals {
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub failed_sockets: u64,
    pub recovered: u64,
    pub not_recovered: u64,
    pub latencies_us: Vec<u32>,
    pub handshake_us: Vec<u32>,
    pub subscribe_us: Vec<u32>,
    pub reconnect_us: Vec<u32>,
}

impl Totals {
    /// `accepted[r]`: publish numbers of the events the server accepted for room `r`.
    pub fn of(inboxes: Vec<Inbox>, accepted: &[Vec<u64>]) -> Self {
        let mut t = Totals::default();
        for inbox in inboxes {
            if let Some(events) = inbox.room.and_then(|r| accepted.get(r)) {
                // What a socket published itself goes to the room's other sockets only.
                t.expected += (events.len() as u64).saturating_sub(inbox.own_count);
                let missing = |n: &&u64| !inbox.has(**n) && !inbox.sent(**n);
                t.lost += events.iter().filter(missing).count() as u64;
            }
            t.received += inbox.received;
            t.duplicated += inbox.duplicated;
            t.out_of_order += inbox.out_of_order;
            t.failed_sockets += inbox.failed as u64;
            t.recovered += inbox.recovered;
            t.not_recovered += inbox.not_recovered;
            t.latencies_us.extend(inbox.latencies_us);
            t.handshake_us.extend(inbox.handshake_us);
            t.subscribe_us.extend(inbox.subscribe_us);
            t.reconnect_us.extend(inbox.reconnect_us);
        }
        t
    }
}
