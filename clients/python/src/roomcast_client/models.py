"""Wire models of the Roomcast protocol (WEBSOCKET_API.md sections 2, 4, 5 and 11).

One pydantic model per event payload, the envelope around them, and the payloads of the
control events and command replies. The server is the source of truth for the payloads:
tests/test_schema.py checks these models against `GET /api/v1/schema`.

Models accept fields they do not know (`extra="allow"`): a newer server that adds a field
must not break an older client. The schema test is what keeps the two in step.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Dict, Generic, List, Literal, Optional, Type, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: An id: 1 to 128 of [A-Za-z0-9_.-]. Publishers may send integers; clients always get strings.
Id = str


class Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


# ------------------------------------------------------------------------- event payloads


class ProjectUpdated(Model):
    project_id: Id
    project_name: Optional[str] = None
    status: Optional[str] = None
    updated_by: Optional[str] = None
    repository_url: Optional[str] = None
    changes: Optional[Dict[str, Any]] = None


class ProjectDeleted(Model):
    project_id: Id
    deleted_by: Optional[str] = None


class AgentStatusChanged(Model):
    agent_id: Id
    status: str
    previous_status: Optional[str] = None
    project_id: Optional[Id] = None


class AgentConnection(Model):
    """`agent.connected` and `agent.disconnected`."""

    agent_id: Id
    project_id: Optional[Id] = None
    reason: Optional[str] = None


class WorkflowStarted(Model):
    workflow_id: Id
    project_id: Id
    name: Optional[str] = None
    triggered_by: Optional[str] = None


class WorkflowProgress(Model):
    workflow_id: Id
    project_id: Id
    progress: int = Field(ge=0, le=100)
    step: Optional[str] = None
    message: Optional[str] = None
    eta_seconds: Optional[int] = Field(default=None, ge=0)


class WorkflowCompleted(Model):
    workflow_id: Id
    project_id: Id
    result: Any = None
    duration_ms: Optional[int] = Field(default=None, ge=0)


class WorkflowFailed(Model):
    workflow_id: Id
    project_id: Id
    error: str
    step: Optional[str] = None


class TaskStarted(Model):
    task_id: Id
    project_id: Id
    name: str
    #: Units of `current` in the whole task, when known.
    total: Optional[float] = Field(default=None, gt=0)


class TaskProgress(Model):
    """`task.progress`. `percent`, `rate_per_sec` and `eta_ms` are set by the server (a
    publisher may not send them), each `None` while unknown (WEBSOCKET_API.md 5.15c)."""

    task_id: Id
    project_id: Id
    #: Units done so far.
    current: float = Field(ge=0)
    #: The publisher's, or the last one given for this task (filled in by the server).
    total: Optional[float] = Field(default=None, gt=0)
    step: Optional[str] = None
    message: Optional[str] = None
    #: 100 * current / total, at most 100; `None` without a total.
    percent: Optional[float] = Field(default=None, ge=0, le=100)
    #: Units of `current` per second (exponentially weighted, 10 s half-life).
    rate_per_sec: Optional[float] = Field(default=None, ge=0)
    #: (total - current) / rate_per_sec, in ms; 0 once current >= total.
    eta_ms: Optional[int] = Field(default=None, ge=0)


class TaskCompleted(Model):
    task_id: Id
    project_id: Id
    result: Any = None
    message: Optional[str] = None
    #: Set by the server: the time since `task.started`, when it saw it.
    duration_ms: Optional[int] = Field(default=None, ge=0)


class TaskFailed(Model):
    task_id: Id
    project_id: Id
    error: str
    step: Optional[str] = None
    #: Set by the server, as in `task.completed`.
    duration_ms: Optional[int] = Field(default=None, ge=0)


class PullRequest(Model):
    """`pr.created`, `pr.updated` and `pr.closed`."""

    project_id: Id
    number: int = Field(ge=0)
    title: str
    url: Optional[str] = None
    author: Optional[str] = None
    state: Optional[str] = None
    merged: Optional[bool] = None
    #: The GitHub action behind a webhook-published event (``opened``, ``synchronize``, ...).
    action: Optional[str] = None


class Issue(Model):
    """`issue.created`, `issue.updated` and `issue.closed`."""

    project_id: Id
    number: int = Field(ge=0)
    title: str
    url: Optional[str] = None
    author: Optional[str] = None
    state: Optional[str] = None
    #: The GitHub action behind a webhook-published event (``opened``, ``labeled``, ...).
    action: Optional[str] = None


class AiSuggestion(Model):
    suggestion_id: Id
    content: str
    title: Optional[str] = None
    kind: Optional[str] = None
    user_id: Optional[Id] = None
    project_id: Optional[Id] = None


class AiAnalysisComplete(Model):
    analysis_id: Id
    project_id: Id
    summary: str


Severity = Literal["info", "warning", "error", "critical"]


class SystemNotification(Model):
    title: str
    message: str
    severity: Optional[Severity] = None


class Presence(Model):
    """`presence.joined` and `presence.left` (server events, no `seq`)."""

    user_id: Id
    room: str


#: Event type -> the model of its envelope's `data`.
EVENT_MODELS: Dict[str, Type[Model]] = {
    "project.updated": ProjectUpdated,
    "project.deleted": ProjectDeleted,
    "agent.status_changed": AgentStatusChanged,
    "agent.connected": AgentConnection,
    "agent.disconnected": AgentConnection,
    "workflow.started": WorkflowStarted,
    "workflow.progress": WorkflowProgress,
    "workflow.completed": WorkflowCompleted,
    "workflow.failed": WorkflowFailed,
    "pr.created": PullRequest,
    "pr.updated": PullRequest,
    "pr.closed": PullRequest,
    "issue.created": Issue,
    "issue.updated": Issue,
    "issue.closed": Issue,
    "ai.suggestion": AiSuggestion,
    "ai.analysis_complete": AiAnalysisComplete,
    "system.notification": SystemNotification,
    "task.started": TaskStarted,
    "task.progress": TaskProgress,
    "task.completed": TaskCompleted,
    "task.failed": TaskFailed,
    "presence.joined": Presence,
    "presence.left": Presence,
}

EVENT_TYPES = tuple(EVENT_MODELS)

# ------------------------------------------------------------------------------ envelope

DataT = TypeVar("DataT")


class RoomPosition(Model):
    """An event's place in one room: `seq` is contiguous per room within one `epoch`."""

    room: str
    seq: int = Field(ge=1)
    epoch: str


