"""``python -m schedsvc.execution``: a headless execution process configured from ``SCHEDSVC_*`` variables.

SIGTERM or SIGINT stops it gracefully: in-flight runs finish within the shutdown grace period, the rest
are handed back to JetStream at once.
"""

from schedsvc.wiring import execution_service, run_headless


def main() -> None:
    run_headless(execution_service, lambda service: "ready execution")


if __name__ == "__main__":
    main()
