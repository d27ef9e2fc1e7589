//! Server-Sent Events: the same rooms as sockets, read with a plain `EventSource`
//! (`GET /api/v1/sse`, in [`crate::http`]). This module is the delivery side: the
//! [`SseHub`] holds this node's SSE connections by room (and the plain JSON WebSocket
//! connections of [`crate::transport::json`], which take the same frames: each event's
//! envelope text, made once per publish and shared by every recipient), and the socket side's
//! [`crate::delivery::Deliver`] hands it every event it hands its own sockets, at the same
//! point (under the same history and stream delivery locks), so an SSE connection gets a
//! room's events in the order sockets do, and a catch-up's backlog before any live event.
//!
//! Each connection has a bounded queue (`sse.buffer` events): a live event that finds it
//! full closes the connection (the client reconnects with its `Last-Event-ID` and recovers
//! what it missed), so a slow reader costs a bounded amount of memory. A catch-up's backlog
//! (bounded by history) and the connection's own notices are queued regardless.
//!
//! The resume token ([`ResumeToken`], each event's `id:`) covers every room of the
//! connection: each room's epoch and last `seq`. Its format is not part of the API.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

/// One event as an SSE connection writes it: `event:` its type, `data:` the envelope, and
/// where it puts the connection in its rooms (none for a volatile event or a notice). A
/// `/ws/json` connection writes `data` as one text frame, without a copy.
#[derive(Debug)]
pub struct Frame {
    pub event: String,
    pub data: tokio_tungstenite::tungstenite::Utf8Bytes,
    /// The Socket.IO text of the event on `/` (`42["<event>",<data>]`), made by the first
    /// lean socket that writes it and shared by the others.
    socketio: std::sync::OnceLock<tokio_tungstenite::tungstenite::Utf8Bytes>,
    /// The binary attachments written after the text (a Socket.IO binary packet: a Yjs
    /// update to a lean editor).
    pub binary: Vec<bytes::Bytes>,
    /// `(public room, epoch, seq)` for each room the event is numbered in.
    pub positions: Vec<(String, String, u64)>,
    /// Whether the frame carries the connection's resume token (`id:`). Numbered events do;
    /// `connection.established` does too (the starting point).
    pub with_id: bool,
}

impl Frame {
    /// A live or replayed event: its positions read from the envelope.
    pub fn event(event: &str, payload: &RawValue) -> Self {
        let positions = positions_of(payload);
        Self {
            event: event.to_owned(),
            data: payload.get().to_owned().into(),
            socketio: std::sync::OnceLock::new(),
            binary: Vec::new(),
            with_id: !positions.is_empty(),
            positions,
        }
    }

    /// A frame a lean connection made for itself (a notice, an answer), `text` exactly as
    /// its protocol writes it.
    pub fn wire(text: String) -> Self {
        Self::binary(text, Vec::new())
    }

    /// [`Frame::wire`] with binary attachments, written after the text.
    pub fn binary(text: String, binary: Vec<bytes::Bytes>) -> Self {
        Self {
            event: String::new(),
            socketio: std::sync::OnceLock::new(),
            binary,
            data: text.into(),
            positions: Vec::new(),
            with_id: false,
        }
    }

    /// The Socket.IO text of the frame for a socket of namespace `ns`: an event packet
    /// (made once for `/`, the usual namespace), or the frame's own text ([`Frame::wire`]).
    pub fn socketio(&self, ns: &str) -> tokio_tungstenite::tungstenite::Utf8Bytes {
        if self.event.is_empty() {
            return self.data.clone();
        }
        if ns == "/" {
            return self
                .socketio
                .get_or_init(|| socketio_event(ns, &self.event, &self.data).into())
                .clone();
        }
        socketio_event(ns, &self.event, &self.data).into()
    }

