"""Partition leases against a real MongoDB-wire server: acquire, fair share, DB-clock expiry, release."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from schedsvc import names
from schedsvc.store.leases import MongoLeaseStore
from schedsvc.timing.leases import PartitionLeases, fair_share

PARTITIONS = 8


class Recorder:
    """A lease listener that remembers what it was told."""

    def __init__(self) -> None:
        self.owned: dict[int, int] = {}
        self.events: list[tuple[str, list[int]]] = []

    async def partitions_gained(self, grants: dict[int, int]) -> None:
        self.owned.update(grants)
        self.events.append(("gained", sorted(grants)))

    async def partitions_lost(self, partitions: Sequence[int]) -> None:
        for p in partitions:
            self.owned.pop(p, None)
        self.events.append(("lost", sorted(partitions)))


def member(db, name: str, *, ttl: float = 4.0, clock: Callable[[], float] = time.monotonic):  # type: ignore[no-untyped-def]
    recorder = Recorder()
    leases = PartitionLeases(
        MongoLeaseStore(db),
        name,
        PARTITIONS,
        ttl_seconds=ttl,
        heartbeat_seconds=ttl / 4,
        listener=recorder,
        clock=clock,
    )
    return leases, recorder


async def lease_docs(db) -> dict[int, dict]:  # type: ignore[no-untyped-def]
    return {d["_id"]: d async for d in db[names.LEASES].find({})}


def test_fair_share_covers_every_partition() -> None:
    assert fair_share(8, 1) == 8
    assert fair_share(8, 3) == 3
    assert fair_share(8, 20) == 1
    assert fair_share(8, 0) == 8
    for members in range(1, 12):
        assert fair_share(256, members) * members >= 256


async def test_a_lone_member_takes_every_partition_with_a_first_epoch(mongo_db) -> None:  # type: ignore[no-untyped-def]
    a, rec = member(mongo_db, "a")
    await a.start()
    try:
        assert a.owned == dict.fromkeys(range(PARTITIONS), 1)
        assert rec.owned == a.owned
        docs = await lease_docs(mongo_db)
        assert {d["owner"] for d in docs.values()} == {"a"}
        assert all(a.holds(p, 1) for p in range(PARTITIONS))
        assert not a.holds(0, 2)  # a stale epoch is not a lease
        assert a.alive
    finally:
        await a.stop()


async def test_members_converge_on_fair_shares_and_never_overlap(mongo_db) -> None:  # type: ignore[no-untyped-def]
    await MongoLeaseStore(mongo_db).ensure_partitions(PARTITIONS)
    a, rec_a = member(mongo_db, "a")
    b, rec_b = member(mongo_db, "b")
    c, rec_c = member(mongo_db, "c")
    await a.tick()
    assert len(a.owned) == PARTITIONS

    await b.tick()  # joins: nothing is free yet
    assert b.owned == {}
    await a.tick()  # sees two members: gives half back
    assert len(a.owned) == 4
    assert rec_a.events[-1][0] == "lost"
    await b.tick()
    assert len(b.owned) == 4
    assert set(a.owned).isdisjoint(b.owned)

    await c.tick()
    for m in (a, b, c, a, b, c):
        await m.tick()
    shares = sorted(len(m.owned) for m in (a, b, c))
    assert shares == [2, 3, 3]
    owners = [p for m in (a, b, c) for p in m.owned]
    assert sorted(owners) == list(range(PARTITIONS))  # every partition, each exactly once
    for m, rec in ((a, rec_a), (b, rec_b), (c, rec_c)):
        assert rec.owned == m.owned  # the listener saw every transition

    await c.stop()  # graceful: its partitions are free at once
    await a.tick()
    await b.tick()
    assert sorted(p for m in (a, b) for p in m.owned) == list(range(PARTITIONS))
    await a.stop()
    await b.stop()


async def test_expiry_is_judged_by_the_database_clock(mongo_db) -> None:  # type: ignore[no-untyped-def]
    store = MongoLeaseStore(mongo_db)
    await store.ensure_partitions(PARTITIONS)
    leases = mongo_db[names.LEASES]

    # A departed owner: half its leases expire a minute from now by the database's clock, half expired.
    # ($dateAdd, as the lease store itself writes expiries: valid on MongoDB 5+ and on both test servers.)
    def db_now_plus(ms: int) -> dict[str, object]:
        return {"$dateAdd": {"startDate": "$$NOW", "unit": "millisecond", "amount": ms}}

    ghost = {"owner": "ghost", "epoch": 5}
    await leases.update_many({"_id": {"$lt": 4}}, [{"$set": {**ghost, "expiresAt": db_now_plus(60_000)}}])
    await leases.update_many({"_id": {"$gte": 4}}, [{"$set": {**ghost, "expiresAt": db_now_plus(-1)}}])
    # This replica's own clock is far off: it must not matter.
    skewed, _ = member(mongo_db, "skewed", clock=lambda: time.monotonic() + 86_400)
    await skewed.tick()
    assert skewed.owned == dict.fromkeys(range(4, PARTITIONS), 6)
    docs = await lease_docs(mongo_db)
    assert all(docs[p]["owner"] == "ghost" for p in range(4))
    await skewed.stop()


async def test_a_lease_that_is_not_renewed_is_taken_over_with_a_new_epoch(mongo_db) -> None:  # type: ignore[no-untyped-def]
    a, rec_a = member(mongo_db, "a", ttl=1.0)
    b, _ = member(mongo_db, "b", ttl=1.0)
    await MongoLeaseStore(mongo_db).ensure_partitions(PARTITIONS)
    await a.tick()
    await b.tick()
    assert b.owned == {}
    await asyncio.sleep(1.3)  # a stalls: no renewal past its TTL
    await b.tick()
    assert b.owned == dict.fromkeys(range(PARTITIONS), 2)
    # a notices on its next round: its leases lapsed locally, and the database gives them to b.
    assert not any(a.holds(p, 1) for p in range(PARTITIONS))
    await a.tick()
    assert a.owned == {}
    assert ("lost", list(range(PARTITIONS))) in rec_a.events
    await a.stop()
    await b.stop()


async def test_stop_releases_every_lease_at_once_and_epochs_grow(mongo_db) -> None:  # type: ignore[no-untyped-def]
    a, rec_a = member(mongo_db, "a")
    await a.start()
    await a.stop()
    assert rec_a.events[-1] == ("lost", list(range(PARTITIONS)))
    docs = await lease_docs(mongo_db)
    assert all(d["owner"] is None for d in docs.values())
    assert await mongo_db[names.MEMBERS].count_documents({"_id": "a"}) == 0

    b, _ = member(mongo_db, "b")
    await b.start()  # no wait for expiry: the hand-off was graceful
    assert b.owned == dict.fromkeys(range(PARTITIONS), 2)
    await b.stop()


async def test_joining_members_get_partitions_through_the_background_heartbeat(mongo_db) -> None:  # type: ignore[no-untyped-def]
    first, _ = member(mongo_db, "first", ttl=2.0)
    await first.start()
    others = [member(mongo_db, f"m{i}", ttl=2.0)[0] for i in range(2)]
    for m in others:
        await m.start()
    everyone = [first, *others]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sorted(len(m.owned) for m in everyone) == [2, 3, 3]:
            break
        await asyncio.sleep(0.1)
    assert sorted(len(m.owned) for m in everyone) == [2, 3, 3]
    for m in everyone:
        await m.stop()
