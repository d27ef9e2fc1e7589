// Following one AI stream (WEBSOCKET_API.md section 13): the exact text so far, kept by the
// client rule for offsets, resumed with `stream.resume` when following starts, after every
// reconnect and whenever a delta shows a gap.

import { Emitter } from "./emitter.js";
import { RoomcastError } from "./errors.js";

/** Where a stream is in its life. An end status is reported once the text is complete. */
export type StreamStatus = "open" | "finished" | "failed" | "cancelled";

export interface StreamText {
  /** Where `appended` starts in the whole text, in Unicode code points. */
  offset: number;
  /** The text added (never a part the stream had already). */
  appended: string;
  /** The whole text now. */
  text: string;
}

/** The events of a followed stream. */
export interface StreamEventMap {
  /** Text was added. */
  text: StreamText;
  /** The status changed. */
  status: StreamStatus;
  /** A resume or a cancel was refused or timed out (`stream_not_found`, `not_subscribed`, `timeout`…). */
  error: RoomcastError;
}

export interface StreamOptions {
  /**
   * The stream's room: the stream holds a subscription to it while followed (as
   * `client.retain`). Without it the application subscribes the room itself.
   */
  room?: string;
}

/** The `stream.resume` ack. */
export interface StreamResumeAck {
  ok: true;
  stream_id: string;
  room: string;
  kind: string;
  status: StreamStatus;
  offset: number;
  length: number;
  text: string;
}

/** The `stream.cancel` ack. */
export interface StreamCancelAck {
  ok: true;
  stream_id: string;
  length: number;
}

/** What a stream needs of its client (internal). */
export interface StreamHost {
  readonly connected: boolean;
  /** Sends a command; `done` is called in the order packets arrive (no promise hop). */
  send(name: string, payload: unknown, done: (err: RoomcastError | null, ack?: unknown) => void): void;
  retain(room: string): { ready: Promise<void>; release: () => void };
  /** Runs `op` after the commands queued on `room` (e.g. its re-subscribe after a reconnect). */
  afterRoom(room: string | undefined, op: () => Promise<void>): void;
  detach(stream: RoomcastStream): void;
}

interface StreamData {
  stream_id?: unknown;
  offset?: unknown;
  text?: unknown;
  length?: unknown;
  kind?: unknown;
  meta?: unknown;
  error?: unknown;
  by?: unknown;
  reason?: unknown;
}

const ENDS: Record<string, StreamStatus> = {
  "stream.finished": "finished",
  "stream.failed": "failed",
  "stream.cancelled": "cancelled",
};

/** Code points of `s` (what stream offsets count). */
function codePoints(s: string): string[] {
  return Array.from(s);
}

/**
 * One followed stream, from `client.stream(streamId)`. `text` is exact (offsets count code
 * points; overlapping deltas are trimmed, a gap triggers `stream.resume`). Call `close()`
 * when done with it.
 */
export class RoomcastStream {
  readonly id: string;
  private _room: string | undefined;
  private _kind: string | undefined;
  private _meta: unknown;
  private _text = "";
  private have = 0;
  private _status: StreamStatus = "open";
  /** The end reported by an event or an ack, applied once the text has `length` code points. */
  private end: { status: StreamStatus; length: number } | undefined;
  private _error: string | undefined;
  private _cancelledBy: string | undefined;
  private _reason: string | undefined;
  /** Bumped by every resume, reconnect and close: an older resume's answer is ignored. */
  private generation = 0;
  private resuming = false;
  private closed = false;
  private readonly emitter = new Emitter<StreamEventMap>();
  private readonly release: (() => void) | undefined;
  private settle: ((status: StreamStatus) => void) | undefined;
  /** Resolves with the end status once the stream ended and its text is complete. */
  readonly done: Promise<StreamStatus>;

  /** @internal Use `client.stream(streamId)`. */
  constructor(
    private readonly host: StreamHost,
    id: string,
    options: StreamOptions = {},
  ) {
    this.id = id;
    this._room = options.room;
    this.done = new Promise((resolve) => (this.settle = resolve));
    if (options.room !== undefined) {
      const { ready, release } = host.retain(options.room);
      this.release = release;
      ready.then(
        () => {
          // Unless the connection's own catch-up (`reconnected`) came first.
          if (host.connected && this.generation === 0) void this.resume();
        },
        (err: unknown) => this.fail(err),
      );
    } else if (host.connected) {
      void this.resume();
    }
  }

  /** The whole text so far. */
  get text(): string {
    return this._text;
  }

  /** How many code points `text` has. */
  get length(): number {
    return this.have;
  }

  get status(): StreamStatus {
    return this._status;
  }

  /** The room, once given or answered by the server. */
  get room(): string | undefined {
    return this._room;
  }

  /** `llm`, `log`, … once known. */
  get kind(): string | undefined {
    return this._kind;
  }

  /** The producer's `meta` of `stream.started`, if this client saw it. */
  get meta(): unknown {
    return this._meta;
  }