class Sender(Model):
    """The user and socket a client event came from (the envelope's `from`)."""

    user_id: str
    sid: str


class Envelope(Model, Generic[DataT]):
    """What every event arrives in. `data` is the typed payload (custom events: any JSON)."""

    #: UUIDv7; the same for every recipient of one publish.
    id: str
    type: str
    #: The primary room (public name, no tenant).
    room: str
    timestamp: datetime
    #: Absent for volatile events and presence notices.
    seq: Optional[int] = Field(default=None, ge=1)
    epoch: Optional[str] = None
    #: The event's place in its other rooms (an agent event with a project_id).
    also: Optional[List[RoomPosition]] = None
    #: Who published a client event (`publish`); set by the server, `None` for server events.
    #: On the wire it is `from`.
    from_: Optional[Sender] = Field(default=None, alias="from")
    data: DataT

    def positions(self) -> List[RoomPosition]:
        """Every room position of this event (none for volatile events)."""
        out = []
        if self.seq is not None and self.epoch is not None:
            out.append(RoomPosition(room=self.room, seq=self.seq, epoch=self.epoch))
        out.extend(self.also or [])
        return out


#: A custom event (`POST /api/v1/broadcast`): any JSON data.
CustomEnvelope = Envelope[Any]


def parse_envelope(payload: Dict[str, Any]) -> Envelope[Any]:
    """The envelope with `data` as its type's model (custom types: raw JSON)."""
    model = EVENT_MODELS.get(payload.get("type", ""))
    if model is None:
        return Envelope[Any].model_validate(payload)
    return Envelope[model].model_validate(payload)  # type: ignore[valid-type]


# ------------------------------------------------------------ control events and replies


class RoomCursor(Model):
    """Where a room is: its `epoch` and last `seq` (0 when it has no event yet)."""

    epoch: str
    seq: int = Field(ge=0)


class RoomRecovery(Model):
    """One room of `connection.established.recovery`: replayed, gap, or error."""

    replayed: Optional[int] = None
    gap: bool = False
    epoch: Optional[str] = None
    seq: Optional[int] = None
    #: `invalid_room`, `forbidden` or `too_many_rooms`: the room was not re-joined.
    error: Optional[str] = None


class ConnectionEstablished(Model):
    """`connection.established` (not an envelope)."""

    sid: str
    user_id: str
    tenant: str
    rooms: List[str]
    server_time: datetime
    node_id: str
    recovered: bool = False
    recovery: Dict[str, RoomRecovery] = Field(default_factory=dict)
    #: Where each joined room is (`seq` 0 for a room with no event yet): the cursor to recover from.
    positions: Dict[str, RoomCursor] = Field(default_factory=dict)


class AuthExpiring(Model):
    expires_at: datetime
    expires_in_secs: int


class AuthExpired(Model):
    code: str
    expired_at: datetime


class ServerShutdown(Model):
    reconnect_after_ms: int


class LockGrant(Model):
    """A lock held (WEBSOCKET_API.md section 15): its fencing token, larger than every token
    granted before, and when it expires unless renewed."""

    resource: str
    token: int
    expires_at: datetime


class RefreshReply(Model):
    expires_at: datetime
    left_rooms: List[str] = Field(default_factory=list)


class PresenceUser(Model):
    user_id: str
    connections: int


class PublishAck(Model):
    """A successful `publish`: the event's id, and its `seq` in the room unless volatile."""

    ok: bool
    id: str
    seq: Optional[int] = None


class PresenceReply(Model):
    room: str
    connections: int
    users: List[PresenceUser]


class HistoryReply(Model):
    room: str
    epoch: str
    #: The room's latest seq.
    seq: int
    #: True when some events after `since_seq` were already dropped.
    gap: bool
    #: Envelopes, oldest first, each `data` parsed as its type's model.
    events: List[Envelope[Any]]

    @field_validator("events", mode="before")
    @classmethod
    def _typed(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [parse_envelope(e) if isinstance(e, dict) else e for e in value]
        return value


class Pong(Model):
    pong: bool
    server_time: datetime


class Gap(Model):
    """Meta event `gap`: events of `room` after the client's cursor are lost; refetch its state.
    `epoch`/`seq` are where the room stands now; the client continues from there."""

    room: str
    epoch: str
    seq: int


class RoomLost(Model):
    """Meta event `room_lost`: a room the client had subscribed is no longer joined.
    `code`: `forbidden`, `invalid_room`, `too_many_rooms` (recovery or re-subscribe) or
    `token_refresh` (left after `auth.refresh`)."""

    room: str
    code: str

