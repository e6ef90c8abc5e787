"""The job use cases, owned once for every way in: ``/jobs`` and the web console are thin adapters over
:class:`JobService`; :mod:`~schedsvc.job_service.rules` holds the rules a stored job must meet."""

from schedsvc.job_service.rules import TargetPolicy
from schedsvc.job_service.service import JobService

__all__ = ["JobService", "TargetPolicy"]
