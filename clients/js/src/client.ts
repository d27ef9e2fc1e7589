import { io, type ManagerOptions, type Socket, type SocketOptions } from "socket.io-client";

import { Emitter } from "./emitter.js";
import { RoomcastError } from "./errors.js";
import { RoomcastStream, type StreamHost, type StreamOptions } from "./stream.js";
import type {
  Ack,
  AuthExpired,
  AuthExpiring,
  ConnectionEstablished,
  CustomEnvelope,
  Envelope,
  EventType,
  HistoryReply,
  LockGrant,
  PresenceReply,
  PublishAck,
  PublishOptions,
  RefreshReply,
  RpcReply,
  RoomPosition,
  ServerShutdown,
  SubscribeAck,
  WireError,
} from "./types.js";

export type ConnectionState = "connecting" | "connected" | "reconnecting" | "disconnected";

export interface Cursor {
  epoch: string;
  seq: number;
}

/** `gap`: events of `room` after the client's cursor are lost; refetch the room's state. */
export interface GapInfo {
  room: string;
  /** Where the room stands now; the client continues from here. */
  epoch: string;
  seq: number;
}

/** `room_lost`: a room the client had subscribed is no longer joined. */
export interface RoomLost {
  room: string;
  /** `forbidden`, `invalid_room`, `too_many_rooms` (recovery or re-subscribe), `token_refresh` (left_rooms). */
  code: string;
}

/** The meta events of a client, besides the typed event types. */
export interface ClientMetaEvents {
  /** Every envelope that passed duplicate detection, typed or custom. */
  "*": Envelope | CustomEnvelope;
  gap: GapInfo;
  room_lost: RoomLost;
  established: ConnectionEstablished;
  /** Failed handshakes, failed token refreshes, failed re-subscribes, server `error` events. */
  error: RoomcastError;
  expiring: AuthExpiring;
  expired: AuthExpired;
  refreshed: RefreshReply;
  shutdown: ServerShutdown;
}

/** Everything `client.on` accepts: each event type gives its typed envelope. */
export type ClientEventMap = { [K in EventType]: Envelope<K> } & ClientMetaEvents;

export type TokenSource = () => string | Promise<string>;

export interface ClientOptions {
  /** Server URL, e.g. `http://127.0.0.1:8000` (or with the `/ws` namespace). */
  url: string;
  /** A fixed token. Give `getToken` instead to reconnect and refresh with fresh tokens. */
  token?: string;
  /** Called on every (re)connect and on `auth.expiring`. */
  getToken?: TokenSource;
  /** Rooms to subscribe once connected (besides `global` and `user:<sub>`). */
  rooms?: string[];
  /** socket.io-client backoff: first delay (default 1000 ms), doubled per attempt… */
  reconnectionDelay?: number;
  /** …up to this (default 5000 ms)… */
  reconnectionDelayMax?: number;
  /** …each randomized by ± this factor (default 0.5). */
  randomizationFactor?: number;
  /** Default Infinity. */
  reconnectionAttempts?: number;
  /** Default `["websocket"]`. */
  transports?: ("websocket" | "polling" | "webtransport")[];
  /** Ack timeout for commands, ms (default 10000). */
  ackTimeout?: number;
  /** Connect at once (default true); otherwise call `connect()`. */
  autoConnect?: boolean;
  /** Extra socket.io-client options, applied last (except `auth`). */
  socketOptions?: Partial<ManagerOptions & SocketOptions>;
}

const CONTROL_EVENTS = new Set([
  "connection.established",
  "auth.expiring",
  "auth.expired",
  "server.shutdown",
  "error",
]);

function isEnvelope(value: unknown): value is Envelope | CustomEnvelope {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return typeof v.id === "string" && typeof v.type === "string" && typeof v.room === "string";
}

function toError(err: WireError | undefined, fallback: string): RoomcastError {
  return new RoomcastError(err?.code ?? fallback, err?.message ?? fallback, err?.room, err?.status, err?.field, {
    holder: err?.holder,
    expiresAt: err?.expires_at,
  });
}

