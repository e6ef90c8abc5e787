"""A granian worker stops when granian's main process is gone.

The main process supervises the workers. Killed outright (``kill -9``, an OOM kill, a closed terminal) it leaves
them running, serving the port with nothing to stop them, and the next ``schedsvc dev`` or ``serve`` finds the
port taken. :func:`schedsvc.cli.serve` records the main process's pid in the environment the workers inherit;
each worker watches for its parent to change and then stops itself as a SIGTERM stops it (leases released,
runs in flight handed back).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

log = logging.getLogger(__name__)

SERVER_PID_ENV = "_SCHEDSVC_SERVER_PID"
"""Set by ``serve`` for its workers; not a ``SCHEDSVC_*`` setting, so configuration never sees it."""
CHECK_SECONDS = 1.0


async def stop_when_orphaned(check_seconds: float = CHECK_SECONDS) -> None:
    """Until cancelled: SIGTERM this process once its parent is no longer the server that started it. Returns
    at once in any other process (tests, tools), whose parent is not the recorded server."""
    server = os.environ.get(SERVER_PID_ENV)
    if server is None or str(os.getppid()) != server:
        return
    # Polled: a parent's death is no event a loop can await portably (pidfd is Linux-only), and once a second
    # costs nothing.
    while str(os.getppid()) == server:  # noqa: ASYNC110
        await asyncio.sleep(check_seconds)
    log.warning("the server process %s that started this worker is gone: stopping", server)
    os.kill(os.getpid(), signal.SIGTERM)
