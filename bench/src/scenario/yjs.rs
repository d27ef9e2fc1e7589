//! `yjs`: collaborative editing over the stock `y-socket.io` protocol (WEBSOCKET_API.md,
//! Yjs documents). D documents, E editors each: an editor is one socket in the namespace
//! `/yjs|project:bench-<d>/doc` with `auth: {token}` (the token grants that project), with
//! its own `yrs` document bound to the text `content`. It syncs as the stock client does
//! (answers the server's `sync-step-1` with its diff, sends its own and applies the diff in
//! the ack); once every editor is in, each one inserts `--chars` characters at a random
//! place of its text `--rate` times a second for `--duration` s, sending each change as a
//! binary `sync-update`, and applies every `sync-update` it receives.
//!
//! Latency: an editor notes each update's end clock (its client id's clock once the update
//! is applied) with the send time in a table all editors share, before sending it. A
//! receiving editor applies what arrives, reads its document's state vector, and every
//! update of another editor that the state vector now covers is delivered then (whatever
//! the server merged or split; the sender's own echo, which the stock server sends back,
//! counts for nothing). `lost`: updates of another editor of its document that an editor
//! does not hold at the end. `diverged_docs`: documents whose editors do not all end with
//! the same text. An editor whose connection drops comes back as the stock client does (a
//! new connection and the sync handshake), counted in `reconnects`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite;
use yrs::block::ClientID;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, Options, ReadTxn, StateVector, Text, TextRef, Transact, Update};

use crate::Common;
use crate::crowd::token;
use crate::measure::{
    Cpu, clock, cpu_split, micros_since, own_cpu, per, percentiles_ms, round, rss_kib,
};
use crate::proto::{Conn, NspPacket};
use crate::socket::Phase;

/// Characters typed, cycled: ASCII, so byte and character offsets agree.
const TYPED: &[u8] = b"abcdefghijklmnopqrstuvwxyz";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// `--sockets` is ignored here: the run has `--docs` x `--editors` sockets.
    #[command(flatten)]
    pub common: Common,
    /// Documents, `/yjs|project:bench-<d>/doc`.
    #[arg(long, default_value_t = 100)]
    pub docs: usize,
    /// Editors (sockets) per document.
    #[arg(long, default_value_t = 10)]
    pub editors: usize,
    /// Updates per second each editor sends.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Seconds of typing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Characters inserted per update.
    #[arg(long, default_value_t = 4)]
    pub chars: usize,
}

/// What every editor of a run shares.
struct Run {
    editors: usize,
    gate: Semaphore,
    /// One permit per editor synced, or failed before it could.
    ready: Semaphore,
    phase: watch::Sender<Phase>,
    /// Updates sent (counted before sending).
    sent: AtomicU64,
    /// Updates of another editor that an editor came to hold while running.
    delivered: AtomicU64,
    /// Per editor (`doc * editors + e`), its updates in order: (end clock, send time µs).
    ledgers: Vec<Mutex<Vec<(u32, u64)>>>,
}

impl Run {
    /// An editor's Yjs client id: its index plus one (0 is no client).
    fn client(&self, doc: usize, e: usize) -> ClientID {
        ClientID::new((doc * self.editors + e + 1) as u64)
    }

    fn ledger(&self, doc: usize, e: usize) -> std::sync::MutexGuard<'_, Vec<(u32, u64)>> {
        self.ledgers[doc * self.editors + e]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One editor: its socket's namespace, its Yjs document, and what it saw.
struct Editor {
    doc_index: usize,
    index: usize,
    nsp: String,
    doc: Doc,
    text: TextRef,
    client: ClientID,
    /// Per editor of the document: how many of its updates this one was credited with.
    credited: Vec<usize>,
    /// The ack id of this editor's own `sync-step-1`, until answered.
    sync_ack: Option<u64>,
    typed: usize,
    stats: EditorStats,
}

#[derive(Default)]
struct EditorStats {
    latencies_us: Vec<u32>,
    sync_us: Option<u32>,
    /// `sync-update` packets received, the own echo included.
    updates_received: u64,
    /// The server's `sync-step-1` requests answered.
    sync_requests: u64,
    /// Connections that dropped and were made again.
    reconnects: u64,
    failed: bool,
    /// At the end: the text and, per editor of the document, the clock it holds.
    text: String,
    clocks: Vec<u32>,
}

impl Editor {
    fn new(run: &Run, doc_index: usize, index: usize) -> Self {
        let client = run.client(doc_index, index);
        let doc = Doc::with_options(Options::with_client_id(client));
        let text = doc.get_or_insert_text("content");
        Self {
            doc_index,
            index,
            nsp: format!("/yjs|project:bench-{doc_index}/doc"),
            doc,
            text,
            client,
            credited: vec![0; run.editors],
            sync_ack: None,
            typed: 0,
            stats: EditorStats::default(),
        }
    }

