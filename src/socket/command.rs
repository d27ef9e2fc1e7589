//! The [`Command`] trait and what a command runs with ([`CommandCx`]), independent of the
//! transport: socketioxide's sockets are one [`Connection`] (see `dispatch`), a plain
//! WebSocket can be another, and both run the same command files.
//!
//! A command is its wire shape (a `Deserialize` struct), a name, a usage string and
//! [`Command::run`]. What every command needs happens once, in [`execute`] and the
//! transport: the event budget (`budget`), decoding the payload (a failure is
//! `invalid_payload` with the usage string), the socket's identity, and the answer (the
//! ack, or an `error` event when the client asked for none). A command that serves only
//! sockets in a room opts into [`CommandCx::subscribed`].

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::reply::CommandError;
use crate::auth::Identity;
use crate::presence::Share;
use crate::rooms::{RoomName, is_identity_room};
use crate::services::Services;

/// What a successful command answers with, sent as the ack.
pub type Reply = Value;

/// A client command. Registered in `socket::register_commands` by one line.
pub trait Command: DeserializeOwned + Send + 'static {
    /// The event name the client sends.
    const NAME: &'static str;
    /// The message of `invalid_payload` when the payload does not decode into `Self`.
    const USAGE: &'static str;

    /// The request from the event's first argument. `payload` is `Err` when the frame has no
    /// readable argument (the parser's message). A command whose payload is optional or read
    /// differently overrides this.
    fn decode(payload: Result<Value, String>) -> Result<Self, CommandError> {
        payload
            .ok()
            .and_then(|p| serde_json::from_value(p).ok())
            .ok_or_else(|| CommandError::InvalidPayload(Self::USAGE.into()))
    }

    fn run(self, cx: &CommandCx<'_>) -> impl Future<Output = Result<Reply, CommandError>> + Send;
}

/// One client connection as commands see it, whatever carries it. Rooms are adapter-level
/// names ([`RoomName::scoped`]).
pub trait Connection: Send + Sync {
    /// For logs.
    fn id(&self) -> String;
    /// The identity the handshake (or the last `auth.refresh`) gave the connection.
    fn identity(&self) -> Option<Arc<Identity>>;
    /// The connection's part in presence.
    fn share(&self) -> Option<Arc<Share>>;
    fn rooms(&self) -> Vec<Cow<'static, str>>;
    fn join(&self, rooms: Vec<Cow<'static, str>>);
    fn leave(&self, rooms: Vec<Cow<'static, str>>);
    /// Replaces the identity (`auth.refresh`); the connection's token expiry follows `new`.
    fn replace_identity(&self, old: &Identity, new: Arc<Identity>);
    /// False once the connection has closed (a command may still be running for it then:
    /// `lock.acquire` releases what it took for a connection gone meanwhile).
    fn connected(&self) -> bool {
        true
    }
}

/// What a command runs with.
pub struct CommandCx<'a> {
    /// The connection's identity when the command arrived.
    pub identity: Arc<Identity>,
    pub services: &'a Services,
    pub conn: &'a dyn Connection,
    held: &'a Held,
}

/// What a command keeps until its answer is on its way to the client (see
/// [`CommandCx::hold_until_answered`]).
#[derive(Default)]
pub struct Held(std::sync::Mutex<Vec<Box<dyn std::any::Any + Send>>>);

impl CommandCx<'_> {
    /// Keeps `guard` (a lock) until the transport has queued the command's answer, so
    /// nothing the lock orders reaches the client before it: `stream.resume` holds its
    /// stream's delivery lock this way, and no delta overtakes the snapshot.
    pub fn hold_until_answered(&self, guard: impl Send + 'static) {
        self.held
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(guard));
    }

    /// `name` as a room the connection is in: `invalid_room` when it is not a room name,
    /// `not_subscribed` when the connection is not in it.
    pub fn subscribed(&self, name: String) -> Result<RoomName, CommandError> {
        let room = RoomName::parse(&name).ok_or(CommandError::InvalidRoom(name))?;
        if !self
            .conn
            .rooms()
            .contains(&room.scoped(&self.identity.tenant))
        {
            return Err(CommandError::NotSubscribed(room.to_string()));
        }
        Ok(room)
    }

    /// The rooms the connection is in, by their public names.
    pub fn public_rooms(&self) -> Vec<RoomName> {
        self.conn
            .rooms()
            .iter()
            .filter_map(|r| RoomName::parse(RoomName::unscope(r)?.1))
            .collect()
    }

    /// How many public rooms the connection is in (its identity room is not one).
    pub fn public_room_count(&self) -> usize {
        self.conn
            .rooms()
            .iter()
            .filter(|r| !is_identity_room(r))
            .count()
    }
}

