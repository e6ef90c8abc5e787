"""Execution: JetStream workers that perform jobs' targets, with retries, signing and an address policy."""

from schedsvc.execution.addresses import AddressRefusedError, refusal_reason
from schedsvc.execution.service import ExecutionService

__all__ = ["AddressRefusedError", "ExecutionService", "refusal_reason"]