    /// A notice of the connection itself (`connection.established`, `gap`,
    /// `stream.snapshot`).
    pub fn notice(event: &str, data: &serde_json::Value, with_id: bool) -> Self {
        Self {
            event: event.to_owned(),
            data: data.to_string().into(),
            socketio: std::sync::OnceLock::new(),
            binary: Vec::new(),
            positions: Vec::new(),
            with_id,
        }
    }
}

/// `42<ns>,["<event>",<data>]`: a Socket.IO event packet in an Engine.IO message, with
/// `data` (JSON text) as it is.
pub fn socketio_event(ns: &str, event: &str, data: &str) -> String {
    let name = serde_json::to_string(event).unwrap_or_else(|_| "\"\"".into());
    let mut text = String::with_capacity(6 + ns.len() + name.len() + data.len());
    text.push_str("42");
    if !ns.is_empty() && ns != "/" {
        text.push_str(ns);
        text.push(',');
    }
    text.push('[');
    text.push_str(&name);
    text.push(',');
    text.push_str(data);
    text.push(']');
    text
}

/// The envelope's numbering: `room`, `seq`, `epoch` and `also` (section 5.1).
fn positions_of(payload: &RawValue) -> Vec<(String, String, u64)> {
    #[derive(Deserialize)]
    struct Also {
        room: String,
        seq: u64,
        epoch: String,
    }
    #[derive(Deserialize)]
    struct Head {
        room: Option<String>,
        seq: Option<u64>,
        epoch: Option<String>,
        #[serde(default)]
        also: Vec<Also>,
    }
    let Ok(head) = serde_json::from_str::<Head>(payload.get()) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(1 + head.also.len());
    if let (Some(room), Some(seq), Some(epoch)) = (head.room, head.seq, head.epoch) {
        out.push((room, epoch, seq));
    }
    out.extend(head.also.into_iter().map(|a| (a.room, a.epoch, a.seq)));
    out
}

/// Why the hub closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Its queue was full: it read too slowly.
    Overflowed,
    /// Its user was disconnected (`POST /api/v1/users/{id}/disconnect`).
    Revoked,
    /// The server drains.
    Draining,
}

/// What a hub connection is, for the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sse,
    /// `/ws/json`.
    Json,
    /// A Yjs document's socket on the lean websocket path: in its user's identity room
    /// only (so a revocation and a drain reach it), counted nowhere.
    Editor,
    /// A Socket.IO socket of namespace `ns` on the lean websocket path.
    Socket {
        ns: &'static str,
    },
}

/// One SSE or lean WebSocket connection as the hub sees it.
pub struct Conn {
    id: u64,
    /// A lean connection's session id: a publish from it skips it (on every node: a
    /// broadcast names it in its `except` rooms). `None` for SSE.
    sid: Option<Box<str>>,
    kind: Kind,
    /// The most live events it may have queued.
    buffer: usize,
    /// Set before `closed` is cancelled by the hub (0: by its own side).
    why: std::sync::atomic::AtomicU8,
    /// Out of the hub (its rooms and its count) already.
    removed: std::sync::atomic::AtomicBool,
    /// The rooms it is in, so that leaving the hub touches only those.
    in_rooms: Mutex<Vec<String>>,
    /// The queue; `None` is the mark of its end, queued when the connection is closed so
    /// the reader wakes. Checked per frame with atomics only (no lock: a publish to a room
    /// of thousands queues on each).
    tx: mpsc::UnboundedSender<Option<Arc<Frame>>>,
    /// Frames queued and not yet written.
    queued: AtomicUsize,
    /// Set to end the connection: its queue overflowed, its user was revoked, or the
    /// server drains.
    closed: std::sync::atomic::AtomicBool,
    /// Woken when `closed` is set, for a writer that waits on something else.
    on_close: tokio::sync::Notify,
    /// Its first event is queued: `held` is `None` for good.
    started: std::sync::atomic::AtomicBool,
    /// Live events held until the connection's first event is queued ([`Conn::first`]), so
    /// `connection.established` comes first even when its rooms are live before it is
    /// written; `None` from then on.
    held: Mutex<Option<Vec<Arc<Frame>>>>,
}

