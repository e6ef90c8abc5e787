"""Kubernetes probes: liveness is the process; readiness is its dependencies."""

from __future__ import annotations

import asyncio
import time

import msgspec
from litestar import Controller, Response, get
from litestar.datastructures import State

from schedsvc.store.migrate import pending_migrations
from schedsvc.timing import ZoneDatabase, zone_database

# Readiness is cached this long, so a probe every few seconds costs at most one ping per interval.
READY_CACHE_SECONDS = 2.0
CHECK_TIMEOUT_SECONDS = 2.0


class Readiness(msgspec.Struct):
    ready: bool
    checks: dict[str, str]
    # Which tz database schedules are computed with (operators compare it across replicas).
    tzdata: ZoneDatabase


async def _check(coro: object) -> str:
    try:
        await asyncio.wait_for(coro, CHECK_TIMEOUT_SECONDS)  # type: ignore[arg-type]
        return "ok"
    except Exception as exc:
        return f"failing: {type(exc).__name__}"


class HealthController(Controller):
    path = "/health"
    tags = ["health"]
    include_in_schema = True

    @get("/live", summary="Liveness", operation_id="getLiveness", cache=False)
    async def live(self) -> dict[str, str]:
        return {"status": "ok"}

    @get(
        "/ready",
        summary="Readiness: MongoDB and NATS reachable, migrations applied; Redis optional",
        operation_id="getReadiness",
    )
    async def ready(self, state: State) -> Response[Readiness]:
        cached: tuple[float, Readiness] | None = state.get("readiness")
        now = time.monotonic()
        if cached is None or now - cached[0] > READY_CACHE_SECONDS:
            cached = (now, await self._evaluate(state))
            state.readiness = cached
        result = cached[1]
        return Response(result, status_code=200 if result.ready else 503)

    async def _evaluate(self, state: State) -> Readiness:
        checks: dict[str, str] = {}
        checks["mongodb"] = await _check(state.db.command("ping"))
        if checks["mongodb"] == "ok" and not state.get("migrations_ok"):
            pending = await pending_migrations(state.db)
            state.migrations_ok = not pending
        checks["migrations"] = "ok" if state.get("migrations_ok") else "pending"
        bus = state.get("bus")
        checks["nats"] = "ok" if bus is not None and bus.connected else "failing: disconnected"
        if state.get("redis") is not None:
            # Optional: without Redis requests bypass the cache, so this never fails readiness.
            checks["redis"] = "ok" if await state.redis.healthy() else "degraded"
        required = ["mongodb", "migrations", "nats"]
        for name, module in state.get("modules", {}).items():
            checks[name] = "ok" if module.ready else "not running"
            required.append(name)
        ready = all(checks[k] == "ok" for k in required)
        return Readiness(ready, checks, zone_database())
