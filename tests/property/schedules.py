"""What the property tests of the timing core share."""

from __future__ import annotations

from collections.abc import Callable

from schedsvc._timing import Schedule


def schedule_or_error(build: Callable[[], Schedule]) -> Schedule | str:
    """The schedule ``build`` returns, or the message of the ``ValueError`` it raises.

    Anything else propagates: a Rust panic surfaces as ``pyo3_runtime.PanicException``, a ``BaseException``.
    """
    try:
        return build()
    except ValueError as exc:
        return str(exc)