export class RoomcastClient {
  /** The underlying socket.io-client socket (for tests and advanced use). */
  readonly socket: Socket;

  private readonly emitter = new Emitter<ClientEventMap>();
  private readonly stateListeners = new Set<(state: ConnectionState) => void>();
  private _state: ConnectionState;
  private everConnected = false;
  private closed = false;
  private readonly ackTimeout: number;
  private readonly tokenSource: TokenSource | undefined;

  /** Rooms the application subscribed (and that the server granted). */
  private readonly subscribed = new Set<string>();
  /** Rooms the server joined by itself on the last connection (`global`, `user:<sub>`). */
  private defaultRooms = new Set<string>();
  private readonly cursors = new Map<string, Cursor>();
  /** Rooms with a subscribe in flight (their events already count for cursors). */
  private readonly pending = new Set<string>();
  /** Per-room chain of subscribe/unsubscribe commands, so they reach the server in order. */
  private readonly roomQueue = new Map<string, Promise<unknown>>();
  private readonly refCounts = new Map<string, number>();
  /** The subscribe promise of each retained room. */
  private readonly retained = new Map<string, Promise<void>>();
  private readonly pendingRelease = new Map<string, ReturnType<typeof setTimeout>>();
  private _info: ConnectionEstablished | undefined;
  /**
   * Rooms to join again once the next connection is established: those subscribed when the
   * last connection dropped (or given to createClient). Commands sent meanwhile are not in it.
   */
  private toRestore: Set<string>;
  /** The fixed token (without getToken): the last one the server accepted in `auth.refresh`. */
  private staticToken: string | undefined;
  /** The streams followed through `stream()`, by stream id. */
  private readonly streams = new Map<string, Set<RoomcastStream>>();

  constructor(options: ClientOptions) {
    if (!options.token && !options.getToken) throw new TypeError("createClient needs token or getToken");
    this.ackTimeout = options.ackTimeout ?? 10_000;
    this.staticToken = options.token;
    this.tokenSource = options.getToken;
    for (const room of options.rooms ?? []) this.subscribed.add(room);
    this.toRestore = new Set(this.subscribed);

    const autoConnect = options.autoConnect ?? true;
    this._state = autoConnect ? "connecting" : "disconnected";

    this.socket = io(options.url, {
      transports: options.transports ?? ["websocket"],
      reconnection: true,
      reconnectionDelay: options.reconnectionDelay ?? 1000,
      reconnectionDelayMax: options.reconnectionDelayMax ?? 5000,
      randomizationFactor: options.randomizationFactor ?? 0.5,
      reconnectionAttempts: options.reconnectionAttempts ?? Infinity,
      forceNew: true,
      ...options.socketOptions,
      autoConnect: false,
      auth: (cb: (data: object) => void) => {
        const since = this.since();
        const source = this.tokenSource;
        if (!source) {
          cb({ token: this.staticToken, since });
          return;
        }
        Promise.resolve()
          .then(source)
          .then(
            (token) => cb({ token, since }),
            (err: unknown) => {
              this.emitter.emit("error", new RoomcastError("token_unavailable", `getToken failed: ${String(err)}`));
              cb({ since }); // the server answers token_missing
            },
          );
      },
    });

    this.socket.onAny((name: string, payload: unknown) => {
      if (CONTROL_EVENTS.has(name) || !isEnvelope(payload)) return;
      this.deliver(payload);
    });
    this.socket.on("connection.established", (info: ConnectionEstablished) => this.onEstablished(info));
    this.socket.on("auth.expiring", (info: AuthExpiring) => this.onExpiring(info));
    this.socket.on("auth.expired", (info: AuthExpired) => {
      this.expiredAt = Date.now();
      this.emitter.emit("expired", info);
    });
    this.socket.on("server.shutdown", (info: ServerShutdown) => this.emitter.emit("shutdown", info));
    this.socket.on("error", (err: WireError) => this.emitter.emit("error", toError(err, "error")));
    this.socket.on("disconnect", (reason) => this.onDisconnect(reason));
    this.socket.on("connect_error", (err: Error) => this.onConnectError(err));
    this.socket.io.on("reconnect_attempt", () => {
      if (!this.closed) this.setState(this.everConnected ? "reconnecting" : "connecting");
    });
    this.socket.io.on("reconnect_failed", () => this.setState("disconnected"));

    if (autoConnect) this.socket.connect();
  }

