//! `roomcast-bench`: a load generator that speaks Engine.IO v4 + Socket.IO v5 over raw
//! WebSockets (no client library, so it stays cheaper than the server it measures).
//!
//! Scenario `fanout`: N sockets (spread over one or more node URLs) join one room; events
//! are published over HTTP at one node, at a fixed rate or flat out; every delivery's
//! latency is measured from a timestamp in the payload (publisher and receivers share this
//! process's clock). Prints one JSON object with the figures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use roomcast::auth::jwt::{TokenClaims, now_secs, sign_hs256};
use roomcast::rooms::{Grant, Id};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
#[command(about = "Roomcast load generator")]
enum Cli {
    /// N sockets in one room; publish; measure deliveries and latency.
    Fanout(Fanout),
}

#[derive(clap::Args, Debug)]
struct Fanout {
    /// Node base URLs the sockets connect to, round-robin (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8000")]
    url: Vec<String>,
    /// Node the events are published at.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    publish_url: String,
    #[arg(long, default_value_t = 1000)]
    sockets: usize,
    /// Events per second; 0 publishes flat out.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Concurrent publishers when publishing flat out.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    #[arg(long, default_value = "roomcast-dev-secret-do-not-use-in-production")]
    secret: String,
    #[arg(long, default_value = "roomcast-dev-key")]
    api_key: String,
    /// Server process ids: their CPU time over the publishing phase is reported.
    #[arg(long, value_delimiter = ',')]
    pids: Vec<u32>,
    /// Sockets connecting at once.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
}

fn clock() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_micros() as u64
}

#[derive(Default)]
struct Tally {
    received: AtomicU64,
    /// Latencies in microseconds, collected per socket and merged at the end.
    latencies: Mutex<Vec<u32>>,
}

fn token(secret: &str, i: usize) -> anyhow::Result<String> {
    let claims = TokenClaims {
        projects: Grant::Some(vec![Id::parse("bench").expect("valid id")].into()),
        ..TokenClaims::new(format!("bench-{i}"), now_secs() + 3600)
    };
    sign_hs256(secret, &claims)
}

/// Connects one socket, joins `project:bench`, then records every `bench.tick` until `stop`.
async fn run_socket(
    url: String,
    token: String,
    tally: Arc<Tally>,
    ready: Arc<Semaphore>,
    stop: Arc<tokio::sync::Notify>,
    gate: Arc<Semaphore>,
) -> anyhow::Result<()> {
    // Limits sockets mid-handshake, not connected ones: released once joined.
    let mut permit = Some(gate.acquire_owned().await?);
    let ws_url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        url.replacen("http", "ws", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await?;
    let mut joined = false;
    ws.send(Message::text(format!("40{}", json!({ "token": token }))))
        .await?;
    let mut latencies = Vec::new();
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        let msg = tokio::select! {
            _ = &mut stopped => break,
            msg = ws.next() => msg,
        };
        let Some(msg) = msg else { break };
        let Message::Text(text) = msg? else { continue };
        let text = text.as_str();
        if text == "2" {
            ws.send(Message::text("3")).await?;
        } else if let Some(event) = text.strip_prefix("42") {
            if event.starts_with("[\"bench.tick\"") {
                let now = clock();
                let v: Value = serde_json::from_str(event)?;
                let sent = v[1]["data"]["t"].as_u64().unwrap_or(now);
                latencies.push(now.saturating_sub(sent).min(u32::MAX as u64) as u32);
                tally.received.fetch_add(1, Ordering::Relaxed);
            } else if event.starts_with("[\"connection.established\"") {
                ws.send(Message::text(
                    r#"420["subscribe",{"room":"project:bench"}]"#,
                ))
                .await?;
            }
        } else if text.starts_with("430") && !joined {
            anyhow::ensure!(text.contains("\"ok\":true"), "subscribe refused: {text}");
            joined = true;
            permit.take();
            ready.add_permits(1);
        } else if text.starts_with("44") {
            anyhow::bail!("connect refused: {text}");
        }
    }
    tally
        .latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .extend(latencies);
    Ok(())
}

