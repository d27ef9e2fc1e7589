"""Handshake: where the token is read from, what a refused handshake says, and the
`connection.established` greeting."""

import base64
import json
import time

import pytest

from conftest import NODE_ID, assert_rfc3339_millis_now, unique


def _b64url(obj) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# ---------------------------------------------------------------- token locations


@pytest.mark.parametrize("via", ["auth", "header", "query"])
def test_token_accepted_from_each_location(connect, via):
    sub = unique("alice")
    client = connect({"sub": sub, "tenant": "acme"}, via=via)
    est = client.established()
    assert est["user_id"] == sub
    assert est["tenant"] == "acme"


def test_auth_payload_wins_over_header_and_query(server, connect):
    auth_sub, header_sub, query_sub = unique("auth"), unique("header"), unique("query")
    client = connect(
        {"sub": auth_sub},
        headers={"Authorization": f"Bearer {server.mint_token(sub=header_sub)}"},
        query=f"token={server.mint_token(sub=query_sub)}",
    )
    assert client.established()["user_id"] == auth_sub


def test_header_wins_over_query(server, connect):
    header_sub, query_sub = unique("header"), unique("query")
    client = connect({"sub": header_sub}, via="header",
                     query=f"token={server.mint_token(sub=query_sub)}")
    assert client.established()["user_id"] == header_sub


# ---------------------------------------------------------------- refusals


def test_no_token_is_token_missing(refused):
    assert refused(via="none") == "token_missing"


@pytest.mark.parametrize("via", ["auth", "header", "query"])
def test_garbage_token_is_token_invalid(refused, via):
    assert refused(token="not-a-jwt", via=via) == "token_invalid"


def test_wrong_secret_is_token_invalid(server, refused):
    token = server.mint_token(secret="some-other-secret-0123456789abcdef", sub=unique("u"))
    assert refused(token=token) == "token_invalid"


def test_alg_none_is_token_invalid(refused):
    header = _b64url({"alg": "none", "typ": "JWT"})
    payload = _b64url({"sub": unique("u"), "exp": int(time.time()) + 3600})
    assert refused(token=f"{header}.{payload}.") == "token_invalid"


def test_expired_an_hour_ago_is_token_expired(server, refused):
    token = server.mint_token(sub=unique("u"), exp=int(time.time()) - 3600)
    assert refused(token=token) == "token_expired"


def test_token_without_exp_is_token_invalid(server, refused):
    assert refused(token=server.mint_token(sub=unique("u"), exp=None)) == "token_invalid"


def test_token_without_sub_is_token_invalid(server, refused):
    assert refused(token=server.mint_token(tenant="acme")) == "token_invalid"


@pytest.mark.parametrize("claims", [
    {"sub": "alice smith"},
    {"sub": "a" * 129},
    {"sub": "alice", "tenant": "acme/inc"},
])
def test_bad_sub_or_tenant_is_token_invalid(server, refused, claims):
    assert refused(token=server.mint_token(**claims)) == "token_invalid"


def test_refused_on_ws_namespace_too(refused):
    assert refused(via="none", namespaces=["/ws"]) == "token_missing"


# ---------------------------------------------------------------- connection.established


def test_connection_established_fields(connect):
    sub = unique("alice")
    client = connect({"sub": sub, "tenant": "acme", "projects": ["1"]})
    est = client.established()
    assert set(est) == {"sid", "user_id", "tenant", "rooms", "server_time", "node_id",
                        "recovered", "recovery", "positions"}
    assert sorted(est["positions"]) == sorted(est["rooms"])
    assert est["recovered"] is False and est["recovery"] == {}
    assert est["sid"] == client.sio.get_sid("/")
    assert est["user_id"] == sub
    assert est["tenant"] == "acme"
    assert sorted(est["rooms"]) == sorted(["global", f"user:{sub}"])
    assert_rfc3339_millis_now(est["server_time"])
    assert est["node_id"] == NODE_ID


def test_tenant_defaults_to_default(connect):
    client = connect({"sub": unique("u")})
    assert client.established()["tenant"] == "default"


def test_connection_established_sent_once(connect):
    client = connect({"sub": unique("u")})
    client.established()
    client.barrier()
    assert len(client.events("connection.established")) == 1
