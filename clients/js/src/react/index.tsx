import {
  createContext,
  useContext,
  useEffect,
  useRef,
  useState,
  useSyncExternalStore,
  type ReactNode,
} from "react";

import type { ClientEventMap, ConnectionState, RoomcastClient } from "../client.js";
import type { RoomcastError } from "../errors.js";
import type { Envelope, EventType } from "../types.js";

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
