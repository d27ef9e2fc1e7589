"""`client.lock(resource, ttl_ms)`, `renew` and `release` against a real server: one holder
at a time, `locked` raising with who holds it and until when, tokens that grow."""

from __future__ import annotations

import pytest

from roomcast_client import RoomcastError


async def test_lock_locked_renew_release(server, make_client):
    alice = make_client(token=server.mint_token(sub="alice", projects=["42"]))
    bob = make_client(token=server.mint_token(sub="bob", projects=["42"]))
    await alice.connect()
    await bob.connect()

    grant = await alice.lock("project:42/deploy", 10_000)
    assert grant.resource == "project:42/deploy" and grant.token > 0

    with pytest.raises(RoomcastError) as locked:
        await bob.lock("project:42/deploy")
    assert locked.value.code == "locked"
    assert locked.value.holder == {"user_id": "alice", "kind": "socket"}
    assert locked.value.expires_at is not None

    renewed = await alice.renew("project:42/deploy", grant.token, 60_000)
    assert renewed.token == grant.token and renewed.expires_at > grant.expires_at
    with pytest.raises(RoomcastError) as not_holder:
        await bob.release("project:42/deploy", grant.token)
    assert not_holder.value.code == "not_holder"
    await alice.release("project:42/deploy", grant.token)
    with pytest.raises(RoomcastError) as lost:
        await alice.renew("project:42/deploy", grant.token)
    assert lost.value.code == "lock_lost"

    assert (await bob.lock("project:42/deploy")).token > grant.token
    with pytest.raises(RoomcastError) as forbidden:
        await bob.lock("project:7/deploy")
    assert forbidden.value.code == "forbidden"
