"""The models against the server's own JSON Schemas (`GET /api/v1/schema`): every event type
the server lists has a model, and every model's fields, required-ness and JSON types match."""

from __future__ import annotations

from typing import Any, Dict, Tuple, Type

from pydantic import BaseModel

from roomcast_client import EVENT_MODELS, Envelope, RoomPosition


def _resolve(prop: Dict[str, Any], defs: Dict[str, Any]) -> Dict[str, Any]:
    ref = prop.get("$ref")
    if ref is None:
        return prop
    return _resolve(defs[ref.rsplit("/", 1)[-1]], defs)


def _shape(prop: Dict[str, Any], defs: Dict[str, Any]) -> Tuple[Any, ...]:
    """A property's JSON types (null dropped: optional-ness is `required`), enum and bounds."""
    prop = _resolve(prop, defs)
    types, enum, bounds = set(), set(), {}
    for part in prop.get("anyOf", prop.get("oneOf", [prop])):
        part = _resolve(part, defs)
        t = part.get("type")
        if t is None and "enum" not in part and "$ref" not in part:
            types.add("any")
        types.update([t] if isinstance(t, str) else (t or []))
        enum.update(part.get("enum", []))
        for key in ("minimum", "maximum"):
            if key in part:
                bounds[key] = part[key]
    types.discard("null")
    if not types and enum:
        types.add("string")
    return tuple(sorted(types)), tuple(sorted(enum)), tuple(sorted(bounds.items()))


def _fields(schema: Dict[str, Any]) -> Dict[str, Tuple[bool, Tuple[Any, ...]]]:
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    return {name: (name in required, _shape(prop, defs)) for name, prop in schema["properties"].items()}


def _model_fields(model: Type[BaseModel]) -> Dict[str, Tuple[bool, Tuple[Any, ...]]]:
    return _fields(model.model_json_schema())


async def test_every_event_type_the_server_publishes_has_a_model(server):
    schema = await server.get_json("/api/v1/schema")
    assert schema["version"] == 1
    served = set(schema["events"]) | set(schema["server_events"])
    assert served == set(EVENT_MODELS), (
        f"no model for {sorted(served - set(EVENT_MODELS))}; "
        f"models the server does not list: {sorted(set(EVENT_MODELS) - served)}")


async def test_each_model_matches_its_event_schema(server):
    schema = await server.get_json("/api/v1/schema")
    for event_type, event_schema in {**schema["events"], **schema["server_events"]}.items():
        model = EVENT_MODELS[event_type]
        assert event_schema.get("additionalProperties") is False, event_type
        assert _model_fields(model) == _fields(event_schema), (
            f"{event_type}: model {model.__name__} (required, shape) per field differs from the server")


async def test_the_envelope_model_matches_the_envelope_schema(server):
    envelope = (await server.get_json("/api/v1/schema"))["envelope"]
    mine = _model_fields(Envelope[Any])
    theirs = _fields(envelope)
    assert set(mine) == set(theirs)
    for name in theirs:
        assert mine[name][0] == theirs[name][0], f"envelope.{name}: required differs"
        assert mine[name][1][0] == theirs[name][1][0], f"envelope.{name}: types differ"
    also_items = envelope["properties"]["also"]["items"]
    assert _model_fields(RoomPosition) == _fields(also_items)