/// Publishes `bench.tick` events carrying the send time, over keep-alive HTTP.
#[derive(Clone)]
struct Publisher {
    client: reqwest::Client,
    endpoint: Arc<str>,
    key: Arc<str>,
    published: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl Publisher {
    async fn once(&self) {
        let seq = self.published.fetch_add(1, Ordering::Relaxed);
        let body = json!({"room": "project:bench", "event": "bench.tick",
                          "data": {"t": clock(), "seq": seq}});
        let accepted = self
            .client
            .post(&*self.endpoint)
            .bearer_auth(&*self.key)
            .json(&body)
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 202);
        if !accepted {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn fanout(args: Fanout) -> anyhow::Result<Value> {
    clock();
    let tally = Arc::new(Tally::default());
    let ready = Arc::new(Semaphore::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::new(Semaphore::new(args.connect_concurrency));
    let connect_started = Instant::now();
    let mut tasks = Vec::with_capacity(args.sockets);
    for i in 0..args.sockets {
        let url = args.url[i % args.url.len()].clone();
        let token = token(&args.secret, i)?;
        let (tally, ready, stop, gate) = (tally.clone(), ready.clone(), stop.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let result = run_socket(url, token, tally, ready, stop, gate).await;
            if let Err(e) = &result {
                eprintln!("socket {i}: {e}");
            }
            result
        }));
    }
    // Every socket connected and joined, within a generous deadline.
    tokio::time::timeout(
        Duration::from_secs(120),
        ready.acquire_many(args.sockets as u32),
    )
    .await
    .map_err(|_| anyhow::anyhow!("sockets did not all join within 120 s"))??
    .forget();
    let connect_secs = connect_started.elapsed().as_secs_f64();

    let publisher = Publisher {
        client: reqwest::Client::new(),
        endpoint: format!("{}/api/v1/broadcast", args.publish_url).into(),
        key: args.api_key.clone().into(),
        published: Arc::default(),
        failed: Arc::default(),
    };
    let cpu_before: Vec<Option<u64>> = args.pids.iter().map(|p| cpu_ticks(*p)).collect();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    if args.rate > 0.0 {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
        let mut inflight = Vec::new();
        while Instant::now() < deadline {
            tick.tick().await;
            let p = publisher.clone();
            inflight.push(tokio::spawn(async move { p.once().await }));
        }
        for t in inflight {
            t.await?;
        }
    } else {
        let mut workers = Vec::new();
        for _ in 0..args.publishers {
            let p = publisher.clone();
            workers.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    p.once().await;
                }
            }));
        }
        for w in workers {
            w.await?;
        }
    }
    let published = publisher.published.load(Ordering::Relaxed);
    let failed = publisher.failed.load(Ordering::Relaxed);
    let publish_secs = started.elapsed().as_secs_f64();
    let expected = (published - failed) * args.sockets as u64;
    // Drain: wait until every delivery arrived, or nothing new for two seconds.
    let mut last = 0;
    let mut quiet_since = Instant::now();
    loop {
        let got = tally.received.load(Ordering::Relaxed);
        if got >= expected {
            break;
        }
        if got != last {
            last = got;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total_secs = started.elapsed().as_secs_f64();
    let cpu_after: Vec<Option<u64>> = args.pids.iter().map(|p| cpu_ticks(*p)).collect();
    stop.notify_waiters();
    for t in tasks {
        let _ = t.await;
    }
    let received = tally.received.load(Ordering::Relaxed);
    let mut lat = std::mem::take(
        &mut *tally
            .latencies
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?,
    );
    lat.sort_unstable();
    // USER_HZ is 100 on Linux.
    let server_cpu_secs: f64 = cpu_before
        .iter()
        .zip(&cpu_after)
        .filter_map(|(b, a)| Some((a.as_ref()? - b.as_ref()?) as f64 / 100.0))
        .sum();
    Ok(json!({
        "scenario": "fanout",
        "sockets": args.sockets,
        "nodes": args.url.len(),
        "rate": if args.rate > 0.0 { json!(args.rate) } else { json!("max") },
        "connect_secs": round(connect_secs),
        "connects_per_sec": round(args.sockets as f64 / connect_secs),
        "published": published,
        "publish_failed": failed,
        "publishes_per_sec": round(published as f64 / publish_secs),
        "expected_deliveries": expected,
        "received": received,
        "lost": expected.saturating_sub(received),
        "deliveries_per_sec": round(received as f64 / total_secs),
        "server_cpu_secs": round(server_cpu_secs),
        "deliveries_per_server_cpu_sec": if server_cpu_secs > 0.0 { json!(round(received as f64 / server_cpu_secs)) } else { Value::Null },
        "latency_ms": {
            "p50": percentile(&lat, 0.50),
            "p90": percentile(&lat, 0.90),
            "p99": percentile(&lat, 0.99),
            "p999": percentile(&lat, 0.999),
            "max": lat.last().map_or(0.0, |m| *m as f64 / 1000.0),
        },
    }))
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let report = match Cli::parse() {
        Cli::Fanout(args) => fanout(args).await?,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    let lost = report["lost"].as_u64().unwrap_or(0);
    anyhow::ensure!(lost == 0, "{lost} deliveries lost");
    Ok(())
}
