//! Hands freed heap back to the operating system. glibc's malloc keeps what a reconnect
//! storm freed mapped in its per-thread arenas: after 15,000 churning sockets had left, RSS
//! stayed at its 420 MiB peak while a few MiB were in use (BENCHMARKS.md, soak).
//!
//! Every [`CHECK_EVERY`] the trimmer compares the process's anonymous resident memory with
//! what malloc has handed out; when the difference (the slack) is over [`SLACK`] and over a
//! quarter of what is in use, it calls `malloc_trim(0)`. A trim that gives back little (the
//! slack is fragmentation: pages that still hold a live chunk) doubles the wait before the
//! next one, up to [`LONGEST_WAIT`], so a fragmented heap is not walked every few seconds;
//! slack that grew by another [`SLACK`] since the last trim (sockets left) trims at once.
//! Elsewhere (other platforms or allocators) it does nothing.
//!
//! The `roomcast` binary runs it; the library does not start it, since trimming acts on
//! the whole process and a program embedding Roomcast may manage its heap otherwise.

use std::time::{Duration, Instant};

const CHECK_EVERY: Duration = Duration::from_secs(10);
const SLACK: u64 = 8 << 20;
/// A trim that frees less than this counts as one that found nothing to give back.
const WORTHWHILE: u64 = 2 << 20;
const LONGEST_WAIT: Duration = Duration::from_secs(640);

/// Runs for the life of the process.
pub async fn run_trimmer() {
    let mut wait = CHECK_EVERY;
    let mut next = Instant::now();
    // The slack the last trim left: what it could not give back.
    let mut floor = 0;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tick.tick().await;
        let Some(before) = usage() else { return };
        let grown = before.slack() > floor + SLACK;
        if !before.worth_trimming() || !(grown || Instant::now() >= next) {
            continue;
        }
        let after = tokio::task::spawn_blocking(|| {
            trim();
            usage()
        })
        .await
        .ok()
        .flatten()
        .unwrap_or(before);
        let freed = before.resident.saturating_sub(after.resident);
        floor = after.slack();
        wait = if freed >= WORTHWHILE {
            CHECK_EVERY
        } else {
            (wait * 2).min(LONGEST_WAIT)
        };
        next = Instant::now() + wait;
        tracing::debug!(
            resident = before.resident,
            in_use = before.in_use,
            freed,
            "heap trimmed"
        );
    }
}

/// Anonymous resident bytes of the process, and the bytes malloc has handed out.
#[derive(Clone, Copy, Debug)]
struct Usage {
    resident: u64,
    in_use: u64,
}

impl Usage {
    fn slack(&self) -> u64 {
        self.resident.saturating_sub(self.in_use)
    }

    fn worth_trimming(&self) -> bool {
        self.slack() > SLACK && self.slack() > self.in_use / 4
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::ffi::c_int;

    /// glibc's `struct mallinfo2` (2.33 and later): every field a `size_t`.
    #[repr(C)]
    pub(super) struct MallInfo2 {
        pub arena: usize,
        pub ordblks: usize,
        pub smblks: usize,
        pub hblks: usize,
        pub hblkhd: usize,
        pub usmblks: usize,
        pub fsmblks: usize,
        pub uordblks: usize,
        pub fordblks: usize,
        pub keepcost: usize,
    }

    unsafe extern "C" {
        pub(super) fn malloc_trim(pad: usize) -> c_int;
        pub(super) fn mallinfo2() -> MallInfo2;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn usage() -> Option<Usage> {
    // statm: size resident shared ... in pages; resident - shared is anonymous memory.
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut fields = statm.split_whitespace().skip(1).map(str::parse::<u64>);
    let (resident, shared) = (fields.next()?.ok()?, fields.next()?.ok()?);
    // SAFETY: mallinfo2 takes no argument and returns a plain struct by value.
    let info = unsafe { glibc::mallinfo2() };
    Some(Usage {
        resident: resident.saturating_sub(shared) * 4096,
        // uordblks: chunks in use in the arenas; hblkhd: blocks mmapped on their own.
        in_use: (info.uordblks + info.hblkhd) as u64,
    })
}

/// Returns the heap's free pages to the operating system (blocking: a few ms on a large heap).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim takes no pointer; it only returns glibc's own free pages to the OS.
    unsafe {
        glibc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn usage() -> Option<Usage> {
    None
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_a_large_slack() {
        let mib: u64 = 1 << 20;
        let usage = |resident, in_use| Usage {
            resident: resident * mib,
            in_use: in_use * mib,
        };
        assert!(
            !usage(15, 8).worth_trimming(),
            "7 MiB of slack is left alone"
        );
        assert!(usage(40, 10).worth_trimming());
        assert!(
            !usage(400, 330).worth_trimming(),
            "70 MiB of slack on 330 in use is under a quarter"
        );
        assert!(usage(420, 5).worth_trimming());
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_trim_gives_freed_memory_back() {
        // 64 MiB in 64-byte chunks (below the mmap threshold, so they come from the arenas),
        // touched, then freed: the resident set must shrink once trimmed.
        let mut chunks: Vec<Box<[u8; 64]>> = (0..1 << 20).map(|_| Box::new([1u8; 64])).collect();
        let held = usage().expect("usage is readable on glibc");
        chunks.clear();
        chunks.shrink_to_fit();
        trim();
        let after = usage().expect("usage is readable on glibc");
        assert!(
            after.resident + (32 << 20) < held.resident,
            "resident {} MiB before, {} MiB after the trim",
            held.resident >> 20,
            after.resident >> 20
        );
    }
}