  // ---------------------------------------------------------------------------------------
  // State

  get state(): ConnectionState {
    return this._state;
  }

  /** The last `connection.established`, once connected. */
  get info(): ConnectionEstablished | undefined {
    return this._info;
  }

  /** Calls `cb` on every change of `state`; returns the unsubscribe function. */
  onStateChange(cb: (state: ConnectionState) => void): () => void {
    this.stateListeners.add(cb);
    return () => this.stateListeners.delete(cb);
  }

  private setState(state: ConnectionState): void {
    if (this._state === state) return;
    this._state = state;
    for (const cb of [...this.stateListeners]) cb(state);
  }

  // ---------------------------------------------------------------------------------------
  // Events

  /** Listens to a typed event type (typed envelope) or a meta event; returns the off function. */
  on<K extends keyof ClientEventMap>(type: K, handler: (arg: ClientEventMap[K]) => void): () => void {
    return this.emitter.on(type, handler);
  }

  off<K extends keyof ClientEventMap>(type: K, handler: (arg: ClientEventMap[K]) => void): void {
    this.emitter.off(type, handler);
  }

  /** Listens to a custom event (`POST /api/v1/broadcast`) by name. */
  onCustom(name: string, handler: (env: CustomEnvelope) => void): () => void {
    return this.emitter.on("*", (env) => {
      if (env.type === name) handler(env as CustomEnvelope);
    });
  }

  // ---------------------------------------------------------------------------------------
  // Rooms

  /** Rooms subscribed through this client (kept across reconnects). */
  get rooms(): string[] {
    return [...this.subscribed];
  }

  /** The last `{epoch, seq}` processed per room (at first, its position when joined). */
  cursor(room: string): Cursor | undefined {
    const c = this.cursors.get(room);
    return c && { ...c };
  }

  /** Subscribes; rejects with a RoomcastError carrying the server's code (e.g. `forbidden`). */
  subscribe(rooms: string | string[]): Promise<string[]> {
    const list = Array.isArray(rooms) ? rooms : [rooms];
    return this.enqueue(list, async () => {
      for (const room of list) this.pending.add(room);
      try {
        const joined = await this.command<SubscribeAck>("subscribe", { rooms: list });
        for (const room of joined.rooms) this.subscribed.add(room);
        // Where each room is: a quiet room gets a cursor too, so a reconnect recovers it.
        for (const [room, p] of Object.entries(joined.positions ?? {})) this.advance(room, p);
        return joined.rooms;
      } finally {
        for (const room of list) {
          this.pending.delete(room);
          if (!this.tracked(room)) this.forget(room);
        }
      }
    });
  }

  /** Unsubscribes; the client forgets the rooms' cursors. */
  unsubscribe(rooms: string | string[]): Promise<string[]> {
    return this.leave(Array.isArray(rooms) ? rooms : [rooms], false);
  }

  /** Unsubscribes after the earlier commands on these rooms; `ifJoined`: only rooms joined by then. */
  private leave(rooms: string[], ifJoined: boolean): Promise<string[]> {
    return this.enqueue(rooms, async () => {
      const list = ifJoined ? rooms.filter((r) => this.subscribed.has(r)) : rooms;
      for (const room of list) {
        this.subscribed.delete(room);
        this.forget(room);
      }
      // Offline there is nothing to leave: the next connection will not re-join these rooms.
      if (list.length === 0 || !this.socket.connected) return list;
      const left = await this.command<{ rooms: string[] }>("unsubscribe", { rooms: list });
      return left.rooms;
    });
  }

