"""The servers tests talk to, started through the service's own harness (:mod:`schedsvc.embedded`).

SecantusDB (the Rust server unless ``SCHEDSVC_EMBEDDED_MONGODB=python``), nats-server and Redis run as
separate processes on loopback ports chosen at random.
"""

from schedsvc.embedded import (
    ServerProcess,
    free_port,
    nats,
    port_open,
    redis,
    running,
    secantus,
    wait_for_port,
)

__all__ = ["ServerProcess", "free_port", "nats", "port_open", "redis", "running", "secantus", "wait_for_port"]
