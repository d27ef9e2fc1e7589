// Wire types of the Roomcast protocol (WEBSOCKET_API.md sections 2, 4, 5 and 11).

/** An id: 1 to 128 of [A-Za-z0-9_.-]. Publishers may send integers; clients always get strings. */
export type Id = string;

export interface ProjectUpdated {
  project_id: Id;
  project_name?: string;
  status?: string;
  updated_by?: string;
  repository_url?: string;
  changes?: Record<string, unknown>;
}

export interface ProjectDeleted {
  project_id: Id;
  deleted_by?: string;
}

export interface AgentStatusChanged {
  agent_id: Id;
  status: string;
  previous_status?: string;
  project_id?: Id;
}

/** `agent.connected` and `agent.disconnected`. */
export interface AgentConnection {
  agent_id: Id;
  project_id?: Id;
  reason?: string;
}

export interface WorkflowStarted {
  workflow_id: Id;
  project_id: Id;
  name?: string;
  triggered_by?: string;
}

export interface WorkflowProgress {
  workflow_id: Id;
  project_id: Id;
  /** Integer 0–100. */
  progress: number;
  step?: string;
  message?: string;
  eta_seconds?: number;
}

export interface WorkflowCompleted {
  workflow_id: Id;
  project_id: Id;
  result?: unknown;
  duration_ms?: number;
}

export interface WorkflowFailed {
  workflow_id: Id;
  project_id: Id;
  error: string;
  step?: string;
}

export interface TaskStarted {
  task_id: Id;
  project_id: Id;
  name: string;
  /** Units of `current` in the whole task (> 0), when known. */
  total?: number;
}

/**
 * `task.progress`. `percent`, `rate_per_sec` and `eta_ms` are set by the server (a publisher
 * may not send them), each absent while unknown (WEBSOCKET_API.md 5.15c).
 */
export interface TaskProgress {
  task_id: Id;
  project_id: Id;
  /** Units done so far, ≥ 0. */
  current: number;
  /** The publisher's, or the last one given for this task (filled in by the server). */
  total?: number;
  step?: string;
  message?: string;
  /** 100 × current / total, at most 100; absent without a total. */
  percent?: number;
  /** Units of `current` per second (exponentially weighted, 10 s half-life); absent until the task has a rate. */
  rate_per_sec?: number;
  /** (total − current) / rate_per_sec, in ms; 0 once current ≥ total; absent without a total or a rate above 0. */
  eta_ms?: number;
}

export interface TaskCompleted {
  task_id: Id;
  project_id: Id;
  result?: unknown;
  message?: string;
  /** Set by the server: the time since `task.started`, when it saw it. */
  duration_ms?: number;
}

export interface TaskFailed {
  task_id: Id;
  project_id: Id;
  error: string;
  step?: string;
  /** Set by the server, as in `task.completed`. */
  duration_ms?: number;
}

/** `pr.created`, `pr.updated` and `pr.closed`. */
export interface PullRequest {
  project_id: Id;
  number: number;
  title: string;
  url?: string;
  author?: string;
  state?: string;
  merged?: boolean;
  /** The GitHub action behind a webhook-published event (`opened`, `synchronize`, …). */
  action?: string;
}

/** `issue.created`, `issue.updated` and `issue.closed`. */
export interface Issue {
  project_id: Id;
  number: number;
  title: string;
  url?: string;
  author?: string;
  state?: string;
  /** The GitHub action behind a webhook-published event (`opened`, `labeled`, …). */
  action?: string;
}

export interface AiSuggestion {
  suggestion_id: Id;
  content: string;
  title?: string;
  kind?: string;
  user_id?: Id;
  project_id?: Id;
}

export interface AiAnalysisComplete {
  analysis_id: Id;
  project_id: Id;
  summary: string;
}

export type Severity = "info" | "warning" | "error" | "critical";

export interface SystemNotification {
  title: string;
  message: string;
  severity?: Severity;
}

/** `presence.joined` and `presence.left`. */
export interface Presence {
  user_id: Id;
  room: string;
}

/** Event type → the type of the envelope's `data`. */
export interface EventPayloads {
  "project.updated": ProjectUpdated;
  "project.deleted": ProjectDeleted;
  "agent.status_changed": AgentStatusChanged;
  "agent.connected": AgentConnection;
  "agent.disconnected": AgentConnection;
  "workflow.started": WorkflowStarted;
  "workflow.progress": WorkflowProgress;
  "workflow.completed": WorkflowCompleted;
  "workflow.failed": WorkflowFailed;
  "pr.created": PullRequest;
  "pr.updated": PullRequest;
  "pr.closed": PullRequest;
  "issue.created": Issue;
  "issue.updated": Issue;
  "issue.closed": Issue;
  "ai.suggestion": AiSuggestion;
  "ai.analysis_complete": AiAnalysisComplete;
  "system.notification": SystemNotification;
  "task.started": TaskStarted;
  "task.progress": TaskProgress;
  "task.completed": TaskCompleted;
  "task.failed": TaskFailed;
  "presence.joined": Presence;
  "presence.left": Presence;
}