  /**
   * Reference-counted subscription: the first `retain(room)` subscribes, and the room is
   * unsubscribed shortly after the last returned release function is called (a release
   * followed at once by a retain, as under React StrictMode, sends nothing).
   */
  retain(room: string, onError?: (err: RoomcastError) => void): { ready: Promise<void>; release: () => void } {
    const pending = this.pendingRelease.get(room);
    if (pending !== undefined) {
      clearTimeout(pending);
      this.pendingRelease.delete(room);
    }
    const count = (this.refCounts.get(room) ?? 0) + 1;
    this.refCounts.set(room, count);
    let ready = this.retained.get(room);
    if (ready === undefined) {
      ready = this.subscribed.has(room) ? Promise.resolve() : this.subscribe(room).then(() => undefined);
      this.retained.set(room, ready);
    }
    ready.catch((err: unknown) => {
      if (onError) onError(err instanceof RoomcastError ? err : new RoomcastError("error", String(err)));
    });
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const n = (this.refCounts.get(room) ?? 1) - 1;
      if (n > 0) {
        this.refCounts.set(room, n);
        return;
      }
      this.refCounts.delete(room);
      const timer = setTimeout(() => {
        this.pendingRelease.delete(room);
        if (this.refCounts.has(room)) return;
        this.retained.delete(room);
        if (!this.closed) this.leave([room], true).catch(() => undefined);
      }, 0);
      this.pendingRelease.set(room, timer);
    };
    return { ready, release };
  }

  // ---------------------------------------------------------------------------------------
  // AI streams

  /**
   * Follows one AI stream (WEBSOCKET_API.md section 13): the returned stream keeps its exact
   * text, resumes by itself (now, after every reconnect, on a gap) and reports its status.
   * The socket must be in the stream's room: give `room` to have the stream hold it, or
   * subscribe it yourself. Call `close()` on the stream when done.
   */
  stream(streamId: string, options: StreamOptions = {}): RoomcastStream {
    const client = this;
    const host: StreamHost = {
      get connected() {
        return client._state === "connected" && client.socket.connected;
      },
      send: (name, payload, done) => this.send(name, payload, done),
      retain: (room) => this.retain(room),
      afterRoom: (room, op) => {
        void this.enqueue(room === undefined ? [] : [room], op).catch(() => undefined);
      },
      detach: (s) => {
        const set = this.streams.get(s.id);
        set?.delete(s);
        if (set?.size === 0) this.streams.delete(s.id);
      },
    };
    const stream = new RoomcastStream(host, streamId, options);
    let set = this.streams.get(streamId);
    if (!set) {
      set = new Set();
      this.streams.set(streamId, set);
    }
    set.add(stream);
    return stream;
  }

  // ---------------------------------------------------------------------------------------
  // Other commands

  ping(): Promise<{ pong: true; server_time: string }> {
    return this.socket.timeout(this.ackTimeout).emitWithAck("ping", {});
  }

  presence(room: string): Promise<PresenceReply> {
    return this.command<PresenceReply>("presence", { room });
  }

  history(room: string, sinceSeq = 0, limit = 100): Promise<HistoryReply> {
    return this.command<HistoryReply>("history", { room, since_seq: sinceSeq, limit });
  }

  /**
   * Calls your backend through the socket (`[rpc]` on the server): resolves with the
   * backend's JSON answer; rejects with a RoomcastError: `rpc_failed` (with `status`),
   * `rpc_timeout`, `rpc_unavailable`, `invalid_payload`, `payload_too_large`, `rate_limited`,
   * or `timeout` (no ack within `ackTimeout`: keep it above the server's `rpc.timeout_ms`).
   * The call is sent once, never retried.
   */
  async rpc<T = unknown>(method: string, data?: unknown): Promise<T> {
    const reply = await this.command<RpcReply<T>>("rpc", data === undefined ? { method } : { method, data });
    return reply.result;
  }

  /**
   * Takes the lock `resource` (`<room>/<name>`, e.g. `project:42/deploy`; the token must grant
   * the room) for `ttlMs` (the server's `locks.default_ttl_ms` when absent): resolves with
   * its fencing token and expiry. Rejects with a RoomcastError: `locked` (with `holder` and
   * `expiresAt`; your own lock too: renew it), `forbidden`, `invalid_resource`,
   * `invalid_payload`, `too_many_locks`. The lock ends with `release`, this socket's
   * disconnect, or its TTL (WEBSOCKET_API.md section 15).
   */
  async lock(resource: string, ttlMs?: number): Promise<LockGrant> {
    const payload = ttlMs === undefined ? { resource } : { resource, ttl_ms: ttlMs };
    const reply = await this.command<LockGrant>("lock.acquire", payload);
    return { resource: reply.resource, token: reply.token, expires_at: reply.expires_at };
  }

  /** Releases the lock `resource` this socket holds with `token`: `not_holder`, `lock_lost`. */
  async release(resource: string, token: number): Promise<void> {
    await this.command<{ resource: string }>("lock.release", { resource, token });
  }

  /**
   * Moves the expiry of the lock `resource` this socket holds with `token` to `ttlMs` from
   * now: resolves with the new expiry; `lock_lost` when the lock has ended (take it again).
   */
  async renew(resource: string, token: number, ttlMs?: number): Promise<LockGrant> {
    const payload = ttlMs === undefined ? { resource, token } : { resource, token, ttl_ms: ttlMs };
    const reply = await this.command<LockGrant>("lock.renew", payload);
    return { resource: reply.resource, token: reply.token, expires_at: reply.expires_at };
  }

  /**
   * Publishes a client event into `room` (the socket must be subscribed, and the server's
   * `[client_events]` and the token must allow it). Resolves with the ack (`{ok, id, seq?}`);
   * rejects with a RoomcastError carrying the server's code (`forbidden`, `not_subscribed`,
   * `event_not_allowed`, `payload_too_large`, `invalid_payload` with `field`, `rate_limited`).
   */
  publish(room: string, event: string, data: unknown, opts: PublishOptions = {}): Promise<PublishAck> {
    const payload: Record<string, unknown> = { room, event, data: data === undefined ? null : data };
    if (opts.volatile) payload.volatile = true;
    if (opts.echo) payload.echo = true;
    return this.command<PublishAck>("publish", payload);
  }

  /** Sends `auth.refresh` with a token from `getToken` (or the given one). */
  async refresh(token?: string): Promise<RefreshReply> {
    let fresh = token;
    if (fresh === undefined) {
      if (!this.tokenSource) throw new RoomcastError("token_unavailable", "no getToken to refresh with");
      fresh = await this.tokenSource();
    }
    const reply = await this.command<RefreshReply>("auth.refresh", { token: fresh });
    // Later reconnects send the token the server accepted, not the one it replaced.
    if (!this.tokenSource) this.staticToken = fresh;
    for (const room of reply.left_rooms ?? []) {
      this.subscribed.delete(room);
      this.forget(room);
      this.emitter.emit("room_lost", { room, code: "token_refresh" });
    }
    this.emitter.emit("refreshed", reply);
    return reply;
  }

  // ---------------------------------------------------------------------------------------
  // Lifecycle

  connect(): void {
    this.closed = false;
    if (this.socket.connected || this.socket.active) return;
    this.setState(this.everConnected ? "reconnecting" : "connecting");
    this.socket.connect();
  }

  /** Disconnects for good (until `connect()`); subscriptions and cursors are kept. */
  close(): void {
    this.closed = true;
    for (const timer of this.pendingRelease.values()) clearTimeout(timer);
    this.pendingRelease.clear();
    this.socket.disconnect();
    this.setState("disconnected");
  }

  // ---------------------------------------------------------------------------------------
  // Internals

  private async command<T>(name: string, payload: unknown): Promise<T> {
    let ack: Ack<T>;
    try {
      ack = (await this.socket.timeout(this.ackTimeout).emitWithAck(name, payload)) as Ack<T>;
    } catch {
      throw new RoomcastError("timeout", `no ack for "${name}" within ${this.ackTimeout} ms`);
    }
    if (!ack || typeof ack !== "object") throw new RoomcastError("invalid_reply", `bad ack for "${name}"`);
    if (!ack.ok) throw toError(ack.error, "error");
    return ack as T;
  }

  /**
   * A command whose ack is handed to `done` as the packet is read, in order with the events
   * around it (a promise would let events that follow the ack run first).
   */
  private send(name: string, payload: unknown, done: (err: RoomcastError | null, ack?: unknown) => void): void {
    this.socket.timeout(this.ackTimeout).emit(name, payload, (err: Error | null, ack: Ack<unknown>) => {
      if (err) done(new RoomcastError("timeout", `no ack for "${name}" within ${this.ackTimeout} ms`));
      else if (!ack || typeof ack !== "object") done(new RoomcastError("invalid_reply", `bad ack for "${name}"`));
      else if (!ack.ok) done(toError(ack.error, "error"));
      else done(null, ack);
    });
  }

  /** Runs `op` after the previous commands on any of `rooms` settled. */
  private enqueue<T>(rooms: string[], op: () => Promise<T>): Promise<T> {
    const before = rooms.map((r) => this.roomQueue.get(r)).filter((p) => p !== undefined);
    const result = Promise.allSettled(before).then(op);
    const settled = result.catch(() => undefined);
    for (const room of rooms) {
      this.roomQueue.set(room, settled);
      void settled.then(() => {
        if (this.roomQueue.get(room) === settled) this.roomQueue.delete(room);
      });
    }
    return result;
  }

  private forget(room: string): void {
    this.cursors.delete(room);
  }

  /** Moves a room's cursor to a position the server reported, unless it is already further. */
  private advance(room: string, p: Cursor): void {
    if (!this.tracked(room)) return;
    const c = this.cursors.get(room);
    if (!c || c.epoch !== p.epoch || c.seq < p.seq) this.cursors.set(room, { epoch: p.epoch, seq: p.seq });
  }

  /** Cursors of every room this client is in, for `auth.since`. */
  private since(): Record<string, Cursor> {
    const since: Record<string, Cursor> = {};
    for (const [room, cursor] of this.cursors) {
      if (this.subscribed.has(room) || this.defaultRooms.has(room)) since[room] = { ...cursor };
    }
    return since;
  }

  private tracked(room: string): boolean {
    return this.subscribed.has(room) || this.defaultRooms.has(room) || this.pending.has(room);
  }

  /** Drops duplicates (by seq, per room), advances cursors, and emits. */
  private deliver(env: Envelope | CustomEnvelope): void {
    const positions: RoomPosition[] = [];
    if (env.seq !== undefined && env.epoch !== undefined) {
      positions.push({ room: env.room, seq: env.seq, epoch: env.epoch });
    }
    for (const p of env.also ?? []) positions.push(p);
    const mine = positions.filter((p) => this.tracked(p.room));
    for (const p of mine) {
      const c = this.cursors.get(p.room);
      if (c && c.epoch === p.epoch && p.seq <= c.seq) return; // already processed
    }
    for (const p of mine) this.cursors.set(p.room, { epoch: p.epoch, seq: p.seq });
    if (env.type.startsWith("stream.")) this.toStreams(env);
    const untyped = this.emitter as unknown as Emitter<Record<string, unknown>>;
    if (untyped.count(env.type) > 0) untyped.emit(env.type, env);
    this.emitter.emit("*", env);
  }

  /** Hands a `stream.*` envelope to the streams followed with its id. */
  private toStreams(env: Envelope | CustomEnvelope): void {
    const data = env.data as Record<string, unknown> | null;
    if (!data || typeof data !== "object" || typeof data.stream_id !== "string") return;
    for (const s of this.streams.get(data.stream_id) ?? []) s.handle(env.type, data);
  }

  private onEstablished(info: ConnectionEstablished): void {
    this._info = info;
    this.everConnected = true;
    this.defaultRooms = new Set(info.rooms.filter((r) => r === "global" || r.startsWith("user:")));
    const recovery = info.recovery ?? {};
    for (const [room, r] of Object.entries(recovery)) {
      if (r.error !== undefined) {
        this.subscribed.delete(room);
        this.forget(room);
        this.emitter.emit("room_lost", { room, code: r.error });
      } else if (r.gap) {
        this.cursors.set(room, { epoch: r.epoch, seq: r.seq });
        this.emitter.emit("gap", { room, epoch: r.epoch, seq: r.seq });
      }
    }
    // The rooms joined without a cursor start where the server says they are; a replayed
    // room keeps its cursor (the replay that follows brings it up).
    for (const [room, p] of Object.entries(info.positions ?? {})) {
      if (!(room in recovery)) this.advance(room, p);
    }
    const missing = [...this.toRestore].filter(
      (room) => this.subscribed.has(room) && !(room in recovery) && !info.rooms.includes(room),
    );
    this.toRestore.clear();
    this.setState("connected");
    this.emitter.emit("established", info);
    if (missing.length > 0) void this.resubscribe(missing);
    // After the re-subscribes just queued: each stream catches up from what it has.
    for (const set of this.streams.values()) for (const s of set) s.reconnected();
  }

  /** Re-joins rooms of an earlier connection that `auth.since` did not cover. */
  private async resubscribe(rooms: string[]): Promise<void> {
    try {
      await this.subscribe(rooms);
      return;
    } catch (err) {
      if (!(err instanceof RoomcastError) || err.code === "timeout") {
        this.emitter.emit("error", err instanceof RoomcastError ? err : new RoomcastError("error", String(err)));
        return;
      }
    }
    // All-or-nothing failed: one at a time, dropping the rooms the server refuses.
    for (const room of rooms) {
      try {
        await this.subscribe(room);
      } catch (err) {
        if (err instanceof RoomcastError && err.code !== "timeout") {
          this.subscribed.delete(room);
          this.forget(room);
          this.emitter.emit("room_lost", { room, code: err.code });
        }
        this.emitter.emit("error", err instanceof RoomcastError ? err : new RoomcastError("error", String(err)));
      }
    }
  }

  private onExpiring(info: AuthExpiring): void {
    this.emitter.emit("expiring", info);
    if (!this.tokenSource) return;
    this.refresh().catch((err: unknown) => {
      this.emitter.emit("error", err instanceof RoomcastError ? err : new RoomcastError("refresh_failed", String(err)));
    });
  }

  private onDisconnect(reason: string): void {
    this.toRestore = new Set(this.subscribed);
    for (const set of this.streams.values()) for (const s of set) s.disconnected();
    if (this.closed) {
      this.setState("disconnected");
      return;
    }
    if (this.socket.active) {
      this.setState("reconnecting");
    } else if (reason === "io server disconnect" && this.tokenSource && this.lastExpired()) {
      // The token ran out: come back with a fresh one.
      this.setState("reconnecting");
      this.socket.connect();
    } else {
      this.setState("disconnected");
    }
  }

  private expiredAt = 0;
  private lastExpired(): boolean {
    return Date.now() - this.expiredAt < 5_000;
  }

  private onConnectError(err: Error): void {
    if (this.socket.active) {
      this.setState(this.everConnected ? "reconnecting" : "connecting");
      return;
    }
    // The server refused the handshake (token_missing / token_invalid / token_expired):
    // socket.io-client does not retry by itself.
    const code = err.message;
    this.emitter.emit("error", new RoomcastError(code, `connection refused: ${code}`));
    this.setState("disconnected");
  }
}

/** Creates a client and, unless `autoConnect: false`, connects it. */
export function createClient(options: ClientOptions): RoomcastClient {
  return new RoomcastClient(options);
}
