"""``python -m schedsvc.timing``: a headless timing replica configured from ``SCHEDSVC_*`` variables.

Used by multi-process tests and benchmarks. SIGTERM or SIGINT stops it gracefully: every lease is
released as soon as in-flight publishes are done, so another replica takes over without waiting for expiry.
"""

from schedsvc.wiring import run_headless, timing_service


def main() -> None:
    run_headless(timing_service, lambda service: f"ready {service.member}")


if __name__ == "__main__":
    main()
