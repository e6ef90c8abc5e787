"""The job and run use cases, owned once for every way in: ``/jobs``, ``/runs`` and the web console are thin
adapters over :class:`JobService` and :class:`RunService` (retries on demand);
:mod:`~schedsvc.job_service.rules` holds the rules a stored job must meet."""

from schedsvc.job_service.rules import TargetPolicy
from schedsvc.job_service.runs import RunService
from schedsvc.job_service.service import JobService

__all__ = ["JobService", "RunService", "TargetPolicy"]
