//! The TCP connections [`crate::Roomcast::serve`] accepts: who gets one, how long it may
//! wait, and how it ends.
//!
//! - [`serve`]: the accept loop (hyper's HTTP/1 with upgrades), with the request head cap
//!   (`431`) and the graceful drain.
//! - [`admission`]: at accept time, the per-address cap on open connections and the
//!   descriptor reserve (health checks only, near `RLIMIT_NOFILE`).
//! - [`activity`]: the header-read and idle timeouts of a connection that has no request
//!   under way (websockets and long polls are never timed out here).
//!
//! Every accepted connection is a [`Conn`]:
//!
//! - **Lingering close.** A connection is never closed while the client may still be sending:
//!   the kernel would answer its next packets with a RST, and a RST makes the client's kernel
//!   drop what it received but its application has not read yet (a socket disconnected for
//!   `rate_limit_exceeded` while 300 of its events were still in flight lost its last
//!   `error` event and the Socket.IO DISCONNECT that way). When a connection is dropped its
//!   write side is shut (FIN after everything written) and what the client still sends is
//!   read and thrown away until it closes too, for at most [`LINGER`].
//! - **Write timeout.** A write the client takes nothing of for `server.write_timeout_ms`
//!   fails, and so does every later read and write: the session ends and the connection is
//!   dropped (lingering). Without it a client that stops reading held its connection for
//!   ever: engineioxide's writer waits in a write while the session ends, the reader is
//!   gone, nobody reads the client's bytes any more, and a client still sending blocks too.
//! - **Severing.** At the end of a drain every connection left (the upgraded websockets) is
//!   severed: its reads fail as if the client's connection had broken (an error, not an
//!   end of stream, after which tungstenite would write nothing more). The Engine.IO session
//!   then ends the way it does when a transport drops: what was queued for the client
//!   (`server.shutdown`, the last events) is written first, then a websocket close frame,
//!   with no Engine.IO close packet, which stock clients (python-socketio above all) take
//!   for a deliberate disconnect and do not retry.

pub mod activity;
pub mod admission;
pub mod serve;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

pub use activity::Activity;
pub use admission::{Admission, Admitted, Ticket};
pub use serve::{Server, Settings};

/// How long a dropped connection keeps reading (and discarding) what the client still sends.
pub const LINGER: Duration = Duration::from_secs(2);

/// Every connection accepted and not closed yet (lingering ones included).
#[derive(Clone, Default)]
pub struct Connections {
    sever: CancellationToken,
    open: TaskTracker,
}

impl Connections {
    /// Tracks an accepted connection: its place (`ticket`) is given back once it is closed,
    /// lingering included; `activity` hears of the bytes it reads.
    /// `write_timeout` bounds how long a write may wait for the client to take a byte.
    pub fn conn(
        &self,
        tcp: TcpStream,
        ticket: Ticket,
        activity: Arc<Activity>,
        write_timeout: Duration,
    ) -> Conn {
        let severed = self.sever.child_token().cancelled_owned();
        Conn {
            tcp: Some(tcp),
            severed: Box::pin(severed),
            open: Some((self.open.token(), ticket)),
            activity,
            write_timeout,
            stall: None,
            stalled: false,
        }
    }

    /// Ends the reads of every connection, open or accepted from now on.
    pub fn sever(&self) {
        self.sever.cancel();
    }

    /// Resolves once every connection is closed (after its lingering close).
    pub async fn closed(&self) {
        self.open.close();
        self.open.wait().await;
    }
}

/// One accepted TCP connection: closed lingering, severable.
pub struct Conn {
    /// Taken only by `drop`.
    tcp: Option<TcpStream>,
    severed: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Held until the connection is closed, lingering included.
    open: Option<(TaskTrackerToken, Ticket)>,
    activity: Arc<Activity>,
    write_timeout: Duration,
    /// Runs while a write waits for the client; allocated at the first such wait.
    stall: Option<Stall>,
    /// A write waited past `write_timeout`: the connection is dead both ways.
    stalled: bool,
}

/// The timer of a write waiting for the client, and whether it runs.
struct Stall {
    timer: Pin<Box<tokio::time::Sleep>>,
    armed: bool,
}

impl Conn {
    fn tcp(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        if self.stalled {
            return Err(stalled());
        }
        match self.tcp.as_mut() {
            Some(tcp) => Ok(Pin::new(tcp)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// After a write: progress disarms the timer; a wait arms it, and fails the write (and
    /// the connection) once it has run for `write_timeout`.
    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if write.is_ready() {
            if let Some(stall) = &mut self.stall {
                stall.armed = false;
            }
            return write;
        }
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        let stall = self.stall.get_or_insert_with(|| Stall {
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            armed: true,
        });
        if !stall.armed {
            stall.timer.as_mut().reset(deadline);
            stall.armed = true;
        }
        if stall.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.stalled = true;
        tracing::debug!(
            "connection closed: the client took nothing within server.write_timeout_ms"
        );
        Poll::Ready(Err(stalled()))
    }
}

fn stalled() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the client took nothing within server.write_timeout_ms",
    )
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.severed.as_mut().poll(cx).is_ready() {
            // An error, not an end of stream: tungstenite takes an end of stream for a
            // terminated connection and refuses to write after it, so what the session still
            // had queued (`server.shutdown` itself when the drain is quick) was lost. After a
            // read error it still writes: engineioxide flushes the queue, then sends a close
            // frame.
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        let before = buf.filled().len();
        let read = self.tcp()?.poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read_some();
        }
        read
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let write = self.tcp()?.poll_write(cx, buf);
        self.watch_write(cx, write)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let write = self.tcp()?.poll_write_vectored(cx, bufs);
        self.watch_write(cx, write)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.as_ref().is_some_and(|t| t.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp()?.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp()?.poll_shutdown(cx)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let (Some(tcp), open) = (self.tcp.take(), self.open.take()) else {
            return;
        };
        // Outside a runtime (the process is ending) a plain close is all there is.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                linger(tcp).await;
                drop(open);
            });
        }
    }
}

/// Shuts the write side (FIN after what was written), then reads and discards until the
/// client closes its side, for at most [`LINGER`].
async fn linger(mut tcp: TcpStream) {
    // Fails harmlessly when the write side is already shut or the client is gone.
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 2048];
    let drain = async {
        while let Ok(n) = tcp.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
