"""``python -m schedsvc.timing``: a headless timing replica configured from ``SCHEDSVC_*`` variables.

Used by multi-process tests and benchmarks. SIGTERM or SIGINT stops it gracefully: every lease is
released as soon as in-flight publishes are done, so another replica takes over without waiting for expiry.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import AsyncExitStack

from schedsvc.config import Settings
from schedsvc.observability.logging import configure_logging
from schedsvc.observability.runtime import tune_gc
from schedsvc.wiring import open_adapters, timing_service

log = logging.getLogger("schedsvc.timing")


async def run(settings: Settings) -> None:
    """Run one replica until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        service = timing_service(await open_adapters(settings, stack))
        await service.start()
        # One line on stdout tells a parent process the replica is serving.
        print(f"ready {service.member}", flush=True)
        await stop.wait()
        await service.stop()
        log.info("timing replica %s stopped", service.member)


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    tune_gc()
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
