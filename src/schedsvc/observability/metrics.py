"""Every Prometheus metric of the service, defined once.

Multi-process safe: when ``PROMETHEUS_MULTIPROC_DIR`` is set (``schedsvc serve`` sets it for granian
workers) prometheus-client writes samples to files there and ``/metrics`` aggregates them; gauges
declare how they are combined across processes. HTTP request metrics come from Litestar's
Prometheus middleware (``schedsvc_http_requests_total``, ``schedsvc_http_request_duration_seconds``,
``schedsvc_http_requests_in_progress``, labelled by route template).
"""

from prometheus_client import Counter, Gauge, Histogram

LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0)
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)

# Timing
FIRES_PUBLISHED = Counter("schedsvc_fires_published_total", "Run messages published by the timing module.", ["trigger"])
FIRE_LATENESS = Histogram(
    "schedsvc_fire_lateness_seconds",
    "Delay from a fire's due instant to its publication.",
    buckets=LATENESS_BUCKETS,
)
PARTITIONS_OWNED = Gauge(
    "schedsvc_partitions_owned", "Partitions whose lease this process holds.", multiprocess_mode="livesum"
)
LEASE_CHANGES = Counter("schedsvc_lease_changes_total", "Partition lease transitions seen by this process.", ["change"])
WHEEL_TIMERS = Gauge(
    "schedsvc_wheel_timers", "Fires waiting in this process's timing wheel.", multiprocess_mode="livesum"
)
TIMING_DB_OPERATIONS = Counter(
    "schedsvc_timing_db_operations_total",
    "MongoDB operations issued by the timing module (divide writes by fires for writes per fire).",
    ["kind"],
)
CATCHUP_DECISIONS = Counter(
    "schedsvc_catchup_decisions_total",
    "Fires found late at load time, by policy and decision (run or missed).",
    ["policy", "decision"],
)
ZONE_DATABASE_INFO = Gauge(
    "schedsvc_zone_database_info",
    "Always 1; labels name the time-zone database that zoneinfo and the Rust core read.",
    ["version", "source"],
    multiprocess_mode="max",
)

# Execution
RUNS_FINISHED = Counter("schedsvc_runs_total", "Runs that reached a final status.", ["status", "trigger"])
RUN_ATTEMPTS = Counter("schedsvc_run_attempts_total", "Target calls, by outcome.", ["target", "outcome"])
RUN_DURATION = Histogram(
    "schedsvc_run_duration_seconds", "Duration of one target call.", ["target"], buckets=RUN_BUCKETS
)
RUNS_IN_PROGRESS = Gauge("schedsvc_runs_in_progress", "Runs being performed now.", multiprocess_mode="livesum")
DEAD_LETTERS = Counter("schedsvc_dead_letters_total", "Runs sent to the dead-letter stream.")
RETRIES_REPUBLISHED = Counter(
    "schedsvc_retries_republished_total",
    "Retries on demand whose message was lost (the API died or could not undo the reopen) and that the"
    " execution module's sweeper published again (duplicates the stream dropped are not counted).",
)
NOTIFICATIONS = Counter(
    "schedsvc_notifications_total",
    "Tenant notifications by type and outcome: sent, given_up (after its attempts, or refused by the target"
    " policy), unreported (could not be queued).",
    ["type", "outcome"],
)
RUN_QUEUE_PENDING = Gauge(
    "schedsvc_run_queue_pending",
    "Run messages waiting in the stream for a worker (sampled from the consumer).",
    multiprocess_mode="max",
)
TARGET_REFUSALS = Counter("schedsvc_target_refusals_total", "Outbound calls refused by the address policy.", ["reason"])

# API support
CACHE_REQUESTS = Counter("schedsvc_cache_requests_total", "Response cache lookups, by result.", ["result"])
CACHE_ERRORS = Counter("schedsvc_cache_errors_total", "Redis errors that made a request bypass the cache.")
RATE_LIMITED = Counter("schedsvc_rate_limited_total", "Requests rejected with 429.")
