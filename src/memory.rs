//! Hands freed heap back to the operating system after many sockets have left. glibc's
//! malloc keeps what a reconnect storm freed mapped in its per-thread arenas: after 15,000
//! churning sockets had left, RSS stayed at its 420 MiB peak, and `malloc_trim(0)` took it
//! to 90 MiB (BENCHMARKS.md, soak). Elsewhere (other platforms or allocators) it does nothing.

use std::sync::Arc;
use std::time::Duration;

use crate::limits::Connections;

/// A trim runs once the node holds this many sockets fewer than at its peak since the last
/// trim: rare enough to cost nothing in steady state (a trim of a large heap takes a few ms).
const DROP: u64 = 1_000;
const CHECK_EVERY: Duration = Duration::from_secs(10);

/// Watches the node's socket count and trims the heap after large drops.
pub async fn run_trimmer(connections: Arc<Connections>) {
    let mut peak = 0;
    // What closing sockets free keeps coming for a while after their count dropped (their
    // tasks finish, buffers go with the last reference): trim once more a tick later.
    let mut again = false;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tick.tick().await;
        let now = connections.count();
        peak = peak.max(now);
        let dropped = peak - now >= DROP;
        if dropped || again {
            peak = now;
            again = dropped;
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes no pointer; it only returns glibc's own free pages to the OS.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
