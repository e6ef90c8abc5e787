"""``python -m schedsvc.execution``: a headless execution process configured from ``SCHEDSVC_*`` variables.

SIGTERM or SIGINT stops it gracefully: in-flight runs finish within the shutdown grace period, the rest
are handed back to JetStream at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import AsyncExitStack

from schedsvc.config import Settings
from schedsvc.observability.logging import configure_logging
from schedsvc.observability.runtime import tune_gc
from schedsvc.wiring import execution_service, open_adapters

log = logging.getLogger("schedsvc.execution")


async def run(settings: Settings) -> None:
    """Run one execution process until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        service = execution_service(await open_adapters(settings, stack))
        await service.start()
        # One line on stdout tells a parent process the worker is serving.
        print("ready execution", flush=True)
        await stop.wait()
        await service.stop()


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    tune_gc()
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