impl Conn {
    /// Queues `frame`; a live one (`bounded`) that finds the queue full closes the
    /// connection instead.
    pub fn push(&self, frame: Arc<Frame>, bounded: bool, buffer: usize) -> Pushed {
        if self.is_closed() {
            return Pushed::Closed;
        }
        if bounded {
            if self.started.load(Ordering::Acquire) {
                if self.queued.load(Ordering::Relaxed) >= buffer {
                    return self.overflowed();
                }
                return self.send(frame);
            }
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            let waiting = held.as_ref().map_or(0, Vec::len);
            if self.queued.load(Ordering::Relaxed) + waiting >= buffer {
                return self.overflowed();
            }
            if let Some(held) = held.as_mut() {
                held.push(frame);
                return Pushed::Queued;
            }
        }
        self.send(frame)
    }

    fn overflowed(&self) -> Pushed {
        tracing::debug!(conn = self.id, "buffer full: closing the connection");
        self.close(CloseReason::Overflowed);
        Pushed::Overflowed
    }

    fn send(&self, frame: Arc<Frame>) -> Pushed {
        self.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.send(Some(frame)) {
            Ok(()) => Pushed::Queued,
            Err(_) => Pushed::Closed,
        }
    }

    /// Whether the connection is closed (or closing).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Resolves once the connection is closed.
    pub async fn closed(&self) {
        loop {
            let notified = self.on_close.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Ends the connection for `why` (the first reason given is kept).
    pub fn close(&self, why: CloseReason) {
        let code = match why {
            CloseReason::Overflowed => 1,
            CloseReason::Revoked => 2,
            CloseReason::Draining => 3,
        };
        let _ = self
            .why
            .compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed);
        if !self.closed.swap(true, Ordering::AcqRel) {
            // The mark wakes a reader waiting for a frame; the notice, one waiting otherwise.
            let _ = self.tx.send(None);
            self.on_close.notify_waiters();
        }
    }

    /// Why the hub closed the connection; `None` while it is open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        match self.why.load(Ordering::Relaxed) {
            1 => Some(CloseReason::Overflowed),
            2 => Some(CloseReason::Revoked),
            3 => Some(CloseReason::Draining),
            _ => None,
        }
    }

    /// The most live events it may have queued.
    pub fn buffer(&self) -> usize {
        self.buffer
    }

    /// The scoped rooms it is in.
    pub fn rooms(&self) -> Vec<std::borrow::Cow<'static, str>> {
        let rooms = self.in_rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.iter().cloned().map(std::borrow::Cow::Owned).collect()
    }

    /// Queues the connection's first event, then the live events held meanwhile.
    pub fn first(&self, frame: Arc<Frame>) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        self.send(frame);
        for frame in held.take().unwrap_or_default() {
            self.send(frame);
        }
        self.started.store(true, Ordering::Release);
    }
}

/// What became of a frame handed to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The queue was full: the connection is closed now.
    Overflowed,
    /// The connection was closed already.
    Closed,
}

/// The reading end of a connection's queue, for the response stream.
pub struct Queue {
    pub conn: Arc<Conn>,
    rx: mpsc::UnboundedReceiver<Option<Arc<Frame>>>,
    hub: Arc<SseHub>,
}

