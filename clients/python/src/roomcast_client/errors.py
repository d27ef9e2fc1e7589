"""The one error type of the client."""

from __future__ import annotations

from typing import Any, Dict, Optional


class RoomcastError(Exception):
    """An error reported by the server (an ack with `ok: false`, an `error` event, a refused
    handshake) or by the client itself (`timeout`, `not_connected`, `connect_failed`,
    `token_unavailable`, `invalid_event`).

    `code` is the server's stable error code, e.g. `forbidden`, `invalid_room`,
    `too_many_rooms`, `token_expired`, `rpc_failed` (WEBSOCKET_API.md section 7); `room` is
    set for the room errors, `status` (the backend's HTTP status) for `rpc_failed`,
    `field` (a JSON pointer) for a `publish` whose data fails its schema, `holder`
    (`{"user_id", "kind"}`) and `expires_at` (RFC 3339) for `locked`.
    """

    def __init__(self, code: str, message: str, room: Optional[str] = None,
                 status: Optional[int] = None, field: Optional[str] = None,
                 holder: Optional[Dict[str, Any]] = None,
                 expires_at: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.room = room
        self.status = status
        self.field = field
        self.holder = holder
        self.expires_at = expires_at

    @classmethod
    def from_wire(cls, error: Any, fallback: str = "error") -> "RoomcastError":
        """From the server's `{code, message, room?, field?}`."""
        if not isinstance(error, dict):
            return cls(fallback, f"{fallback}: {error!r}")
        code = error.get("code") or fallback
        status = error.get("status")
        holder = error.get("holder")
        return cls(str(code), str(error.get("message") or code), error.get("room"),
                   status if isinstance(status, int) else None, error.get("field"),
                   holder if isinstance(holder, dict) else None, error.get("expires_at"))

    def __repr__(self) -> str:
        room = f", room={self.room!r}" if self.room is not None else ""
        status = f", status={self.status!r}" if self.status is not None else ""
        return f"RoomcastError(code={self.code!r}, message={self.message!r}{room}{status})"
