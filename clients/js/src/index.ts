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
export * from "./types.js";
