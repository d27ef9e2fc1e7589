//! The TCP connections [`crate::Roomcast::serve`] accepts, and how they end.
//!
//! - **Lingering close.** A connection is never closed while the client may still be sending:
//!   the kernel would answer its next packets with a RST, and a RST makes the client's kernel
//!   drop what it received but its application has not read yet (a socket disconnected for
//!   `rate_limit_exceeded` while 300 of its events were still in flight lost its last
//!   `error` event and the Socket.IO DISCONNECT that way). When a connection is dropped its
//!   write side is shut (FIN after everything written) and what the client still sends is
//!   read and thrown away until it closes too, for at most [`LINGER`].
//! - **Severing.** At the end of a drain every connection left (the upgraded websockets) is
//!   severed: its reads end as if the client had gone. The Engine.IO session then ends the
//!   way it does when a transport drops: what was queued for the client (`server.shutdown`,
//!   the last events) is written first, then a websocket close frame, with no Engine.IO
//!   close packet, which stock clients (python-socketio above all) take for a deliberate
//!   disconnect and do not retry.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

/// How long a dropped connection keeps reading (and discarding) what the client still sends.
pub const LINGER: Duration = Duration::from_secs(2);

/// Every connection accepted through [`Connections::listener`] and not closed yet (lingering
/// ones included).
#[derive(Clone, Default)]
pub struct Connections {
    sever: CancellationToken,
    open: TaskTracker,
}

impl Connections {
    /// Accepts through `listener`, keeping track of each connection.
    pub fn listener(&self, listener: TcpListener) -> Listener {
        Listener {
            inner: listener,
            connections: self.clone(),
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

/// A [`TcpListener`] whose connections are [`Conn`]s of one [`Connections`].
pub struct Listener {
    inner: TcpListener,
    connections: Connections,
}

impl axum::serve::Listener for Listener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        // axum's own accept loop: logs and retries errors (EMFILE backs off).
        let (tcp, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let severed = self.connections.sever.child_token().cancelled_owned();
        let conn = Conn {
            tcp: Some(tcp),
            severed: Box::pin(severed),
            open: Some(self.connections.open.token()),
        };
        (conn, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// One accepted TCP connection: closed lingering, severable.
pub struct Conn {
    /// Taken only by `drop`.
    tcp: Option<TcpStream>,
    severed: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Held until the connection is closed, lingering included.
    open: Option<TaskTrackerToken>,
}

impl Conn {
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        match &self.tcp {
            Some(tcp) => tcp.set_nodelay(nodelay),
            None => Ok(()),
        }
    }

    fn tcp(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        match self.tcp.as_mut() {
            Some(tcp) => Ok(Pin::new(tcp)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.severed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(())); // end of stream
        }
        self.tcp()?.poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.tcp()?.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.tcp()?.poll_write_vectored(cx, bufs)
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