  /** The producer's error of `stream.failed`. */
  get error(): string | undefined {
    return this._error;
  }

  /** Who cancelled (the user id) and why, for a cancelled stream seen being cancelled. */
  get cancelledBy(): string | undefined {
    return this._cancelledBy;
  }

  get cancelReason(): string | undefined {
    return this._reason;
  }

  on<K extends keyof StreamEventMap>(type: K, handler: (arg: StreamEventMap[K]) => void): () => void {
    return this.emitter.on(type, handler);
  }

  off<K extends keyof StreamEventMap>(type: K, handler: (arg: StreamEventMap[K]) => void): void {
    this.emitter.off(type, handler);
  }

  /**
   * Asks the server to stop the stream (`stream.cancel`): the producer's next append is
   * refused. Resolves with the ack; rejects with a RoomcastError (`stream_ended`,
   * `stream_cancelled`, `forbidden`, `not_subscribed`, `timeout`…). The connection stays up.
   */
  cancel(reason?: string): Promise<StreamCancelAck> {
    const payload: Record<string, unknown> = { stream_id: this.id };
    if (reason !== undefined) payload.reason = reason;
    return new Promise((resolve, reject) => {
      this.host.send("stream.cancel", payload, (err, ack) => {
        if (err) {
          reject(err);
          return;
        }
        const a = ack as StreamCancelAck;
        this.ended("cancelled", a.length);
        resolve(a);
      });
    });
  }

  /** Stops following: no more events, the room (if given) is released. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.generation += 1;
    this.release?.();
    this.host.detach(this);
  }

  // ---------------------------------------------------------------------------------------
  // Called by the client

  /** @internal An envelope of this stream (`stream.*` with its `stream_id`). */
  handle(type: string, data: StreamData): void {
    if (this.closed) return;
    if (type === "stream.delta") {
      if (typeof data.offset !== "number" || typeof data.text !== "string") return;
      // A gap: the resume under way (or a new one) brings the text before it.
      if (!this.apply(data.offset, data.text) && !this.resuming) void this.resume();
      return;
    }
    if (type === "stream.started") {
      if (typeof data.kind === "string") this._kind = data.kind;
      this._meta = data.meta;
      return;
    }
    const status = ENDS[type];
    if (status === undefined || typeof data.length !== "number") return;
    if (type === "stream.failed" && typeof data.error === "string") this._error = data.error;
    if (type === "stream.cancelled") {
      if (typeof data.by === "string") this._cancelledBy = data.by;
      if (typeof data.reason === "string") this._reason = data.reason;
    }
    this.ended(status, data.length);
  }

  /** @internal The connection is (again) established: catch up from what we have. */
  reconnected(): void {
    if (this.closed) return;
    this.resuming = false;
    this.host.afterRoom(this._room, () => (this.closed ? Promise.resolve() : this.resume()));
  }

  /** @internal The connection dropped: an answer in flight will not come. */
  disconnected(): void {
    this.generation += 1;
    this.resuming = false;
  }

  // ---------------------------------------------------------------------------------------
  // Internals

  /** `stream.resume` from what we have; resolves once answered (or refused). */
  private resume(): Promise<void> {
    const generation = ++this.generation;
    this.resuming = true;
    return new Promise((resolve) => {
      this.host.send("stream.resume", { stream_id: this.id, offset: this.have }, (err, ack) => {
        resolve();
        if (generation !== this.generation || this.closed) return;
        this.resuming = false;
        if (err) {
          this.emitter.emit("error", err);
          return;
        }
        const a = ack as StreamResumeAck;
        this._room ??= a.room;
        this._kind = a.kind;
        this.apply(a.offset, a.text);
        if (a.status !== "open") this.ended(a.status, a.length);
        else this.complete();
      });
    });
  }

  /** The client rule: place `piece` at `offset`, keeping only what is past what we have. */
  private apply(offset: number, piece: string): boolean {
    if (offset > this.have) return false;
    const chars = codePoints(piece);
    const skip = this.have - offset;
    if (skip < chars.length) {
      const appended = skip === 0 ? piece : chars.slice(skip).join("");
      const at = this.have;
      this._text += appended;
      this.have += chars.length - skip;
      this.emitter.emit("text", { offset: at, appended, text: this._text });
    }
    this.complete();
    return true;
  }

  private ended(status: StreamStatus, length: number): void {
    this.end ??= { status, length };
    this.complete();
    // The last deltas may still be on their way (in a cluster they travel apart from the
    // end event) or lost: a resume of an ended stream brings the final text at once.
    if (this._status === "open" && !this.resuming && this.host.connected) void this.resume();
  }

  /** Reports the end once the text has all of it. */
  private complete(): void {
    if (!this.end || this._status !== "open" || this.have < this.end.length) return;
    this._status = this.end.status;
    this.emitter.emit("status", this._status);
    this.settle?.(this._status);
  }

  private fail(err: unknown): void {
    if (this.closed) return;
    this.emitter.emit("error", err instanceof RoomcastError ? err : new RoomcastError("error", String(err)));
  }
}
