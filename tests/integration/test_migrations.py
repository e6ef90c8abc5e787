"""Migrations against a real server: what each creates, and that applying again is harmless."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schedsvc import names
from schedsvc.migrations import m0003_job_failure_history, m0004_reopened_waiting
from schedsvc.store.migrate import applied_versions, available_migrations, pending_migrations


async def run_indexes(db: Any) -> dict[str, dict[str, Any]]:
    return {ix["name"]: dict(ix["key"]) for ix in await (await db[names.RUNS].list_indexes()).to_list(None)}


async def test_m0003_indexes_a_jobs_runs_by_status_newest_first_instead_of_job_status(
    mongo_db: Any, settings: Any
) -> None:
    assert await pending_migrations(mongo_db) == []  # the fixture applied every migration
    assert 3 in await applied_versions(mongo_db) and [m.version for m in available_migrations()][:3] == [1, 2, 3]
    indexes = await run_indexes(mongo_db)
    assert indexes["job_status_history"] == {"jobId": 1, "status": 1, "scheduledAt": -1, "_id": -1}
    assert "job_status" not in indexes
    assert indexes["tenant_status_history"] == {"tenant": 1, "status": 1, "scheduledAt": -1, "_id": -1}

    await m0003_job_failure_history.apply(mongo_db, settings)  # again: harmless
    assert await run_indexes(mongo_db) == indexes


async def test_m0004_indexes_only_the_runs_reopened_for_a_retry_on_demand(mongo_db: Any, settings: Any) -> None:
    assert 4 in await applied_versions(mongo_db)
    infos = {ix["name"]: ix for ix in await (await mongo_db[names.RUNS].list_indexes()).to_list(None)}
    reopened = infos["reopened_waiting"]
    assert dict(reopened["key"]) == {"reopenedAt": 1} and reopened.get("sparse") is True, reopened

    # The sweeper's query reads that index, and it holds only the reopened run, not the other queued ones.
    now = datetime.now(UTC)
    await mongo_db[names.RUNS].insert_many(
        [
            {"_id": "j:1", "jobId": "j", "status": "queued", "reopenedAt": now - timedelta(minutes=5)},
            *({"_id": f"j:{i}", "jobId": "j", "status": "queued", "nextAttemptAt": now} for i in range(2, 40)),
        ]
    )
    query = {"reopenedAt": {"$lt": now}, "status": "queued"}
    explained = await mongo_db[names.RUNS].find(query).sort("reopenedAt", 1).limit(200).explain()
    assert "reopened_waiting" in str(explained["queryPlanner"]["winningPlan"]), explained
    assert explained["executionStats"]["totalKeysExamined"] <= 1, explained["executionStats"]

    await m0004_reopened_waiting.apply(mongo_db, settings)  # again: harmless
    assert (await run_indexes(mongo_db))["reopened_waiting"] == {"reopenedAt": 1}
