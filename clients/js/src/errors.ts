import type { LockHolder } from "./types.js";

/**
 * An error reported by the server (an ack with `ok: false`, an `error` event, a refused
 * handshake) or by the client itself (`timeout`, `closed`, `token_unavailable`).
 * `code` is the server's error code, e.g. `forbidden`, `invalid_room`, `token_expired`,
 * `rpc_failed`; `room` is set for the room errors, `status` (the backend's HTTP status) for
 * `rpc_failed`; `holder` and `expiresAt` for `locked`.
 */
export class RoomcastError extends Error {
  readonly code: string;
  readonly room: string | undefined;
  readonly status: number | undefined;
  /** The JSON pointer of the failing value (`invalid_payload` of a `publish` schema check). */
  readonly field: string | undefined;
  /** `locked`: who holds the lock. */
  readonly holder: LockHolder | undefined;
  /** `locked`: when the holder's lock expires unless renewed (RFC 3339). */
  readonly expiresAt: string | undefined;

  constructor(
    code: string,
    message: string,
    room?: string,
    status?: number,
    field?: string,
    lock?: { holder?: LockHolder; expiresAt?: string },
  ) {
    super(message);
    this.name = "RoomcastError";
    this.code = code;
    this.room = room;
    this.status = status;
    this.field = field;
    this.holder = lock?.holder;
    this.expiresAt = lock?.expiresAt;
  }
}
