import {
  createContext,
  useCallback,
  useContext,
  useEffect,
  useRef,
  useState,
  useSyncExternalStore,
  type ReactNode,
} from "react";

import type { ClientEventMap, ConnectionState, RoomcastClient } from "../client.js";
import type { RoomcastError } from "../errors.js";
import type { StreamCancelAck, StreamOptions, StreamStatus } from "../stream.js";
import type { CustomEnvelope, Envelope, EventType, PublishAck, PublishOptions } from "../types.js";

const RoomcastContext = createContext<RoomcastClient | null>(null);

export interface RoomcastProviderProps {
  /** A client from `createClient`; the provider does not close it. */
  client: RoomcastClient;
  children?: ReactNode;
}

export function RoomcastProvider({ client, children }: RoomcastProviderProps) {
  return <RoomcastContext.Provider value={client}>{children}</RoomcastContext.Provider>;
}

/** The client of the nearest RoomcastProvider. */
export function useRoomcast(): RoomcastClient {
  const client = useContext(RoomcastContext);
  if (!client) throw new Error("useRoomcast/useRoom/useEvent must be used inside <RoomcastProvider>");
  return client;
}

/** The client's connection state; re-renders on every change. */
export function useConnectionState(): ConnectionState {
  const client = useRoomcast();
  return useSyncExternalStore(
    (cb) => client.onStateChange(cb),
    () => client.state,
    () => client.state,
  );
}

/** Handlers per event type, for the events of one room. */
export type RoomHandlers = { [K in EventType]?: (env: Envelope<K>) => void };

export type RoomStatus = "subscribing" | "subscribed" | "error";

export interface RoomState {
  status: RoomStatus;
  error?: RoomcastError;
}

function inRoom(env: { room: string; also?: { room: string }[] }, room: string): boolean {
  return env.room === room || (env.also?.some((p) => p.room === room) ?? false);
}

/**
 * Subscribes to `room` while the component is mounted (reference-counted per client and
 * room, so StrictMode's mount/unmount/mount and several components sharing a room send one
 * subscribe and, after the last unmount, one unsubscribe), and calls `handlers[type]` for
 * that room's events. The handlers may change on every render.
 */
export function useRoom(room: string, handlers: RoomHandlers = {}): RoomState {
  const client = useRoomcast();
  const handlersRef = useRef(handlers);
  handlersRef.current = handlers;
  const [state, setState] = useState<RoomState>({ status: "subscribing" });

  useEffect(() => {
    let live = true;
    setState({ status: "subscribing" });
    const { ready, release } = client.retain(room);
    ready.then(
      () => {
        if (live) setState({ status: "subscribed" });
      },
      (error: RoomcastError) => {
        if (live) setState({ status: "error", error });
      },
    );
    const off = client.on("*", (env) => {
      if (!inRoom(env, room)) return;
      const handler = (handlersRef.current as Record<string, ((e: unknown) => void) | undefined>)[env.type];
      handler?.(env);
    });
    return () => {
      live = false;
      off();
      release();
    };
  }, [client, room]);

  return state;
}

/** Calls `handler` for every event of `type` (any room) while mounted. */
export function useEvent<K extends keyof ClientEventMap>(type: K, handler: (arg: ClientEventMap[K]) => void): void {
  const client = useRoomcast();
  const handlerRef = useRef(handler);
  handlerRef.current = handler;
  useEffect(() => client.on(type, (arg) => handlerRef.current(arg)), [client, type]);
}

/**
 * A stable function publishing client events into `room` (WEBSOCKET_API.md 4.3b); it
 * resolves with the ack and rejects with a RoomcastError. The component still needs to be
 * in the room (`useRoom`).
 */
export function usePublish(room: string): (event: string, data?: unknown, opts?: PublishOptions) => Promise<PublishAck> {
  const client = useRoomcast();
  return useCallback(
    (event: string, data?: unknown, opts?: PublishOptions) => client.publish(room, event, data ?? null, opts),
    [client, room],
  );
}

export interface TypingOptions {
  /** After this long without a keystroke the user stops typing (default 3000 ms). */
  idleMs?: number;
}

export interface Typing {
  /** The other users typing in the room now (user ids, sorted). */
  others: string[];
  /** Call on every keystroke: sends `typing.start` at most once per `idleMs / 2`. */
  typing: () => void;
  /** Call when the message is sent: sends `typing.stop` at once. */
  stop: () => void;
}

/**
 * Typing indicators over volatile client events (`typing.start` / `typing.stop`: never
 * numbered, never replayed), which `[client_events]` must allow (`events = ["typing.*"]`).
 * Subscribes to `room` while mounted. A user whose `typing.stop` never came (a closed tab)
 * is dropped after `2 * idleMs`.
 */
