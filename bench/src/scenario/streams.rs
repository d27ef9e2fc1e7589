//! `streams` and `resume`: AI streams (WEBSOCKET_API.md section 13).
//!
//! - `streams`: N viewers in `project:bench` watch S streams that the generator appends to
//!   over HTTP at R appends/s each (`POST /api/v1/streams/{id}/append`, each append its own
//!   request, sent on time whether or not the previous one was answered). Each append's
//!   text is one line, `<send time in µs, hex> <filler>\n`, with multi-code-point emoji in
//!   the filler: a viewer that completes a line from a `stream.delta` knows when it was
//!   sent (latency: from sending the append to receiving the delta that contains it, one
//!   process, no clock sync). Viewers follow the documented client rule (a delta past what
//!   they have is a gap: `stream.resume` from what they have; the part they have is
//!   dropped), keep a running hash of each stream's text and must end with every stream's
//!   exact text once the streams are finished.
//! - `resume`: V viewers in `project:bench`, one stream of `--chars` code points already
//!   written; all viewers send `stream.resume {offset: 0}` at once: how long until each
//!   (and all) hold the whole text, and the server's CPU for it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::Common;
use crate::crowd::token;
use crate::measure::{Cpu, clock, cpu_split, micros_since, own_cpu, per, percentiles_ms, round};
use crate::proto::{Conn, Packet};

const ROOM: &str = "project:bench";

/// Fillers cycled after each line's timestamp: code points of 1 to 4 UTF-8 bytes, a skin
/// tone and a zero-width joiner, so bytes, UTF-16 units and code points all differ.
const FILLERS: [&str; 4] = ["tok én ", "👋🏽 hi ", "世界 x ", "🧑‍💻 ok "];

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Node the streams are created, appended to and finished at (default: the first --url).
    #[arg(long)]
    pub publish_url: Option<String>,
    /// Concurrent streams.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Appends per second, per stream.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Seconds of appending.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// More viewers that join halfway through the appending and catch up with
    /// `stream.resume` from 0 while the deltas go on (as a page opened mid-stream).
    #[arg(long, default_value_t = 0)]
    pub late: usize,
}

#[derive(clap::Args, Debug)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub common: Common,
    /// Node the stream is written at (default: the first --url).
    #[arg(long)]
    pub publish_url: Option<String>,
    /// The stream's length, in code points.
    #[arg(long, default_value_t = 20_000)]
    pub chars: usize,
}

/// `42["stream.delta" | "stream.finished", envelope, offset?]` (socket.io's recovery may
/// append an offset, read only to accept it).
#[derive(Deserialize)]
#[allow(dead_code)]
struct Frame<'a>(
    IgnoredAny,
    #[serde(borrow)] Envelope<'a>,
    #[serde(default)] Option<IgnoredAny>,
);

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    data: Data<'a>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow)]
    stream_id: Cow<'a, str>,
    #[serde(default)]
    offset: u64,
    #[serde(default, borrow)]
    text: Cow<'a, str>,
    #[serde(default)]
    length: Option<u64>,
}

/// FNV-1a over bytes: the same for a text however it was split.
fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x100_0000_01b3);
    }
    hash
}
const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// What a viewer holds of one stream.
struct Held {
    /// Code points.
    have: u64,
    hash: u64,
    /// The incomplete last line (its timestamp is read once the line is whole).
    line: String,
    /// The ack id of a `stream.resume` under way.
    resuming: Option<u64>,
    /// From `stream.finished`.
    length: Option<u64>,
}

impl Held {
    fn new() -> Self {
        Self {
            have: 0,
            hash: FNV_START,
            line: String::new(),
            resuming: None,
            length: None,
        }
    }

