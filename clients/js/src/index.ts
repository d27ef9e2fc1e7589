export { createClient, RoomcastClient } from "./client.js";
export type {
  ClientEventMap,
  ClientMetaEvents,
  ClientOptions,
  ConnectionState,
  Cursor,
  GapInfo,
  RoomLost,
  TokenSource,
} from "./client.js";
export { RoomcastError } from "./errors.js";
export { RoomcastStream } from "./stream.js";
export type { StreamCancelAck, StreamEventMap, StreamOptions, StreamResumeAck, StreamStatus, StreamText } from "./stream.js";
export * from "./types.js";
