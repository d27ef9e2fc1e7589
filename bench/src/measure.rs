//! Clocks, server process figures from /proc, and percentiles.

use std::sync::OnceLock;
use std::time::Instant;

use serde_json::{Value, json};

/// Microseconds since the first call. Publishers stamp events with it and receivers compare,
/// all in this process, so latency needs no clock sync.
pub fn clock() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Microseconds since `start` (a [`clock`] reading), saturated to fit a `u32` (71 minutes).
pub fn micros_since(start: u64) -> u32 {
    clock().saturating_sub(start).min(u32::MAX as u64) as u32
}

/// CPU seconds (user + system) the processes have used so far; `None` without pids.
pub fn cpu_secs(pids: &[u32]) -> Option<f64> {
    cpu_split(pids).map(Cpu::total)
}

/// CPU seconds the processes have spent in user space and in the kernel so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    pub user: f64,
    pub system: f64,
}

impl Cpu {
    pub fn since(self, before: Cpu) -> Cpu {
        Cpu {
            user: self.user - before.user,
            system: self.system - before.system,
        }
    }

    pub fn total(self) -> f64 {
        self.user + self.system
    }
}

/// `None` without pids.
pub fn cpu_split(pids: &[u32]) -> Option<Cpu> {
    if pids.is_empty() {
        return None;
    }
    let (user, system) = pids
        .iter()
        .filter_map(|p| cpu_ticks(*p))
        .fold((0, 0), |(u, s), (pu, ps)| (u + pu, s + ps));
    // USER_HZ is 100 on Linux.
    Some(Cpu {
        user: user as f64 / 100.0,
        system: system as f64 / 100.0,
    })
}

/// This process's own CPU time (the load generator's).
pub fn own_cpu() -> Cpu {
    cpu_split(&[std::process::id()]).unwrap_or_default()
}

fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

/// Resident memory of the processes together, in KiB (`VmRSS`); `None` without pids.
pub fn rss_kib(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    Some(pids.iter().filter_map(|p| vm_rss(*p)).sum())
}

fn vm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Open file descriptors of the processes together (entries of /proc/<pid>/fd); `None`
/// without pids.
pub fn open_fds(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    let count =
        |pid: &u32| std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    Some(pids.iter().map(count).sum())
}

/// `{p50, p90, p99, p999, max}` in milliseconds of microsecond samples (sorted here).
pub fn percentiles_ms(mut samples: Vec<u32>) -> Value {
    samples.sort_unstable();
    let at = |p: f64| {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        round(samples[i] as f64 / 1000.0)
    };
    json!({
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": at(1.0),
    })
}

/// Two decimals, for readable JSON.
pub fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `a / b` rounded, or JSON null when `b` is not positive (no pids given, or no time).
pub fn per(a: f64, b: Option<f64>) -> Value {
    match b {
        Some(b) if b > 0.0 => json!(round(a / b)),
        _ => Value::Null,
    }
}
