"""Small pure rules shared by the modules."""

import hashlib
from collections.abc import Iterable


def partition_of(job_id: str, partitions: int) -> int:
    """Stable partition of a job: a hash of its id, the same in every process and release."""
    digest = hashlib.blake2b(job_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def describe_partitions(partitions: Iterable[int]) -> str:
    """Partitions as a count and ranges (``"6: 1-3,7,9-10"``): a log line stays short with 256 of them."""
    ordered = sorted(set(partitions))
    runs: list[list[int]] = []
    for p in ordered:
        if runs and p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    text = ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
    return f"{len(ordered)}: {text}" if ordered else "none"
