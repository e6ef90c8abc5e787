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


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` matches one token, a final ``>`` one or more."""
    p_tokens, s_tokens = pattern.split("."), subject.split(".")
    for i, token in enumerate(p_tokens):
        if token == ">":
            return i == len(p_tokens) - 1 and len(s_tokens) > i
        if i >= len(s_tokens) or (token != "*" and token != s_tokens[i]):
            return False
    return len(p_tokens) == len(s_tokens)


def subject_allowed(subject: str, grants: list[str], reserved_roots: tuple[str, ...]) -> str | None:
    """Why a tenant may not publish to ``subject``, or None when it may."""
    tokens = subject.split(".")
    if any(t == "" or any(c in t for c in " \t\r\n*>") for t in tokens):
        return "subject must be dot-separated tokens without spaces or wildcards"
    if any(subject.startswith(root) or subject == root.rstrip(".") for root in reserved_roots):
        return "subject is reserved for the service"
    if not any(subject_matches(g, subject) for g in grants):
        return f"subject is outside the subjects granted to this tenant ({', '.join(grants)})"
    return None
