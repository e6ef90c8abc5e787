"""Locust: the schedsvc API as ~1,000 client services of many tenants use it.

Each Locust user is one client service holding its own API key (``SCHEDSVC_LOAD_KEYS``: a JSON file of
``[{"tenant": ..., "key": ...}, ...]``, written by ``loadtests/run_load.py``). A service mostly reads
(lists its tenant's jobs with filters and pages, reads one job and its run history), sometimes checks a
schedule before creating a job, and changes only the jobs it created itself (patch with ``If-Match``,
pause/resume, delete), so a 412 is never expected and counts as a failure.

Pacing: one task every ``1 / SCHEDSVC_LOAD_USER_RPS`` seconds per user on a fixed grid with a random
phase (``PacedUser``), so the offered load is ``users * SCHEDSVC_LOAD_USER_RPS`` requests per second
whatever the latency (until users fall behind; a task is one request, except a list that follows a
page cursor, which makes two).
1,000 users at 0.1 req/s each is 6,000 requests per minute: one request every ten seconds per service.

``HelloUser`` (``locust -f loadtests/locustfile.py HelloUser``) hits ``GET /hello`` of the bare
Litestar/granian baseline app that ``run_load.py --baseline`` starts, with the same pacing.

Run it through ``loadtests/run_load.py``, which starts the stack, creates the tenants and keys and
seeds jobs; standalone it needs ``SCHEDSVC_LOAD_KEYS`` and ``--host``.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, task
from workload import TASK_WEIGHTS, TEAMS, list_filters  # this file's folder

USER_RPS = float(os.environ.get("SCHEDSVC_LOAD_USER_RPS", "0.1"))
TARGET_URL = os.environ.get("SCHEDSVC_LOAD_TARGET_URL", "http://127.0.0.1:9/hook")
_keys_file = os.environ.get("SCHEDSVC_LOAD_KEYS")
KEYS: list[dict[str, str]] = json.loads(Path(_keys_file).read_text()) if _keys_file else []
_user_numbers = itertools.count()


class PacedUser(FastHttpUser):
    """One request (task) every ``1 / SCHEDSVC_LOAD_USER_RPS`` seconds, on a fixed grid with a random phase.

    Locust's ``constant_throughput`` counts the time spent in ``on_start`` as task time, so a random
    start-up delay would shorten the first wait and offer up to twice the rate for a whole interval;
    this keeps the offered rate at ``users * USER_RPS`` from the first request.
    """

    abstract = True
    _next_due = 0.0

    def on_start(self) -> None:
        # Services do not start in step: spread each one's first request over its interval, or the
        # spawn would offer the whole population's first requests at once.
        gevent.sleep(random.uniform(0, 1 / USER_RPS))
        self._next_due = time.monotonic()

    def wait_time(self) -> float:
        self._next_due += 1 / USER_RPS
        return max(0.0, self._next_due - time.monotonic())


def random_schedule(rng: random.Random) -> dict[str, Any]:
    """Schedules client services really use: mostly cron, some intervals and calendars; few fire often."""
    roll = rng.random()
    if roll < 0.5:
        return {
            "kind": "cron",
            "expression": rng.choice(["0 * * * *", "*/15 * * * *", "30 2 * * *", "0 9 * * 1-5", "0 0 1 * *"]),
            "timezone": rng.choice(["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"]),
        }
    if roll < 0.85:
        return {"kind": "interval", "seconds": rng.choice([300, 600, 900, 3600])}
    return {"kind": "calendar", "every": rng.choice([1, 2]), "unit": "weeks", "time": "07:30", "timezone": "UTC"}


@dataclass
class OwnJob:
    """A job a client service created, as its last answer about the job showed it."""

    id: str
    version: int
    paused: bool


class ClientService(PacedUser):
    """One client service: reads a lot, creates and changes its own jobs now and then."""

    def on_start(self) -> None:
        number = next(_user_numbers)
        if not KEYS:
            raise RuntimeError("SCHEDSVC_LOAD_KEYS is not set: run the load through loadtests/run_load.py")
        credentials = KEYS[number % len(KEYS)]
        self.rng = random.Random(number)
        self.service = f"svc{number}"
        self.auth = {"Authorization": f"Bearer {credentials['key']}"}
        self.known: list[str] = []  # job ids of the tenant seen in lists (read-only use)
        self.mine: dict[str, OwnJob] = {}  # jobs this service created, by id
        super().on_start()

    # -- helpers ----------------------------------------------------------------------------------

    def _remember(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            if item["id"] not in self.known:
                self.known.append(item["id"])
        del self.known[:-200]

    def _forget(self, job_id: str) -> None:
        if job_id in self.known:
            self.known.remove(job_id)

    def _some_job(self) -> str | None:
        pool = self.known or list(self.mine)
        return self.rng.choice(pool) if pool else None

    def _some_job_or_list(self) -> str | None:
        """A job of the tenant to read; with none known yet, this turn lists the jobs instead (None)."""
        job_id = self._some_job()
        if job_id is None:
            self.list_jobs()
        return job_id

    def _my_job_or_create(self) -> OwnJob | None:
        """One of this service's own jobs to change; with none yet, this turn creates one instead (None)."""
        if not self.mine:
            self.create_job()
            return None
        return self.mine[self.rng.choice(list(self.mine))]

    def _if_match(self, job: OwnJob) -> dict[str, str]:
        return {"If-Match": f'"{job.version}"'}

    def _write_mine(self, job: OwnJob, method: str, path: str, name: str, body: Any = None) -> None:
        """A conditional write of one of this service's jobs; keeps the version and status it answers."""
        answer = self._json(method, path, name, body, self._if_match(job))
        if answer is not None:
            job.version, job.paused = answer["version"], answer["status"] == "paused"

    def _json(
        self,
        method: str,
        path: str,
        name: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        expect: int = 200,
        gone_ok: bool = False,
    ) -> dict[str, Any] | None:
        """One request; anything but ``expect`` is a failure (with the status and body start).

        ``gone_ok``: a 404 is a correct answer too (another service of the tenant deleted the job it had
        listed a moment ago); it returns None like a failure but is not counted as one.
        """
        with self.client.request(
            method, path, name=name, json=body, headers={**self.auth, **(headers or {})}, catch_response=True
        ) as response:
            if gone_ok and response.status_code == 404:
                response.success()
                return None
            if response.status_code != expect:
                response.failure(f"{response.status_code}: {(response.text or '')[:200]}")
                return None
            response.success()
            if expect == 204 or not response.content:
                return {}
            data: dict[str, Any] = response.json()
            return data

    # -- tasks ------------------------------------------------------------------------------------

    @task(TASK_WEIGHTS["list"])
    def list_jobs(self) -> None:
        """A dashboard or reconciler listing the tenant's jobs: a filter, small pages, sometimes page two."""
        query = "&".join(list_filters(self.rng))
        page = self._json("GET", f"/jobs?{query}", "GET /jobs")
        if page is None:
            return
        self._remember(page["items"])
        if page.get("nextCursor") and self.rng.random() < 0.3:
            nxt = self._json("GET", f"/jobs?{query}&cursor={page['nextCursor']}", "GET /jobs (next page)")
            if nxt is not None:
                self._remember(nxt["items"])

    @task(TASK_WEIGHTS["get"])
    def get_job(self) -> None:
        job_id = self._some_job_or_list()
        if job_id is None:
            return
        if self._json("GET", f"/jobs/{job_id}", "GET /jobs/{id}", gone_ok=job_id not in self.mine) is None:
            self._forget(job_id)

    @task(TASK_WEIGHTS["runs"])
    def run_history(self) -> None:
        job_id = self._some_job_or_list()
        if job_id is None:
            return
        path = f"/jobs/{job_id}/runs?limit={self.rng.choice([10, 20])}"
        if self._json("GET", path, "GET /jobs/{id}/runs", gone_ok=job_id not in self.mine) is None:
            self._forget(job_id)

    @task(TASK_WEIGHTS["preview"])
    def preview(self) -> None:
        body = {"schedule": random_schedule(self.rng), "count": self.rng.choice([5, 10, 20])}
        self._json("POST", "/schedules/preview", "POST /schedules/preview", body)

    @task(TASK_WEIGHTS["create"])
    def create_job(self) -> None:
        team = self.rng.choice(TEAMS)
        body = {
            "name": f"{self.service}-{uuid.uuid4().hex[:12]}",
            "schedule": random_schedule(self.rng),
            "target": {"kind": "http", "url": TARGET_URL, "method": "POST", "body": {"service": self.service}},
            "tags": [f"team-{team}", self.service],
            "metadata": {"owner": self.service},
        }
        job = self._json("POST", "/jobs", "POST /jobs", body, {"Idempotency-Key": uuid.uuid4().hex}, expect=201)
        if job is not None:
            self.mine[job["id"]] = OwnJob(job["id"], job["version"], job["status"] == "paused")

    @task(TASK_WEIGHTS["patch"])
    def patch_job(self) -> None:
        job = self._my_job_or_create()
        if job is None:
            return
        body: dict[str, Any] = {"metadata": {"owner": self.service, "rev": uuid.uuid4().hex[:8]}}
        if self.rng.random() < 0.3:
            body["schedule"] = random_schedule(self.rng)
        self._write_mine(job, "PATCH", f"/jobs/{job.id}", "PATCH /jobs/{id}", body)

    @task(TASK_WEIGHTS["pause"])
    def pause_or_resume(self) -> None:
        job = self._my_job_or_create()
        if job is None:
            return
        action = "resume" if job.paused else "pause"
        self._write_mine(job, "POST", f"/jobs/{job.id}/{action}", f"POST /jobs/{{id}}/{action}")

    @task(TASK_WEIGHTS["delete"])
    def delete_job(self) -> None:
        """Services retire jobs too; keeps each service's own job count small."""
        if len(self.mine) < 3:
            self.create_job()
            return
        job = self.mine.pop(next(iter(self.mine)))
        self._json("DELETE", f"/jobs/{job.id}", "DELETE /jobs/{id}", None, self._if_match(job), expect=204)


class HelloUser(PacedUser):
    """The framework baseline: a bare Litestar handler under granian, with the same pacing."""

    @task
    def hello(self) -> None:
        self.client.get("/hello", name="GET /hello")