/// Decodes and runs one `C` for `conn`; the transport sends the answer. What the command
/// holds until then is let go on return: a transport that orders its answer against other
/// messages uses [`execute_holding`].
pub async fn execute<C: Command>(
    conn: &dyn Connection,
    services: &Services,
    payload: Result<Value, String>,
) -> Result<Reply, CommandError> {
    execute_holding::<C>(conn, services, payload, &Held::default()).await
}

/// [`execute`], leaving in `held` what the command holds until its answer is queued: the
/// transport drops `held` right after.
pub async fn execute_holding<C: Command>(
    conn: &dyn Connection,
    services: &Services,
    payload: Result<Value, String>,
    held: &Held,
) -> Result<Reply, CommandError> {
    let request = C::decode(payload)?;
    let Some(identity) = conn.identity() else {
        // Every connection is given its identity before it may send a command.
        tracing::warn!(sid = %conn.id(), command = C::NAME, "command without an identity");
        return Err(CommandError::Forbidden("*".into()));
    };
    let cx = CommandCx {
        identity,
        services,
        conn,
        held,
    };
    request.run(&cx).await
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::config::Config;
    use crate::rooms::identity_room;
    use crate::rooms::{Grant, Id};
    use crate::socket::history::History;
    use crate::socket::ping::Ping;
    use crate::socket::subscribe::Subscribe;
    use crate::socket::unsubscribe::Unsubscribe;

    /// A connection that is no socketioxide socket: the commands run on it all the same.
    struct Fake {
        identity: Arc<Identity>,
        share: Arc<Share>,
        rooms: Mutex<Vec<Cow<'static, str>>>,
    }

    impl Fake {
        fn new() -> Self {
            let identity = Identity {
                user_id: Id::parse("alice").unwrap(),
                tenant: Id::default_tenant(),
                projects: Grant::All,
                agents: Grant::None,
                role: None,
                publish: None,
                expires_at: u64::MAX,
            };
            let rooms = vec![
                identity_room(&identity.tenant, &identity.user_id),
                RoomName::Global.scoped(&identity.tenant),
            ];
            Self {
                identity: Arc::new(identity),
                share: Arc::default(),
                rooms: Mutex::new(rooms),
            }
        }
    }

    impl Connection for Fake {
        fn id(&self) -> String {
            "fake".into()
        }
        fn identity(&self) -> Option<Arc<Identity>> {
            Some(self.identity.clone())
        }
        fn share(&self) -> Option<Arc<Share>> {
            Some(self.share.clone())
        }
        fn rooms(&self) -> Vec<Cow<'static, str>> {
            self.rooms.lock().unwrap().clone()
        }
        fn join(&self, rooms: Vec<Cow<'static, str>>) {
            let mut held = self.rooms.lock().unwrap();
            for room in rooms {
                if !held.contains(&room) {
                    held.push(room);
                }
            }
        }
        fn leave(&self, rooms: Vec<Cow<'static, str>>) {
            self.rooms.lock().unwrap().retain(|r| !rooms.contains(r));
        }
        fn replace_identity(&self, _: &Identity, _: Arc<Identity>) {}
    }

    /// Services over memory stores, with the default config.
    pub(crate) fn services() -> Services {
        let config = Config::default().with_fallbacks();
        let (presence, _queue) = crate::presence::Presence::new();
        Services {
            verifier: crate::auth::JwtVerifier::from_config(&config.auth).unwrap(),
            node_id: "test".into(),
            counters: Arc::default(),
            presence,
            presence_store: Arc::new(crate::presence::MemoryStore::default()),
            history: crate::history::HistoryStore::Local(Arc::new(crate::history::History::new(
                config.history.clone(),
            ))),
            streams: Arc::new(crate::streams::Streams::memory(config.streams.clone())),
            locks: Arc::new(crate::locks::Locks::memory(config.locks.clone())),
            documents: Arc::new(crate::documents::Documents::new(
                Arc::new(crate::documents::MemoryDocuments::default()),
                config.documents.clone(),
                None,
            )),
            limits: Arc::new(crate::limits::Limits::new(&config.limits)),
            outbound: crate::outbound::Outbound::new(),
            client_schemas: Default::default(),
            broadcaster: Default::default(),
            hooks: crate::hooks_out::Webhooks::default(),
            config,
        }
    }

    #[tokio::test]
    async fn commands_run_on_any_connection() {
        let (conn, ctx) = (Fake::new(), services());
        let history = json!({"room": "project:1"});
        let refused = execute::<History>(&conn, &ctx, Ok(history.clone())).await;
        assert_eq!(
            refused,
            Err(CommandError::NotSubscribed("project:1".into()))
        );
        let ack = execute::<Subscribe>(&conn, &ctx, Ok(history.clone())).await;
        assert_eq!(ack.unwrap()["rooms"], json!(["project:1"]));
        let page = execute::<History>(&conn, &ctx, Ok(history)).await.unwrap();
        assert_eq!(
            (&page["ok"], &page["room"]),
            (&json!(true), &json!("project:1"))
        );
        let stay = execute::<Unsubscribe>(&conn, &ctx, Ok(json!({"room": "global"}))).await;
        assert_eq!(stay, Err(CommandError::MustStay("global".into())));
        let pong = execute::<Ping>(&conn, &ctx, Err("no argument".into())).await;
        assert_eq!(pong.unwrap()["pong"], true);
    }

    /// A delivery that only counts.
    struct Counted(std::sync::atomic::AtomicU64);

    impl crate::delivery::Deliver for Counted {
        fn deliver<'a>(
            &'a self,
            _rooms: Vec<Cow<'static, str>>,
            _event: &'a str,
            _payload: &'a serde_json::value::RawValue,
            _local_only: bool,
            _except: Option<&'a str>,
        ) -> futures_util::future::BoxFuture<'a, Result<u64, String>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async { Ok(0) })
        }
    }

    /// `stream.resume` keeps its stream's deltas back until the transport has queued the
    /// answer (drops what the command held): none can overtake the snapshot.
    #[tokio::test]
    async fn stream_resume_holds_the_deltas_until_it_is_answered() {
        use crate::socket::stream_resume::StreamResume;
        use crate::streams::NewStream;
        let (conn, ctx) = (Fake::new(), services());
        let new = NewStream {
            tenant: conn.identity.tenant.clone(),
            id: Id::parse("s1").unwrap(),
            room: RoomName::Global,
            kind: "llm".into(),
            meta: json!({}),
            requested_by: None,
        };
        ctx.streams.create(&new).await.unwrap();
        let io = Counted(Default::default());
        ctx.streams
            .append(&io, &new.tenant, &new.id, "héllo")
            .await
            .unwrap();
        let held = Held::default();
        let ack = execute_holding::<StreamResume>(
            &conn,
            &ctx,
            Ok(json!({"stream_id": "s1", "offset": 1})),
            &held,
        )
        .await
        .unwrap();
        assert_eq!(
            (&ack["status"], &ack["offset"], &ack["text"], &ack["length"]),
            (&json!("open"), &json!(1), &json!("éllo"), &json!(5))
        );
        let append = ctx.streams.append(&io, &new.tenant, &new.id, " 👋🏽");
        tokio::pin!(append);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), &mut append).await;
        assert!(waited.is_err(), "a delta went out before the answer");
        drop(held);
        assert_eq!(append.await.unwrap(), 5);
        assert_eq!(io.0.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_payload_that_does_not_decode_is_told_the_usage() {
        let (conn, ctx) = (Fake::new(), services());
        for payload in [Err("no argument".to_owned()), Ok(json!({"room": 5}))] {
            let refused = execute::<History>(&conn, &ctx, payload).await;
            assert_eq!(
                refused,
                Err(CommandError::InvalidPayload(History::USAGE.into()))
            );
        }
        let unreadable = execute::<Subscribe>(&conn, &ctx, Err("no argument".into())).await;
        assert_eq!(
            unreadable,
            Err(CommandError::InvalidPayload(
                "unreadable payload: no argument".into()
            ))
        );
    }
}
