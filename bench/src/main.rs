//! `roomcast-bench`: a load generator that speaks Engine.IO v4 + Socket.IO v5 over raw
//! WebSockets (no client library, so it stays cheaper than the server it measures). It
//! runs unchanged against Roomcast and against the Node socket.io reference in
//! `bench/reference/` (`bench/compare.sh` runs both).
//!
//! Scenarios, each printing one JSON object with its figures:
//! - `hold`: N idle sockets; server RSS before and after, bytes per socket, connect rate.
//! - `fanout`: N sockets in one room; publish at a rate or flat out; deliveries/s, per
//!   server CPU-second, latency percentiles, lost. Several `--url`s spread the sockets
//!   over cluster nodes; `cluster` is the same, insisting on at least two.
//! - `rooms`: N sockets over R `project:` rooms, publishing to random rooms.
//! - `storm`: sockets drop their connection and come back with recovery while events are
//!   published; every socket must end with every event exactly once, in order.
//! - `soak`: a long `storm` where the sockets churn throughout; server memory and open
//!   file descriptors before, at peak and after, which must come back to where they were.
//! - `chat`: N sockets over R `project:` rooms, each publishing into its room with the
//!   `publish` socket command; the room's other sockets receive it.
//! - `streams`: N viewers of S AI streams appended over HTTP; append-to-delivery latency,
//!   deltas (frames) and characters received, server CPU per character; every viewer must
//!   end with each stream's exact text. `resume`: V viewers resuming a long stream at once.
//! - `yjs`: D Yjs documents, E editors each, over the stock `y-socket.io` protocol (one
//!   namespace per document, binary payloads), each editor typing real `yrs` updates;
//!   update-to-other-editors latency, server CPU per update and memory; every editor must
//!   end with its document's text.
//!
//! `hold`, `fanout`, `cluster`, `rooms`, `storm` and `soak` take `--protocol json`: the
//! sockets then speak Roomcast's plain JSON WebSocket (`GET /ws/json`) instead of Socket.IO.
//!
//! Layout: [`proto`] frames packets, [`socket`] runs one socket, [`inbox`] records what it
//! received, [`crowd`] runs all of them, [`publish`] sends events over HTTP, [`talk`] has
//! sockets send them, [`measure`] reads clocks and /proc, [`scenario`] puts them together.
//!
//! Latency is measured from a timestamp in the payload: publisher and receivers share this
//! process's clock. The exit status is 1 when anything was lost or duplicated, or a publish
//! was refused.

mod crowd;
mod inbox;
mod measure;
mod proto;
mod publish;
mod scenario;
mod socket;
mod talk;

use clap::Parser;
use serde_json::Value;

#[derive(Parser, Debug)]
#[command(about = "Roomcast load generator (Engine.IO v4 / Socket.IO v5 over WebSockets)")]
enum Cli {
    /// N idle sockets: server memory per socket and connect rate.
    Hold(scenario::hold::Args),
    /// N sockets in one room; publish; deliveries, CPU and latency.
    Fanout(scenario::fanout::Args),
    /// `fanout` with sockets spread over at least two nodes (--url a,b), publishing at one.
    Cluster(scenario::fanout::Args),
    /// N sockets over R project rooms; publish to random rooms.
    Rooms(scenario::fanout::RoomsArgs),
    /// Sockets drop and come back with recovery while events are published.
    Storm(scenario::storm::Args),
    /// A long storm of churning sockets: memory and descriptors before, during and after.
    Soak(scenario::soak::SoakArgs),
    /// N sockets over R project rooms, each publishing into its room (`publish` command).
    Chat(scenario::chat::Args),
    /// N viewers of S AI streams appended over HTTP at R appends/s each: latency, frames,
    /// server CPU per character, and every viewer ends with each stream's exact text.
    Streams(scenario::streams::Args),
    /// V viewers resuming one long AI stream from offset 0 at once: time and server CPU.
    Resume(scenario::streams::ResumeArgs),
    /// D Yjs documents with E editors each (stock y-socket.io protocol), each editor typing
    /// R updates/s: update latency, server CPU and memory; every editor must end with its
    /// document's text.
    Yjs(scenario::yjs::Args),
}

/// Where the sockets connect and how they authenticate; every scenario takes these.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Node base URLs the sockets connect to, round-robin (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8000")]
    pub url: Vec<String>,
    #[arg(long, default_value_t = 1000)]
    pub sockets: usize,
    /// Distinct users (`sub`) the sockets belong to, round-robin; 0: one user per socket.
    /// (Roomcast announces a user's first join of a project room to the whole room.)
    #[arg(long, default_value_t = 0)]
    pub users: usize,
    #[arg(long, default_value = "roomcast-dev-secret-do-not-use-in-production")]
    pub secret: String,
    #[arg(long, default_value = "roomcast-dev-key")]
    pub api_key: String,
    /// Server process ids: their CPU time and memory are reported.
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Sockets connecting at once.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Seconds all sockets may take to connect and join.
    #[arg(long, default_value_t = 120)]
    pub join_timeout: u64,
}

impl Common {
    fn sub(&self, socket: usize) -> String {
        match self.users {
            0 => format!("bench-{socket}"),
            n => format!("bench-{}", socket % n),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    measure::clock();
    let report = match Cli::parse() {
        Cli::Hold(args) => scenario::hold::run(args).await?,
        Cli::Fanout(args) => scenario::fanout::run("fanout", args, 1).await?,
        Cli::Cluster(args) => {
            anyhow::ensure!(
                args.common.url.len() >= 2,
                "cluster needs --url with two or more nodes"
            );
            scenario::fanout::run("cluster", args, 1).await?
        }
        Cli::Rooms(args) => scenario::fanout::run("rooms", args.fanout, args.rooms).await?,
        Cli::Storm(args) => scenario::storm::run(args).await?,
        Cli::Soak(args) => scenario::soak::run(args).await?,
        Cli::Chat(args) => scenario::chat::run(args).await?,
        Cli::Streams(args) => scenario::streams::run(args).await?,
        Cli::Resume(args) => scenario::streams::run_resume(args).await?,
        Cli::Yjs(args) => scenario::yjs::run(args).await?,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Err(problems) = check(&report) {
        eprintln!("roomcast-bench: {problems}");
        std::process::exit(1);
    }
    Ok(())
}

/// What the harness saw that it must not: lost, duplicated or reordered events, sockets
/// that failed, publishes the server refused, Yjs documents whose editors disagree.
fn check(report: &Value) -> Result<(), String> {
    let problems: Vec<String> = [
        "lost",
        "duplicated",
        "corrupted",
        "out_of_order",
        "failed_sockets",
        "publish_failed",
        "diverged_docs",
    ]
    .iter()
    .filter_map(|k| match report[k].as_u64() {
        Some(n) if n > 0 => Some(format!("{k} {n}")),
        _ => None,
    })
    .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join(", "))
    }
}