export function useTyping(room: string, { idleMs = 3000 }: TypingOptions = {}): Typing {
  const client = useRoomcast();
  const [others, setOthers] = useState<string[]>([]);
  const sent = useRef({ at: 0, timer: undefined as ReturnType<typeof setTimeout> | undefined });

  useEffect(() => {
    const { release } = client.retain(room);
    const expiry = new Map<string, ReturnType<typeof setTimeout>>();
    const show = () => setOthers([...expiry.keys()].sort());
    const drop = (user: string) => {
      clearTimeout(expiry.get(user));
      if (expiry.delete(user)) show();
    };
    const off = client.on("*", (env: Envelope | CustomEnvelope) => {
      const user = env.from?.user_id;
      if (env.room !== room || !user || user === client.info?.user_id) return;
      if (env.type === "typing.start") {
        clearTimeout(expiry.get(user));
        expiry.set(
          user,
          setTimeout(() => drop(user), 2 * idleMs),
        );
        show();
      } else if (env.type === "typing.stop") {
        drop(user);
      }
    });
    return () => {
      off();
      release();
      for (const timer of expiry.values()) clearTimeout(timer);
      clearTimeout(sent.current.timer);
    };
  }, [client, room, idleMs]);

  const send = useCallback(
    (event: "typing.start" | "typing.stop") => {
      // Typing is best effort: a refused or lost indicator is not worth an error.
      client.publish(room, event, {}, { volatile: true }).catch(() => undefined);
    },
    [client, room],
  );
  const stop = useCallback(() => {
    clearTimeout(sent.current.timer);
    sent.current.timer = undefined;
    if (sent.current.at === 0) return;
    sent.current.at = 0;
    send("typing.stop");
  }, [send]);
  const typing = useCallback(() => {
    const now = Date.now();
    if (now - sent.current.at >= idleMs / 2) {
      sent.current.at = now;
      send("typing.start");
    }
    clearTimeout(sent.current.timer);
    sent.current.timer = setTimeout(stop, idleMs);
  }, [send, stop, idleMs]);

  return { others, typing, stop };
}

export interface StreamView {
  /** The stream's exact text so far. */
  text: string;
  /** `open`, then `finished`, `failed` or `cancelled` once the text is complete. */
  status: StreamStatus;
  /** The last refusal of a resume or a cancel (e.g. `stream_not_found`, `not_subscribed`). */
  error?: RoomcastError;
  /** Stops the stream (`stream.cancel`); rejects with a RoomcastError. */
  cancel: (reason?: string) => Promise<StreamCancelAck>;
}

/**
 * Follows the AI stream `streamId` while mounted (`client.stream`): its exact text, resumed
 * by itself on mount, after every reconnect and on a gap; `status`; and `cancel()`. With
 * `room` the hook also holds a subscription to the stream's room (reference-counted, as
 * `useRoom`); otherwise the component must be in the room already. No id: nothing followed.
 */
export function useStream(streamId: string | null | undefined, { room }: StreamOptions = {}): StreamView {
  const client = useRoomcast();
  const [view, setView] = useState<{ id: string | null | undefined; text: string; status: StreamStatus; error?: RoomcastError }>(
    { id: streamId, text: "", status: "open" },
  );
  const current = useRef<ReturnType<RoomcastClient["stream"]> | null>(null);

  useEffect(() => {
    if (!streamId) return undefined;
    const stream = client.stream(streamId, room === undefined ? {} : { room });
    current.current = stream;
    const show = () => setView((v) => ({ id: streamId, text: stream.text, status: stream.status, error: v.id === streamId ? v.error : undefined }));
    show();
    const offs = [
      stream.on("text", show),
      stream.on("status", show),
      stream.on("error", (error) => setView({ id: streamId, text: stream.text, status: stream.status, error })),
    ];
    return () => {
      for (const off of offs) off();
      stream.close();
      if (current.current === stream) current.current = null;
    };
  }, [client, streamId, room]);

  const cancel = useCallback(
    (reason?: string) => {
      const stream = current.current;
      if (!stream) return Promise.reject(new Error("useStream: no stream followed"));
      return stream.cancel(reason);
    },
    [],
  );

  // A new id shows nothing of the previous stream, even before the effect ran.
  if (view.id !== streamId) return { text: "", status: "open", cancel };
  return view.error ? { text: view.text, status: view.status, error: view.error, cancel } : { text: view.text, status: view.status, cancel };
}