    /// Applies a delta or a resume answer at `offset` by the client rule: `false` on a gap.
    /// Completed lines give a latency sample when `timed`.
    fn apply(&mut self, offset: u64, text: &str, timed: bool, stats: &mut ViewerStats) -> bool {
        if offset > self.have {
            return false;
        }
        let skip = (self.have - offset) as usize;
        let fresh = match text.char_indices().nth(skip) {
            Some((at, _)) => &text[at..],
            None => "",
        };
        stats.overlap_chars += skip.min(text.chars().count()) as u64;
        if fresh.is_empty() {
            return true;
        }
        self.have += fresh.chars().count() as u64;
        self.hash = fnv(self.hash, fresh.as_bytes());
        let now = clock();
        let mut rest = fresh;
        while let Some(end) = rest.find('\n') {
            self.line.push_str(&rest[..end]);
            if timed
                && let Some(sent) = self
                    .line
                    .split(' ')
                    .next()
                    .and_then(|t| u64::from_str_radix(t, 16).ok())
            {
                stats
                    .latencies_us
                    .push(now.saturating_sub(sent).min(u32::MAX as u64) as u32);
            }
            self.line.clear();
            rest = &rest[end + 1..];
        }
        self.line.push_str(rest);
        true
    }
}

#[derive(Default)]
struct ViewerStats {
    deltas: u64,
    chars: u64,
    overlap_chars: u64,
    resumes: u64,
    latencies_us: Vec<u32>,
    /// Per stream: (code points, hash) at the end.
    held: HashMap<String, (u64, u64)>,
    failed: bool,
}

/// What every viewer of a run shares.
struct Room {
    gate: Semaphore,
    ready: Semaphore,
    /// Streams whose whole text every viewer holds, summed over viewers.
    complete: AtomicU64,
    /// Viewers that ended with an error.
    failed: AtomicU64,
    stop: watch::Sender<bool>,
    /// `resume`: all viewers resume from 0 when this turns true.
    go: watch::Sender<bool>,
}

/// Connects and subscribes to [`ROOM`].
async fn join(url: &str, token: &str) -> anyhow::Result<Conn> {
    let mut conn = Conn::open(url).await?;
    conn.connect(&json!({ "token": token })).await?;
    loop {
        match conn.next().await? {
            Packet::Event(e) if e.is_event("connection.established") => break,
            Packet::Refused(why) => bail!("connect refused: {}", why.json()),
            Packet::Disconnected => bail!("disconnected during the handshake"),
            _ => {}
        }
    }
    let id = conn
        .emit_with_ack("subscribe", &json!({ "room": ROOM }))
        .await?;
    loop {
        match conn.next().await? {
            Packet::Ack(got, answer) if got == id => {
                let v: Value = serde_json::from_str(answer.json())?;
                ensure!(v[0]["ok"] == true, "subscribe refused: {}", answer.json());
                return Ok(conn);
            }
            Packet::Disconnected => bail!("disconnected while subscribing"),
            _ => {}
        }
    }
}

