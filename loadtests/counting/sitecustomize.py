"""Counts MongoDB commands and Redis round trips of every Python process started with this on PYTHONPATH.

Benchmarks only (``loadtests/bench_api_cost.py``, ``loadtests/run_load.py --count-commands``): the counters
are Prometheus counters in the default registry, so an API process exposes them on its own ``/metrics``
beside the service's metrics. pymongo's command monitoring counts MongoDB commands; redis-py has no
listener, so one method is wrapped: ``send_packed_command`` is called once per round trip (a pipeline or a
script sends all its commands in one packet).
"""

from __future__ import annotations

import os
import sys

# Locust inherits the environment too; importing the drivers before gevent patches them would upset it.
if os.environ.get("SCHEDSVC_COUNT_COMMANDS") == "1" and not sys.argv[0].endswith("locust"):
    from typing import Any

    from prometheus_client import Counter
    from pymongo import monitoring
    from redis.asyncio import connection as redis_connection

    MONGODB_COMMANDS = Counter(
        "bench_mongodb_commands", "MongoDB commands sent by this process", ["command", "collection"]
    )
    REDIS_ROUND_TRIPS = Counter("bench_redis_round_trips", "Redis round trips made by this process")

    class _CommandCounter(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            target = event.command.get(event.command_name)
            collection = target if isinstance(target, str) else "-"
            MONGODB_COMMANDS.labels(event.command_name, collection).inc()

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    monitoring.register(_CommandCounter())
    _send = redis_connection.AbstractConnection.send_packed_command

    async def _counted_send(self: Any, command: Any, check_health: bool = True) -> None:
        REDIS_ROUND_TRIPS.inc()
        await _send(self, command, check_health)

    redis_connection.AbstractConnection.send_packed_command = _counted_send  # type: ignore[method-assign]