    /// Handles one packet of the namespace: sync requests and answers, updates. Awareness
    /// updates are read and ignored.
    async fn handle(&mut self, conn: &mut Conn, p: NspPacket, run: &Run) -> anyhow::Result<()> {
        match p.kind {
            // A Socket.IO DISCONNECT: the stock client does not come back after it.
            b'1' if p.json.is_empty() => bail!("the server disconnected the socket"),
            b'1' => return Err(Dropped.into()),
            b'4' => bail!("connect refused: {}", p.json),
            // Roomcast's `{code, message}` before it disconnects a socket.
            b'2' if p.is_event("error") => bail!("the server sent {}", p.json),
            b'5' if p.is_event("sync-update") => {
                self.stats.updates_received += 1;
                self.apply(p.binary().context("sync-update without its update")?, run)?;
            }
            b'5' if p.is_event("sync-step-1") => {
                let sv = StateVector::decode_v1(p.binary().context("sync-step-1 payload")?)?;
                let diff = self.doc.transact().encode_state_as_update_v1(&sv);
                let id = p.id.context("sync-step-1 without an ack id")?;
                self.stats.sync_requests += 1;
                conn.ack_binary(&self.nsp, id, diff).await?;
            }
            b'6' if p.id.is_some() && p.id == self.sync_ack => {
                self.sync_ack = None;
                self.apply(p.binary().context("sync-step-1 ack without its diff")?, run)?;
            }
            b'3' if p.id.is_some() && p.id == self.sync_ack => {
                bail!("sync-step-1 answered without an update: {}", p.json)
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies an update, then credits the other editors' updates the document now holds.
    fn apply(&mut self, bytes: &[u8], run: &Run) -> anyhow::Result<()> {
        let update = Update::decode_v1(bytes).context("decoding an update")?;
        self.doc
            .transact_mut()
            .apply_update(update)
            .context("applying an update")?;
        let now = clock();
        let sv = self.doc.transact().state_vector();
        for e in (0..run.editors).filter(|e| *e != self.index) {
            let have = sv.get(&run.client(self.doc_index, e));
            let ledger = run.ledger(self.doc_index, e);
            let from = self.credited[e];
            let newly = ledger[from..].iter().take_while(|(end, _)| *end <= have);
            let before = self.stats.latencies_us.len();
            self.stats.latencies_us.extend(
                newly.map(|(_, sent)| now.saturating_sub(*sent).min(u32::MAX as u64) as u32),
            );
            let count = self.stats.latencies_us.len() - before;
            self.credited[e] += count;
            run.delivered.fetch_add(count as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Inserts a few characters at a random place and sends the change.
    async fn type_some(&mut self, conn: &mut Conn, chars: usize, run: &Run) -> anyhow::Result<()> {
        let chunk: String = (0..chars)
            .map(|i| TYPED[(self.typed + i) % TYPED.len()] as char)
            .collect();
        self.typed += chars;
        let (update, end) = {
            let mut txn = self.doc.transact_mut();
            let at = rand::rng().random_range(0..=self.text.len(&txn));
            self.text.insert(&mut txn, at, &chunk);
            let update = txn.encode_update_v1();
            (update, txn.state_vector().get(&self.client))
        };
        run.ledger(self.doc_index, self.index).push((end, clock()));
        run.sent.fetch_add(1, Ordering::Relaxed);
        conn.emit_binary(&self.nsp, "sync-update", update, false)
            .await?;
        Ok(())
    }

    /// The text and clocks it ends with.
    fn finish(&mut self, run: &Run) {
        let txn = self.doc.transact();
        self.stats.text = self.text.get_string(&txn);
        let sv = txn.state_vector();
        self.stats.clocks = (0..run.editors)
            .map(|e| sv.get(&run.client(self.doc_index, e)))
            .collect();
    }
}

/// Connects, joins the document's namespace and syncs: returns once the ack of its own
/// `sync-step-1` is applied.
async fn join(url: &str, token: &str, ed: &mut Editor, run: &Run) -> anyhow::Result<Conn> {
    let started = clock();
    let mut conn = Conn::open(url).await?;
    conn.connect_nsp(&ed.nsp, &json!({ "token": token }))
        .await?;
    let mut sent_sync = false;
    loop {
        let msg = conn.recv().await.ok_or(Dropped)??;
        let Some(p) = conn.decode_nsp(msg).await? else {
            continue;
        };
        if p.kind == b'0' {
            let sv = ed.doc.transact().state_vector().encode_v1();
            ed.sync_ack = conn.emit_binary(&ed.nsp, "sync-step-1", sv, true).await?;
            sent_sync = true;
            continue;
        }
        ed.handle(&mut conn, p, run).await?;
        // Synced once its own `sync-step-1` is answered (the server's, which the stock
        // server sends first, may come at any time and is answered wherever it comes).
        if sent_sync && ed.sync_ack.is_none() {
            ed.stats.sync_us = Some(micros_since(started));
            return Ok(conn);
        }
    }
}

/// The connection dropped (closed or failed, without a Socket.IO DISCONNECT): the stock
/// client reconnects and syncs again, and so does an editor here.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the connection was closed")
    }
}

impl std::error::Error for Dropped {}

/// Whether the editor lost its connection (rather than being refused or disconnected).
fn dropped(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Dropped>().is_some() || e.downcast_ref::<tungstenite::Error>().is_some()
}

/// Times an editor comes back after its connection dropped before it gives up.
const MAX_RECONNECTS: u32 = 5;

/// One editor's life: join, then type while the phase says so, until it says stop. When its
/// connection drops it comes back, as the stock client does: a new connection and the sync
/// handshake, which brings it what it missed and the server what it sent meanwhile.
async fn edit(
    url: String,
    token: String,
    mut ed: Editor,
    run: Arc<Run>,
    chars: usize,
    every: Duration,
) -> (usize, EditorStats) {
    let mut phase = run.phase.subscribe();
    let mut reconnects = 0;
    loop {
        let joined = async {
            let _slot = run.gate.acquire().await?;
            join(&url, &token, &mut ed, &run).await
        }
        .await;
        if reconnects == 0 {
            run.ready.add_permits(1);
        }
        let outcome = match joined {
            Ok(conn) => live(conn, &mut ed, &run, &mut phase, chars, every).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => break,
            Err(e)
                if dropped(&e) && reconnects < MAX_RECONNECTS && *phase.borrow() != Phase::Stop =>
            {
                eprintln!("editor {}/{}: {e:#}; reconnecting", ed.doc_index, ed.index);
                reconnects += 1;
                ed.stats.reconnects += 1;
                ed.sync_ack = None;
            }
            Err(e) => {
                eprintln!("editor {}/{}: {e:#}", ed.doc_index, ed.index);
                ed.stats.failed = true;
                break;
            }
        }
    }
    ed.finish(&run);
    (ed.doc_index, ed.stats)
}

async fn live(
    mut conn: Conn,
    ed: &mut Editor,
    run: &Run,
    phase: &mut watch::Receiver<Phase>,
    chars: usize,
    every: Duration,
) -> anyhow::Result<()> {
    // Editors start typing at random moments of the first period, not all at once.
    let first = Instant::now() + every.mul_f64(rand::rng().random_range(0.0..1.0));
    let mut ticks = tokio::time::interval_at(first, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut now = *phase.borrow_and_update();
    loop {
        if now == Phase::Stop {
            return Ok(());
        }
        let typing = now == Phase::Talking;
        let msg = tokio::select! {
            changed = phase.changed() => {
                now = if changed.is_err() { Phase::Stop } else { *phase.borrow_and_update() };
                if now == Phase::Talking {
                    ticks.reset_at(Instant::now() + every.mul_f64(rand::rng().random_range(0.0..1.0)));
                }
                continue;
            }
            _ = ticks.tick(), if typing => {
                ed.type_some(&mut conn, chars, run).await?;
                continue;
            }
            msg = conn.recv() => msg,
        };
        let Some(msg) = msg else {
            return Err(Dropped.into());
        };
        if let Some(p) = conn.decode_nsp(msg?).await? {
            ed.handle(&mut conn, p, run).await?;
        }
    }
}

/// Until every update sent reached every other editor of its document, or nothing new
/// arrived for `quiet` (the rest is lost), at most a minute.
async fn drain(run: &Run, quiet: Duration) {
    let give_up = Instant::now() + Duration::from_secs(60);
    let (mut last, mut quiet_since) = (u64::MAX, Instant::now());
    let others = run.editors.saturating_sub(1) as u64;
    while Instant::now() < give_up {
        let got = run.delivered.load(Ordering::Relaxed);
        if got >= run.sent.load(Ordering::Relaxed) * others {
            return;
        }
        if got != last {
            (last, quiet_since) = (got, Instant::now());
        } else if quiet_since.elapsed() > quiet {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The largest resident size of `pids` seen every 200 ms until `stop` turns true.
fn sample_peak(
    pids: Vec<u32>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Option<u64>> {
    tokio::spawn(async move {
        let mut peak = rss_kib(&pids);
        while !*stop.borrow() {
            peak = peak.max(rss_kib(&pids));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        peak.max(rss_kib(&pids))
    })
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    anyhow::ensure!(
        args.docs >= 1 && args.editors >= 2,
        "--docs 1+ and --editors 2+"
    );
    anyhow::ensure!(
        args.rate > 0.0,
        "--rate must be above 0 (updates/s per editor)"
    );
    let common = &args.common;
    let sockets = args.docs * args.editors;
    let run = Arc::new(Run {
        editors: args.editors,
        gate: Semaphore::new(common.connect_concurrency),
        ready: Semaphore::new(0),
        phase: watch::Sender::new(Phase::Running),
        sent: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        ledgers: (0..sockets).map(|_| Mutex::new(Vec::new())).collect(),
    });
    let pids = &common.pids;
    let rss_before = rss_kib(pids);
    let (stop_sampling, sampling) = watch::channel(false);
    let peak = sample_peak(pids.clone(), sampling);
    let every = Duration::from_secs_f64(1.0 / args.rate);
    let started = Instant::now();
    let mut editors = JoinSet::new();
    for i in 0..sockets {
        let (d, e) = (i / args.editors, i % args.editors);
        let room = format!("project:bench-{d}");
        let token = token(&common.secret, common.sub(i), &room)?;
        let url = common.url[i % common.url.len()].clone();
        let ed = Editor::new(&run, d, e);
        editors.spawn(edit(url, token, ed, run.clone(), args.chars, every));
    }
    let limit = Duration::from_secs(common.join_timeout);
    tokio::time::timeout(limit, run.ready.acquire_many(sockets as u32))
        .await
        .with_context(|| format!("editors did not all sync within {limit:?}"))??
        .forget();
    let connect_secs = started.elapsed().as_secs_f64();

    let (cpu_before, own_before) = (cpu_split(pids), own_cpu());
    let typing = Instant::now();
    run.phase.send_replace(Phase::Talking);
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    run.phase.send_replace(Phase::Calm);
    let typing_secs = typing.elapsed().as_secs_f64();
    drain(&run, Duration::from_secs(2)).await;
    let total_secs = typing.elapsed().as_secs_f64();
    let server_cpu = cpu_split(pids)
        .zip(cpu_before)
        .map(|(after, before)| after.since(before));
    let generator_cpu = own_cpu().since(own_before);
    let rss_after = rss_kib(pids);
    stop_sampling.send_replace(true);
    let rss_peak = peak.await.unwrap_or(None);

    run.phase.send_replace(Phase::Stop);
    let mut ends: Vec<(usize, EditorStats)> = Vec::with_capacity(sockets);
    let mut panicked = 0;
    while let Some(joined) = editors.join_next().await {
        match joined {
            Ok(end) => ends.push(end),
            Err(_) => panicked += 1,
        }
    }
    Ok(report(
        &args,
        &run,
        ends,
        Figures {
            connect_secs,
            typing_secs,
            total_secs,
            server_cpu,
            generator_cpu,
            rss_before,
            rss_after,
            rss_peak,
            panicked,
        },
    ))
}

struct Figures {
    connect_secs: f64,
    typing_secs: f64,
    total_secs: f64,
    server_cpu: Option<Cpu>,
    generator_cpu: Cpu,
    rss_before: Option<u64>,
    rss_after: Option<u64>,
    rss_peak: Option<u64>,
    /// Editor tasks that panicked (they hand in nothing: counted as failed sockets).
    panicked: u64,
}

/// The figures of a run, and what went wrong: each editor's clocks against every other
/// editor's ledger (lost), and each document's texts (diverged).
fn report(args: &Args, run: &Run, ends: Vec<(usize, EditorStats)>, f: Figures) -> Value {
    let sent = run.sent.load(Ordering::Relaxed);
    let others = args.editors as u64 - 1;
    let mut lost = 0u64;
    let mut failed = f.panicked;
    let mut latencies = Vec::new();
    let mut sync_us = Vec::new();
    let mut updates_received = 0;
    let mut sync_requests = 0;
    let mut reconnects = 0;
    let mut texts: Vec<Vec<String>> = vec![Vec::new(); args.docs];
    for (d, stats) in ends {
        failed += u64::from(stats.failed);
        latencies.extend(stats.latencies_us);
        sync_us.extend(stats.sync_us);
        updates_received += stats.updates_received;
        sync_requests += stats.sync_requests;
        reconnects += stats.reconnects;
        for (e, have) in stats.clocks.iter().enumerate() {
            let ledger = run.ledger(d, e);
            // Its own updates it holds by construction; this counts the others'.
            lost += ledger.iter().filter(|(end, _)| end > have).count() as u64;
        }
        texts[d].push(stats.text);
    }
    let diverged = texts
        .iter()
        .filter(|t| t.len() != args.editors || t.iter().any(|x| *x != t[0]))
        .count();
    let chars: usize = texts
        .iter()
        .filter_map(|t| t.first())
        .map(|t| t.len())
        .sum();
    let deliveries = run.delivered.load(Ordering::Relaxed);
    let cpu = f.server_cpu.map(Cpu::total);
    let micros_per = |n: u64| match cpu {
        Some(c) if n > 0 => json!(round(c * 1e6 / n as f64)),
        _ => Value::Null,
    };
    let share = |c: Cpu| (c.total() > 0.0).then(|| round(c.system / c.total()));
    json!({
        "scenario": "yjs",
        "docs": args.docs,
        "editors": args.editors,
        "sockets": args.docs * args.editors,
        "nodes": args.common.url.len(),
        "rate": args.rate,
        "chars_per_update": args.chars,
        "connect_secs": round(f.connect_secs),
        "sync_ms": percentiles_ms(sync_us),
        "updates": sent,
        "updates_per_sec": round(sent as f64 / f.typing_secs),
        "expected_deliveries": sent * others,
        "deliveries": deliveries,
        "deliveries_per_sec": round(deliveries as f64 / f.total_secs),
        "updates_received": updates_received,
        "server_sync_requests": sync_requests,
        "reconnects": reconnects,
        "lost": lost,
        "failed_sockets": failed,
        "converged": diverged == 0,
        "diverged_docs": diverged,
        "doc_chars_avg": round(chars as f64 / args.docs as f64),
        "latency_ms": percentiles_ms(latencies),
        "server_cpu_secs": cpu.map(round),
        "server_kernel_share": f.server_cpu.and_then(share),
        "server_cpu_per_update_us": micros_per(sent),
        "server_cpu_per_delivery_us": micros_per(deliveries),
        "deliveries_per_server_cpu_sec": per(deliveries as f64, cpu),
        "generator_cpu_secs": round(f.generator_cpu.total()),
        "rss_before_kib": f.rss_before,
        "rss_peak_kib": f.rss_peak,
        "rss_after_kib": f.rss_after,
    })
}