/// Connects `common.sockets` viewers, each running `watch`; waits until all joined.
async fn gather<F, Fut>(
    common: &Common,
    room: &Arc<Room>,
    watch: F,
) -> anyhow::Result<JoinSet<ViewerStats>>
where
    F: Fn(Conn, Arc<Room>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<ViewerStats>> + Send + 'static,
{
    let mut viewers = JoinSet::new();
    for i in 0..common.sockets {
        let url = common.url[i % common.url.len()].clone();
        let token = token(&common.secret, common.sub(i), ROOM)?;
        let room = room.clone();
        let watch = watch.clone();
        viewers.spawn(async move {
            let joined = async {
                let _slot = room.gate.acquire().await?;
                join(&url, &token).await
            }
            .await;
            room.ready.add_permits(1);
            let outcome = match joined {
                Ok(conn) => watch(conn, room.clone()).await,
                Err(e) => Err(e),
            };
            outcome.unwrap_or_else(|e| {
                eprintln!("viewer {i}: {e:#}");
                room.failed.fetch_add(1, Ordering::Relaxed);
                ViewerStats {
                    failed: true,
                    ..ViewerStats::default()
                }
            })
        });
    }
    let limit = Duration::from_secs(common.join_timeout);
    tokio::time::timeout(limit, room.ready.acquire_many(common.sockets as u32))
        .await
        .with_context(|| format!("viewers did not all join within {limit:?}"))??
        .forget();
    Ok(viewers)
}

/// One viewer of the `streams` scenario: follows every stream of `ids` until it holds each
/// one's whole text (known from `stream.finished`) or the run stops.
async fn follow(
    mut conn: Conn,
    room: Arc<Room>,
    ids: Arc<[String]>,
) -> anyhow::Result<ViewerStats> {
    let mut stats = ViewerStats::default();
    let mut held: HashMap<String, Held> = ids.iter().map(|id| (id.clone(), Held::new())).collect();
    let mut resumes: HashMap<u64, String> = HashMap::new();
    let mut stop = room.stop.subscribe();
    let mut complete = 0;
    loop {
        let msg = tokio::select! {
            _ = stop.changed() => break,
            msg = conn.recv() => msg,
        };
        let Some(msg) = msg else {
            bail!("the server closed the connection")
        };
        let mut gap = None;
        match conn.decode(msg?).await? {
            Some(Packet::Event(e)) if e.is_event("stream.delta") => {
                let Frame(_, env, _) = serde_json::from_str(e.json())?;
                let d = env.data;
                let Some(h) = held.get_mut(d.stream_id.as_ref()) else {
                    continue;
                };
                stats.deltas += 1;
                stats.chars += d.text.chars().count() as u64;
                if !h.apply(d.offset, &d.text, true, &mut stats) && h.resuming.is_none() {
                    gap = Some(d.stream_id.into_owned());
                }
            }
            Some(Packet::Event(e)) if e.is_event("stream.finished") => {
                let Frame(_, env, _) = serde_json::from_str(e.json())?;
                let d = env.data;
                let Some(h) = held.get_mut(d.stream_id.as_ref()) else {
                    continue;
                };
                h.length = d.length;
                if d.length.is_some_and(|l| l > h.have) && h.resuming.is_none() {
                    gap = Some(d.stream_id.into_owned());
                }
            }
            Some(Packet::Ack(id, answer)) => {
                let Some(stream) = resumes.remove(&id) else {
                    continue;
                };
                let v: Value = serde_json::from_str(answer.json())?;
                let a = &v[0];
                ensure!(a["ok"] == true, "stream.resume refused: {}", answer.json());
                let h = held.get_mut(&stream).context("a resumed stream")?;
                h.resuming = None;
                let offset = a["offset"].as_u64().unwrap_or(0);
                let text = a["text"].as_str().unwrap_or("");
                if !h.apply(offset, text, false, &mut stats) {
                    bail!(
                        "a resume answer at {offset} past what the viewer has ({})",
                        h.have
                    );
                }
                // Finished meanwhile, and the answer was read before the last appends.
                if h.length.is_some_and(|l| l > h.have) {
                    gap = Some(stream);
                }
            }
            Some(Packet::Disconnected) => bail!("the server disconnected the viewer"),
            _ => {}
        }
        if let Some(stream) = gap {
            let h = held.get_mut(&stream).context("a stream")?;
            let id = conn
                .emit_with_ack(
                    "stream.resume",
                    &json!({"stream_id": stream, "offset": h.have}),
                )
                .await?;
            h.resuming = Some(id);
            resumes.insert(id, stream);
            stats.resumes += 1;
        }
        let now = held
            .values()
            .filter(|h| h.length.is_some_and(|l| l == h.have))
            .count();
        if now > complete {
            room.complete
                .fetch_add((now - complete) as u64, Ordering::Relaxed);
            complete = now;
        }
    }
    stats.held = held
        .into_iter()
        .map(|(id, h)| (id, (h.have, h.hash)))
        .collect();
    Ok(stats)
}

/// HTTP calls to the streams API.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        let resp = self
            .http
            .post(format!("{}/api/v1/streams{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    async fn create(&self, id: &str) -> anyhow::Result<()> {
        let (status, body) = self
            .post("", json!({"room": ROOM, "stream_id": id, "kind": "llm"}))
            .await?;
        ensure!(status == 201, "creating stream {id}: {status} {body}");
        Ok(())
    }

    /// Appends `text`; the offset the server answered, `None` when refused.
    async fn append(&self, id: &str, text: &str) -> Option<u64> {
        match self
            .post(&format!("/{id}/append"), json!({ "text": text }))
            .await
        {
            Ok((202, body)) => body["offset"].as_u64(),
            _ => None,
        }
    }

    async fn finish(&self, id: &str) -> anyhow::Result<u64> {
        let (status, body) = self.post(&format!("/{id}/finish"), json!({})).await?;
        ensure!(status == 200, "finishing stream {id}: {status} {body}");
        body["length"].as_u64().context("the finished length")
    }
}

/// A stream's whole text as the server answered the appends: (code points, hash); `None`
/// when the pieces do not tile it (an answer was wrong or missing).
fn tiled(mut pieces: Vec<(u64, String)>) -> Option<(u64, u64)> {
    pieces.sort_unstable_by_key(|(offset, _)| *offset);
    let (mut at, mut hash) = (0u64, FNV_START);
    for (offset, text) in pieces {
        if offset != at {
            return None;
        }
        at += text.chars().count() as u64;
        hash = fnv(hash, text.as_bytes());
    }
    Some((at, hash))
}

fn run_id() -> String {
    format!("{:x}", rand::random::<u32>())
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    ensure!(
        args.streams >= 1 && args.rate > 0.0,
        "--streams and --rate must be positive"
    );
    let common = &args.common;
    let api = Api {
        http: reqwest::Client::new(),
        base: args
            .publish_url
            .clone()
            .unwrap_or_else(|| common.url[0].clone()),
        key: common.api_key.clone(),
    };
    let run = run_id();
    let ids: Arc<[String]> = (0..args.streams)
        .map(|s| format!("bench-{run}-{s}"))
        .collect();
    let room = Arc::new(Room {
        gate: Semaphore::new(common.connect_concurrency),
        ready: Semaphore::new(0),
        complete: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        stop: watch::Sender::new(false),
        go: watch::Sender::new(false),
    });
    let started = Instant::now();
    let follow_ids = ids.clone();
    let mut viewers = gather(common, &room, move |conn, room| {
        follow(conn, room, follow_ids.clone())
    })
    .await?;
    let connect_secs = started.elapsed().as_secs_f64();
    for id in ids.iter() {
        api.create(id).await?;
    }

    let (cpu_before, own_before) = (cpu_split(&common.pids), own_cpu());
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let refused = Arc::new(AtomicU64::new(0));
    let mut writers = JoinSet::new();
    for (s, id) in ids.iter().enumerate() {
        let (api, id, refused) = (api.clone(), id.clone(), refused.clone());
        let period = Duration::from_secs_f64(1.0 / args.rate);
        writers.spawn(async move {
            let mut appends = JoinSet::new();
            let mut tick = tokio::time::interval_at(
                Instant::now() + period.mul_f64(s as f64 / 10.0 % 1.0),
                period,
            );
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n = 0;
            while Instant::now() < deadline {
                tick.tick().await;
                let text = format!("{:x} {}\n", clock(), FILLERS[n % FILLERS.len()]);
                n += 1;
                let (api, id, refused) = (api.clone(), id.clone(), refused.clone());
                appends.spawn(async move {
                    let offset = api.append(&id, &text).await;
                    if offset.is_none() {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    offset.map(|o| (o, text))
                });
            }
            let mut pieces = Vec::new();
            while let Some(done) = appends.join_next().await {
                pieces.extend(done.ok().flatten());
            }
            (id, pieces)
        });
    }
    let mut late = JoinSet::new();
    if args.late > 0 {
        tokio::time::sleep(Duration::from_secs_f64(args.duration / 2.0)).await;
        let latecomers = Common {
            sockets: args.late,
            ..common.clone()
        };
        let late_ids = ids.clone();
        late = gather(&latecomers, &room, move |conn, room| {
            follow(conn, room, late_ids.clone())
        })
        .await?;
    }
    let mut expected = HashMap::new();
    let mut appended = 0;
    while let Some(done) = writers.join_next().await {
        let (id, pieces) = done?;
        appended += pieces.len() as u64;
        expected.insert(id, tiled(pieces));
    }
    let append_secs = started.elapsed().as_secs_f64();
    for id in ids.iter() {
        let length = api.finish(id).await?;
        if expected[id].is_some_and(|(l, _)| l != length) {
            bail!("stream {id}: finished at {length} code points, the appends say otherwise");
        }
    }
    // Drain: until every viewer holds every stream whole, or nothing moved for 5 s.
    let want = ((common.sockets + args.late) * args.streams) as u64;
    let give_up = Instant::now() + Duration::from_secs(120);
    let (mut last, mut since) = (u64::MAX, Instant::now());
    while Instant::now() < give_up {
        let now = room.complete.load(Ordering::Relaxed);
        if now >= want {
            break;
        }
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total_secs = started.elapsed().as_secs_f64();
    let server_cpu = cpu_split(&common.pids)
        .zip(cpu_before)
        .map(|(after, before)| after.since(before));
    let generator_cpu = own_cpu().since(own_before);
    room.stop.send_replace(true);

    let mut t = ViewerStats::default();
    let (mut lost, mut duplicated, mut corrupted, mut failed) = (0u64, 0u64, 0u64, 0u64);
    while let Some(done) = match viewers.join_next().await {
        Some(done) => Some(done),
        None => late.join_next().await,
    } {
        let v = done.unwrap_or_else(|_| ViewerStats {
            failed: true,
            ..ViewerStats::default()
        });
        failed += u64::from(v.failed);
        t.deltas += v.deltas;
        t.chars += v.chars;
        t.overlap_chars += v.overlap_chars;
        t.resumes += v.resumes;
        t.latencies_us.extend(v.latencies_us);
        for id in ids.iter() {
            let got = v.held.get(id).copied().unwrap_or((0, FNV_START));
            match expected[id] {
                Some((length, hash)) if got == (length, hash) => {}
                Some((length, _)) if got.0 < length => lost += 1,
                Some((length, _)) if got.0 > length => duplicated += 1,
                _ => corrupted += 1,
            }
        }
    }
    let viewers_n = (common.sockets + args.late) as u64;
    Ok(json!({
        "scenario": "streams",
        "sockets": common.sockets,
        "late": args.late,
        "nodes": common.url.len(),
        "streams": args.streams,
        "rate": args.rate,
        "connect_secs": round(connect_secs),
        "appends": appended,
        "publish_failed": refused.load(Ordering::Relaxed),
        "appends_per_sec": round(appended as f64 / append_secs),
        "deltas_received": t.deltas,
        "deltas_per_sec": round(t.deltas as f64 / total_secs),
        "appends_per_delta": per((appended * viewers_n) as f64, Some(t.deltas as f64)),
        "chars_delivered": t.chars,
        "overlap_chars": t.overlap_chars,
        "resumes": t.resumes,
        "server_cpu_secs": server_cpu.map(|c| round(c.total())),
        "server_cpu_ns_per_char": server_cpu.map(|c| round(c.total() * 1e9 / t.chars.max(1) as f64)),
        "chars_per_server_cpu_sec": per(t.chars as f64, server_cpu.map(Cpu::total)),
        "generator_cpu_secs": round(generator_cpu.total()),
        "latency_ms": percentiles_ms(t.latencies_us),
        "lost": lost,
        "duplicated": duplicated,
        "corrupted": corrupted,
        "failed_sockets": failed,
    }))
}

/// One viewer of the `resume` scenario: at the signal, resumes `id` from 0 and times the
/// answer; the text must be whole (length and hash).
async fn resume_once(
    mut conn: Conn,
    room: Arc<Room>,
    id: Arc<str>,
    whole: (u64, u64),
) -> anyhow::Result<ViewerStats> {
    let mut go = room.go.subscribe();
    loop {
        tokio::select! {
            changed = go.changed() => {
                changed?;
                if *go.borrow() { break; }
            }
            msg = conn.recv() => {
                let Some(msg) = msg else { bail!("the server closed the connection") };
                conn.decode(msg?).await?;
            }
        }
    }
    let started = clock();
    let ack = conn
        .emit_with_ack("stream.resume", &json!({"stream_id": &*id, "offset": 0}))
        .await?;
    let mut stats = ViewerStats::default();
    loop {
        match conn.next().await? {
            Packet::Ack(got, answer) if got == ack => {
                stats.latencies_us.push(micros_since(started));
                let v: Value = serde_json::from_str(answer.json())?;
                let text = v[0]["text"].as_str().context("a resume answer")?;
                let got = (text.chars().count() as u64, fnv(FNV_START, text.as_bytes()));
                ensure!(
                    got == whole,
                    "resumed {} of {} code points, or not the same text",
                    got.0,
                    whole.0
                );
                stats.chars = got.0;
                room.complete.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Packet::Disconnected => bail!("the server disconnected the viewer"),
            _ => {}
        }
    }
    // Stay connected until every viewer is done, so no one leaving skews the others.
    let mut stop = room.stop.subscribe();
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(stats),
            msg = conn.recv() => {
                let Some(msg) = msg else { bail!("the server closed the connection") };
                conn.decode(msg?).await?;
            }
        }
    }
}

pub async fn run_resume(args: ResumeArgs) -> anyhow::Result<Value> {
    ensure!(args.chars >= 1, "--chars must be positive");
    let common = &args.common;
    let api = Api {
        http: reqwest::Client::new(),
        base: args
            .publish_url
            .clone()
            .unwrap_or_else(|| common.url[0].clone()),
        key: common.api_key.clone(),
    };
    let id: Arc<str> = format!("bench-{}-resume", run_id()).into();
    api.create(&id).await?;
    // The text: lines of FILLERS, cut at exactly `chars` code points, in appends of at most
    // 200 code points.
    let mut text: Vec<char> = Vec::with_capacity(args.chars);
    let mut n = 0;
    while text.len() < args.chars {
        text.extend(format!("{n:05} {}\n", FILLERS[n % FILLERS.len()]).chars());
        n += 1;
    }
    text.truncate(args.chars);
    for piece in text.chunks(200) {
        let piece: String = piece.iter().collect();
        api.append(&id, &piece)
            .await
            .context("an append was refused")?;
    }
    let whole: String = text.into_iter().collect();
    let whole = (args.chars as u64, fnv(FNV_START, whole.as_bytes()));
    let room = Arc::new(Room {
        gate: Semaphore::new(common.connect_concurrency),
        ready: Semaphore::new(0),
        complete: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        stop: watch::Sender::new(false),
        go: watch::Sender::new(false),
    });
    let started = Instant::now();
    let resume_id = id.clone();
    let mut viewers = gather(common, &room, move |conn, room| {
        resume_once(conn, room, resume_id.clone(), whole)
    })
    .await?;
    let connect_secs = started.elapsed().as_secs_f64();
    // Let the connect work (presence, handshakes) settle before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (cpu_before, own_before) = (cpu_split(&common.pids), own_cpu());
    let started = Instant::now();
    room.go.send_replace(true);
    let want = common.sockets as u64;
    let give_up = Instant::now() + Duration::from_secs(120);
    let done = || room.complete.load(Ordering::Relaxed) + room.failed.load(Ordering::Relaxed);
    while done() < want && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_secs = started.elapsed().as_secs_f64();
    let server_cpu = cpu_split(&common.pids)
        .zip(cpu_before)
        .map(|(after, before)| after.since(before));
    let generator_cpu = own_cpu().since(own_before);
    room.stop.send_replace(true);
    let (mut resumed, mut failed, mut latencies) = (0u64, 0u64, Vec::new());
    while let Some(done) = viewers.join_next().await {
        match done {
            Ok(v) if !v.failed => {
                resumed += u64::from(v.chars == whole.0);
                latencies.extend(v.latencies_us);
            }
            _ => failed += 1,
        }
    }
    Ok(json!({
        "scenario": "resume",
        "sockets": common.sockets,
        "nodes": common.url.len(),
        "chars": args.chars,
        "connect_secs": round(connect_secs),
        "resumed": resumed,
        "all_resumed_ms": round(all_secs * 1000.0),
        "resume_ms": percentiles_ms(latencies),
        "server_cpu_secs": server_cpu.map(|c| round(c.total())),
        "resumes_per_server_cpu_sec": per(resumed as f64, server_cpu.map(Cpu::total)),
        "generator_cpu_secs": round(generator_cpu.total()),
        "lost": want.saturating_sub(resumed),
        "failed_sockets": failed,
    }))
}