impl Queue {
    /// The next frame; `None` once the connection is closed.
    pub async fn next(&mut self) -> Option<Arc<Frame>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// [`Queue::next`] as a poll, for a writer that waits on several queues.
    pub fn poll_next(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Arc<Frame>>> {
        use std::task::Poll;
        if self.conn.is_closed() {
            return Poll::Ready(None);
        }
        // A closed connection queues the end mark (`None`): the wait ends with it.
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Some(frame))) => {
                self.conn.queued.fetch_sub(1, Ordering::Relaxed);
                if self.conn.is_closed() {
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(frame))
            }
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The next frame already queued, without waiting (also after the connection closed:
    /// what was queued can still be written).
    pub fn try_next(&mut self) -> Option<Arc<Frame>> {
        let frame = self.rx.try_recv().ok().flatten()?;
        self.conn.queued.fetch_sub(1, Ordering::Relaxed);
        Some(frame)
    }
}

impl Queue {
    /// Takes the connection out of the hub now (its rooms, its count), while its end is
    /// still being written: a closed connection is no longer counted as open.
    pub fn leave_hub(&self) {
        self.hub.remove(&self.conn);
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.hub.remove(&self.conn);
    }
}

/// This node's SSE and `/ws/json` connections, by scoped room name.
pub struct SseHub {
    /// Members by connection id: joining and leaving a room of thousands costs one entry.
    rooms: RwLock<HashMap<String, HashMap<u64, Arc<Conn>>>>,
    next_id: AtomicU64,
    /// SSE connections open.
    connections: AtomicU64,
    /// `/ws/json` connections open.
    json_connections: AtomicU64,
    /// Socket.IO sockets open on the lean websocket path.
    lean_sockets: AtomicU64,
    /// Yjs document sockets open on the lean websocket path.
    editors: AtomicU64,
    /// Connections closed because their queue was full.
    overflowed: AtomicU64,
    buffer: usize,
    /// Set when the server drains: every connection ends, new ones end at once.
    draining: std::sync::atomic::AtomicBool,
}

impl SseHub {
    /// A hub whose connections queue at most `buffer` live events.
    pub fn new(buffer: usize) -> Self {
        Self {
            rooms: RwLock::default(),
            next_id: AtomicU64::new(1),
            connections: AtomicU64::new(0),
            json_connections: AtomicU64::new(0),
            lean_sockets: AtomicU64::new(0),
            editors: AtomicU64::new(0),
            overflowed: AtomicU64::new(0),
            buffer: buffer.max(1),
            draining: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A new SSE connection, in no room yet; it leaves the hub when its queue is dropped.
    pub fn open(self: &Arc<Self>) -> Queue {
        self.open_conn(Kind::Sse, None, self.buffer)
    }

    /// A new lean connection (`/ws/json` or a Socket.IO socket) with session id `sid`,
    /// queueing at most `buffer` live events; in no room yet.
    pub fn open_lean(self: &Arc<Self>, kind: Kind, sid: &str, buffer: usize) -> Queue {
        self.open_conn(kind, Some(sid.into()), buffer.max(1))
    }

    fn count(&self, kind: Kind) -> &AtomicU64 {
        match kind {
            Kind::Sse => &self.connections,
            Kind::Json => &self.json_connections,
            Kind::Socket { .. } => &self.lean_sockets,
            Kind::Editor => &self.editors,
        }
    }

    fn open_conn(self: &Arc<Self>, kind: Kind, sid: Option<Box<str>>, buffer: usize) -> Queue {
        self.count(kind).fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            sid,
            kind,
            buffer,
            why: std::sync::atomic::AtomicU8::new(0),
            removed: std::sync::atomic::AtomicBool::new(false),
            in_rooms: Mutex::default(),
            tx,
            queued: AtomicUsize::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
            on_close: tokio::sync::Notify::new(),
            started: std::sync::atomic::AtomicBool::new(false),
            held: Mutex::new(Some(Vec::new())),
        });
        if self.is_draining() {
            conn.close(CloseReason::Draining);
        }
        Queue {
            conn,
            rx,
            hub: self.clone(),
        }
    }