export type EventType = keyof EventPayloads;

export const EVENT_TYPES: readonly EventType[] = [
  "project.updated",
  "project.deleted",
  "agent.status_changed",
  "agent.connected",
  "agent.disconnected",
  "workflow.started",
  "workflow.progress",
  "workflow.completed",
  "workflow.failed",
  "pr.created",
  "pr.updated",
  "pr.closed",
  "issue.created",
  "issue.updated",
  "issue.closed",
  "ai.suggestion",
  "ai.analysis_complete",
  "system.notification",
  "task.started",
  "task.progress",
  "task.completed",
  "task.failed",
  "presence.joined",
  "presence.left",
];

/** An event's place in one room: `seq` is contiguous per room within one `epoch`. */
export interface RoomPosition {
  room: string;
  seq: number;
  epoch: string;
}

/** The envelope of any event, typed or custom. */
export interface EnvelopeOf<T extends string, D> {
  /** UUIDv7; the same for every recipient of one publish. */
  id: string;
  type: T;
  /** The primary room (public name, no tenant). */
  room: string;
  /** RFC 3339 UTC with milliseconds. */
  timestamp: string;
  /** Absent for volatile events and presence notices. */
  seq?: number;
  epoch?: string;
  /** The event's place in its other rooms (an agent event with a project_id). */
  also?: RoomPosition[];
  /** Who published a client event (`publish`); set by the server, absent from server events. */
  from?: Sender;
  data: D;
}

/** The user and socket a client event came from. */
export interface Sender {
  user_id: string;
  sid: string;
}

/** Options of `publish` (WEBSOCKET_API.md 4.3b). */
export interface PublishOptions {
  /** Live only: no `seq`, not kept, never replayed (typing, cursors). Default false. */
  volatile?: boolean;
  /** The sender receives its own event too. Default false. */
  echo?: boolean;
}

/** A successful `publish` ack: the event's id, and its `seq` in the room unless volatile. */
export interface PublishAck {
  ok: true;
  id: string;
  seq?: number;
}

/** The envelope of a typed event; with no argument, the union over every type. */
export type Envelope<K extends EventType = EventType> = {
  [P in K]: EnvelopeOf<P, EventPayloads[P]>;
}[K];

/** A custom event (`POST /api/v1/broadcast`) or a client event (`publish`): any JSON data. */
export type CustomEnvelope = EnvelopeOf<string, unknown>;

export type RoomRecovery =
  | { replayed: number; epoch: string; seq: number; gap?: undefined; error?: undefined }
  | { gap: true; epoch: string; seq: number; replayed?: undefined; error?: undefined }
  | { error: "invalid_room" | "forbidden" | "too_many_rooms" | string; gap?: undefined; replayed?: undefined };

/** `connection.established` (not an envelope). */
export interface ConnectionEstablished {
  sid: string;
  user_id: string;
  tenant: string;
  rooms: string[];
  server_time: string;
  node_id: string;
  recovered?: boolean;
  recovery?: Record<string, RoomRecovery>;
  /** Where each joined room is (`seq` 0 for a room with no event yet): the cursor to recover from. */
  positions?: Record<string, { epoch: string; seq: number }>;
}

/** A successful `subscribe` ack: the rooms, and where each one is. */
export interface SubscribeAck {
  ok: true;
  rooms: string[];
  positions?: Record<string, { epoch: string; seq: number }>;
}

export interface AuthExpiring {
  expires_at: string;
  expires_in_secs: number;
}

export interface AuthExpired {
  code: "token_expired" | string;
  expired_at: string;
}

export interface ServerShutdown {
  reconnect_after_ms: number;
}

export interface WireError {
  code: string;
  message: string;
  room?: string;
  field?: string;
  /** `rpc_failed`: the backend's HTTP status (absent when its answer was too large). */
  status?: number;
  /** The lock codes (`locked`, `not_holder`, `lock_lost`, `invalid_resource`): the resource. */
  resource?: string;
  /** `locked`: who holds the lock. */
  holder?: LockHolder;
  /** `locked`: when the holder's lock expires unless renewed (RFC 3339). */
  expires_at?: string;
}

/** Who holds a lock (WEBSOCKET_API.md section 15): a socket's user, or an HTTP caller. */
export interface LockHolder {
  user_id?: string;
  kind: "socket" | "api";
}

/** A lock held: its fencing token (larger than every token granted before) and its expiry. */
export interface LockGrant {
  resource: string;
  token: number;
  /** RFC 3339 UTC with milliseconds. */
  expires_at: string;
}

export type Ack<T> = ({ ok: true } & T) | { ok: false; error: WireError };

export interface PresenceReply {
  room: string;
  connections: number;
  users: { user_id: string; connections: number }[];
}

export interface HistoryReply {
  room: string;
  epoch: string;
  seq: number;
  gap: boolean;
  events: Array<Envelope | CustomEnvelope>;
}

/** A successful `rpc` ack: `result` is the backend's JSON answer as it is. */
export interface RpcReply<T = unknown> {
  result: T;
}

export interface RefreshReply {
  expires_at: string;
  left_rooms: string[];
}
