"""Every MongoDB collection, NATS subject and stream, and Redis key prefix, in one place.

All names derive from one prefix (``SCHEDSVC_PREFIX``) so that several deployments, or several test
runs, can share a MongoDB server, a NATS server and a Redis without seeing each other.
"""

from dataclasses import dataclass

JOBS = "jobs"
RUNS = "runs"
TENANTS = "tenants"
API_KEYS = "api_keys"
IDEMPOTENCY = "idempotency_keys"
LEASES = "partition_leases"
MEMBERS = "scheduler_members"
META = "meta"

META_MIGRATIONS_ID = "migrations"
META_CLUSTER_ID = "cluster"


@dataclass(frozen=True, slots=True)
class Names:
    """Names of the NATS and Redis resources of one deployment."""

    prefix: str

    @property
    def run_stream(self) -> str:
        """JetStream stream holding run messages from timing to execution."""
        return f"{self._token}_RUNS"

    @property
    def dead_letter_stream(self) -> str:
        """JetStream stream holding runs that exhausted their retries."""
        return f"{self._token}_DLQ"

    @property
    def streams(self) -> tuple[str, ...]:
        """Every JetStream stream of the deployment (tests delete them all when they end)."""
        return (self.run_stream, self.dead_letter_stream, self.notification_stream)

    @property
    def run_subject_root(self) -> str:
        return f"{self.prefix}.runs"

    def run_subject(self, partition: int) -> str:
        """Subject of a run message; the partition spreads messages over subjects for observability."""
        return f"{self.run_subject_root}.{partition}"

    @property
    def dead_letter_subject(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def notification_stream(self) -> str:
        """JetStream stream holding tenant notifications (failures, recoveries, missed fires) until sent."""
        return f"{self._token}_NOTIFY"

    @property
    def notification_subject(self) -> str:
        return f"{self.prefix}.notify"

    @property
    def notifier_consumer(self) -> str:
        """Durable pull consumer shared by every execution process's notification sender."""
        return f"{self._token}_notifiers"

    @property
    def job_changes_subject(self) -> str:
        """Core NATS subject on which the API announces job changes to the timing module."""
        return f"{self.prefix}.jobs.changed"

    @property
    def tenant_changes_subject(self) -> str:
        """Core NATS subject announcing revoked API keys and changed tenant secrets to every replica."""
        return f"{self.prefix}.tenants.changed"

    @property
    def worker_consumer(self) -> str:
        """Durable pull consumer shared by every execution worker."""
        return f"{self._token}_workers"

    @property
    def reserved_subject_roots(self) -> tuple[str, ...]:
        """Subjects a tenant's NATS target may never publish to."""
        return (f"{self.prefix}.", "$JS.", "$SYS.", "_INBOX.", "$KV.", "$O.")

    @property
    def redis_prefix(self) -> str:
        return f"{self.prefix}:"

    @property
    def _token(self) -> str:
        # Stream and consumer names may not contain '.', '*', '>' or whitespace.
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in self.prefix).upper()