    /// Puts `conn` in `scoped` rooms: every event delivered to them from now on is queued.
    pub fn join(&self, conn: &Arc<Conn>, scoped: impl IntoIterator<Item = String>) {
        let mut rooms = self.rooms.write().unwrap_or_else(|e| e.into_inner());
        let mut mine = conn.in_rooms.lock().unwrap_or_else(|e| e.into_inner());
        if conn.removed.load(Ordering::Acquire) {
            return; // gone already: it must not come back into a room
        }
        for room in scoped {
            let members = rooms.entry(room.clone()).or_default();
            if members.insert(conn.id, conn.clone()).is_none() {
                mine.push(room);
            }
        }
    }

    /// Takes `conn` out of `scoped` rooms.
    pub fn leave(&self, conn: &Conn, scoped: &[std::borrow::Cow<'static, str>]) {
        let mut rooms = self.rooms.write().unwrap_or_else(|e| e.into_inner());
        let mut mine = conn.in_rooms.lock().unwrap_or_else(|e| e.into_inner());
        for room in scoped {
            Self::take_out(&mut rooms, room, conn.id);
        }
        mine.retain(|r| !scoped.iter().any(|s| s == r));
    }

    fn take_out(rooms: &mut HashMap<String, HashMap<u64, Arc<Conn>>>, room: &str, id: u64) {
        if let Some(members) = rooms.get_mut(room) {
            members.remove(&id);
            if members.is_empty() {
                rooms.remove(room);
            }
        }
    }

    fn remove(&self, conn: &Conn) {
        let mut rooms = self.rooms.write().unwrap_or_else(|e| e.into_inner());
        let mut mine = conn.in_rooms.lock().unwrap_or_else(|e| e.into_inner());
        if conn.removed.swap(true, Ordering::AcqRel) {
            return;
        }
        for room in mine.drain(..) {
            Self::take_out(&mut rooms, &room, conn.id);
        }
        self.count(conn.kind).fetch_sub(1, Ordering::Relaxed);
    }

    /// Queues `payload` as `event` on every connection in any of `rooms` (scoped names),
    /// once per connection, except the `/ws/json` connections whose session id is in
    /// `except` (a client event's sender). Called where sockets are handed the same event.
    pub fn deliver(
        &self,
        rooms: &[std::borrow::Cow<'static, str>],
        event: &str,
        payload: &RawValue,
        except: &[std::borrow::Cow<'static, str>],
    ) {
        let map = self.rooms.read().unwrap_or_else(|e| e.into_inner());
        if map.is_empty() {
            return;
        }
        // Made once, for the first recipient, and shared by every other.
        let mut frame: Option<Arc<Frame>> = None;
        // A connection in two of the rooms gets the event once; with one room (the usual
        // publish) there is nothing to deduplicate.
        let mut seen = std::collections::HashSet::new();
        for room in rooms {
            for conn in map.get(room.as_ref()).into_iter().flat_map(|m| m.values()) {
                let skipped = conn
                    .sid
                    .as_deref()
                    .is_some_and(|sid| except.iter().any(|e| e == sid));
                if skipped || (rooms.len() > 1 && !seen.insert(conn.id)) {
                    continue;
                }
                let frame = frame
                    .get_or_insert_with(|| Arc::new(Frame::event(event, payload)))
                    .clone();
                // Queueing takes no lock of the hub's: done under its read lock.
                if conn.push(frame, true, conn.buffer) == Pushed::Overflowed {
                    self.overflowed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Ends every connection in any of `rooms` (an identity room: a user's revocation);
    /// returns how many were open, Yjs editors aside: like the census, and like a document's
    /// socket on socketioxide, an editor is no connection of its own in a count.
    pub fn close_rooms(&self, rooms: &[std::borrow::Cow<'static, str>]) -> u64 {
        let map = self.rooms.read().unwrap_or_else(|e| e.into_inner());
        let mut closed = 0;
        for conn in rooms
            .iter()
            .filter_map(|r| map.get(r.as_ref()))
            .flat_map(|m| m.values())
        {
            if !conn.is_closed() {
                conn.close(CloseReason::Revoked);
                if !matches!(conn.kind, Kind::Editor) {
                    closed += 1;
                }
            }
        }
        closed
    }

    /// The most live events a connection may have queued.
    pub fn buffer(&self) -> usize {
        self.buffer
    }

    /// SSE connections open on this node.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// `/ws/json` connections open on this node.
    pub fn json_connections(&self) -> u64 {
        self.json_connections.load(Ordering::Relaxed)
    }

    /// Calls `each` with the namespace and the scoped rooms (its identity room among them)
    /// of every Socket.IO socket on this node's lean path: the census of sockets counts
    /// them with socketioxide's.
    pub fn each_lean_socket(&self, mut each: impl FnMut(&'static str, &[String])) {
        let map = self.rooms.read().unwrap_or_else(|e| e.into_inner());
        // Every connection is in exactly one identity room: each is visited once.
        let members = map
            .iter()
            .filter(|(room, _)| crate::rooms::is_identity_room(room))
            .flat_map(|(_, members)| members.values());
        for conn in members {
            if let Kind::Socket { ns } = conn.kind {
                each(ns, &conn.in_rooms.lock().unwrap_or_else(|e| e.into_inner()));
            }
        }
    }

    /// Socket.IO sockets open on this node's lean websocket path.
    pub fn lean_sockets(&self) -> u64 {
        self.lean_sockets.load(Ordering::Relaxed)
    }

    /// SSE and lean connections closed so far because they read too slowly.
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Ends every connection (the server drains); the clients reconnect elsewhere.
    pub fn close_all(&self) {
        self.draining.store(true, Ordering::Release);
        let rooms = self.rooms.read().unwrap_or_else(|e| e.into_inner());
        // Every connection is in its identity room at least.
        for conn in rooms.values().flat_map(|m| m.values()) {
            conn.close(CloseReason::Draining);
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Where a connection is in each of its rooms: the `id:` of its events. Written
/// `v1,<room>/<epoch>/<seq>,...`; clients treat it as opaque.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResumeToken(pub BTreeMap<String, (String, u64)>);

impl ResumeToken {
    const VERSION: &str = "v1";

    pub fn encode(&self) -> String {
        let mut out = String::from(Self::VERSION);
        for (room, (epoch, seq)) in &self.0 {
            out.push(',');
            out.push_str(room);
            out.push('/');
            out.push_str(epoch);
            out.push('/');
            out.push_str(&seq.to_string());
        }
        out
    }

    /// `None` for anything this server did not write.
    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split(',');
        if parts.next()? != Self::VERSION {
            return None;
        }
        let mut rooms = BTreeMap::new();
        for part in parts {
            let mut fields = part.split('/');
            let (room, epoch, seq) = (fields.next()?, fields.next()?, fields.next()?);
            // What this server writes only: the token goes back out as an `id:` line.
            let safe = |s: &str, extra: &[char]| {
                s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
            };
            if fields.next().is_some()
                || room.is_empty()
                || !safe(room, &[':', '_', '.', '-'])
                || !safe(epoch, &['_', '-'])
            {
                return None;
            }
            rooms.insert(room.to_owned(), (epoch.to_owned(), seq.parse().ok()?));
        }
        Some(Self(rooms))
    }

    /// Moves the rooms of this connection that `frame` is numbered in (never back within
    /// an epoch: a live event the starting positions already counted changes nothing).
    pub fn advance(&mut self, frame: &Frame) {
        for (room, epoch, seq) in &frame.positions {
            if let Some(at) = self.0.get_mut(room)
                && (at.0 != *epoch || at.1 < *seq)
            {
                *at = (epoch.clone(), *seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resume_token_round_trips_and_refuses_what_it_did_not_write() {
        let token = ResumeToken(BTreeMap::from([
            ("project:42".to_owned(), ("00ab".to_owned(), 7)),
            ("user:a.b-c_d".to_owned(), ("ff".to_owned(), 0)),
        ]));
        let text = token.encode();
        assert_eq!(text, "v1,project:42/00ab/7,user:a.b-c_d/ff/0");
        assert_eq!(ResumeToken::decode(&text), Some(token));
        assert_eq!(ResumeToken::decode("v1"), Some(ResumeToken::default()));
        for bad in [
            "",
            "v2,global/a/1",
            "v1,global/a",
            "v1,global/a/x",
            "v1,/a/1",
            "v1,g/a/1/2",
            "v1,g/a\nb/1",
        ] {
            assert_eq!(ResumeToken::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn frames_read_their_positions_from_the_envelope() {
        let payload = RawValue::from_string(
            r#"{"id":"x","type":"t","room":"project:1","seq":4,"epoch":"e","also":[{"room":"user:u","seq":9,"epoch":"f"}],"data":{"room":"no"}}"#.into(),
        )
        .unwrap();
        let frame = Frame::event("t", &payload);
        assert!(frame.with_id);
        assert_eq!(
            frame.positions,
            vec![
                ("project:1".to_owned(), "e".to_owned(), 4),
                ("user:u".to_owned(), "f".to_owned(), 9)
            ]
        );
        let mut token = ResumeToken(BTreeMap::from([("user:u".to_owned(), ("f".to_owned(), 1))]));
        token.advance(&frame);
        assert_eq!(token.encode(), "v1,user:u/f/9");
        let volatile = RawValue::from_string(
            r#"{"id":"x","type":"stream.delta","room":"global","data":{}}"#.into(),
        )
        .unwrap();
        assert!(!Frame::event("stream.delta", &volatile).with_id);
    }

    #[tokio::test]
    async fn live_events_wait_for_the_first_event() {
        let hub = Arc::new(SseHub::new(8));
        let mut queue = hub.open();
        hub.join(&queue.conn, ["t/global".to_owned()]);
        let payload = RawValue::from_string(r#"{"room":"global","data":1}"#.into()).unwrap();
        hub.deliver(
            &[std::borrow::Cow::Borrowed("t/global")],
            "live",
            &payload,
            &[],
        );
        let first = Frame::notice("connection.established", &serde_json::json!({}), true);
        queue.conn.first(Arc::new(first));
        let backlog = Frame::notice("backlog", &serde_json::json!({}), false);
        queue.conn.push(Arc::new(backlog), false, 8);
        let order: Vec<String> = [
            queue.next().await.unwrap(),
            queue.next().await.unwrap(),
            queue.next().await.unwrap(),
        ]
        .iter()
        .map(|f| f.event.clone())
        .collect();
        assert_eq!(order, ["connection.established", "live", "backlog"]);
    }

    #[tokio::test]
    async fn a_full_queue_closes_the_connection() {
        let hub = Arc::new(SseHub::new(2));
        let mut queue = hub.open();
        queue.conn.first(Arc::new(Frame::notice(
            "first",
            &serde_json::json!({}),
            true,
        )));
        assert_eq!(queue.next().await.unwrap().event, "first");
        hub.join(&queue.conn, ["t/global".to_owned()]);
        let payload = RawValue::from_string(r#"{"room":"global","data":1}"#.into()).unwrap();
        let rooms = [std::borrow::Cow::Borrowed("t/global")];
        hub.deliver(&rooms, "a", &payload, &[]);
        hub.deliver(&rooms, "a", &payload, &[]);
        assert!(!queue.conn.is_closed());
        hub.deliver(&rooms, "a", &payload, &[]);
        assert!(queue.conn.is_closed());
        assert_eq!(hub.overflowed(), 1);
        assert!(queue.next().await.is_none());
        assert_eq!(hub.connections(), 1);
        drop(queue);
        assert_eq!(hub.connections(), 0);
        assert!(hub.rooms.read().unwrap().is_empty());
    }
}
