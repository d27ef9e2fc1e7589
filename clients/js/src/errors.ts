/**
 * An error reported by the server (an ack with `ok: false`, an `error` event, a refused
 * handshake) or by the client itself (`timeout`, `closed`, `token_unavailable`).
 * `code` is the server's error code, e.g. `forbidden`, `invalid_room`, `token_expired`.
 */
export class RoomcastError extends Error {
  readonly code: string;
  readonly room: string | undefined;

  constructor(code: string, message: string, room?: string) {
    super(message);
    this.name = "RoomcastError";
    this.code = code;
    this.room = room;
  }
}
