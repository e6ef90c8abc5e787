"""The client services' mix, shared by ``locustfile.py`` (over HTTP) and ``profile_inprocess.py`` (in process),
so the profile measures the workload the load test offers.

Both import it as a sibling module: Locust puts the locustfile's folder on ``sys.path``, and a script's own
folder is there when it runs.
"""

from __future__ import annotations

import random

TEAMS = ("billing", "search", "growth", "infra", "data")
TASK_WEIGHTS = {"list": 30, "get": 20, "runs": 12, "preview": 8, "create": 10, "patch": 8, "pause": 6, "delete": 3}
"""Each task's relative weight: mostly reads, some checks of a schedule, and changes to the service's own jobs."""


def list_filters(rng: random.Random) -> list[str]:
    """The query parameters of one ``GET /jobs``: a page size, and sometimes a status, tag or name filter."""
    params = [f"limit={rng.choice([5, 10, 20, 50])}"]
    roll = rng.random()
    if roll < 0.3:
        params.append("status=active")
    elif roll < 0.5:
        params.append(f"tag=team-{rng.choice(TEAMS)}")
    elif roll < 0.6:
        params.append("name=seed-")
    return params
