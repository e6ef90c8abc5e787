"""The text patterns (and formats) request fields must match, each with what it means to a person.

msgspec and Litestar report a mismatch as "Expected `str` matching regex '<pattern>'", which tells a client
little; problem details say what the pattern means instead (:func:`in_words`, applied where every validation
message becomes a field error).
"""

# Each ends in ``(?!\n)$``: Python's ``$`` also matches before a final newline, and ``\Z`` is not valid in the
# OpenAPI document (ECMA regexes).
PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]+(?!\n)$"
"""No control character (C0, DEL, C1)."""
TAG = r"^[A-Za-z0-9_.:/=-]+(?!\n)$"
CRON_CHARACTERS = r"^[0-9A-Za-z*/,?#@ \t-]+(?!\n)$"
TIME_OF_DAY = r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?(?!\n)$"
HTTP_URL = r"^https?://[^\s/?#]+\S*(?!\n)$"
NATS_SUBJECT = r"^[^\s*>]+(?!\n)$"
IF_MATCH = r'^\s*(\*|(W/)?"[0-9]{1,18}")\s*$'
CURSOR = r"^[A-Za-z0-9_-]{1,200}$"

_MEANINGS = {
    PRINTABLE: "must not contain control characters (such as a newline, a tab or NUL)",
    TAG: "may hold only letters, digits and _ . : / = -",
    CRON_CHARACTERS: "may hold only letters, digits, spaces, tabs and * / , ? # @ -",
    TIME_OF_DAY: "must be a time of day as HH:MM or HH:MM:SS (24-hour)",
    HTTP_URL: "must be an http:// or https:// URL with a host, without spaces",
    NATS_SUBJECT: "must not contain spaces or the wildcards * and >",
    IF_MATCH: 'must be an ETag such as "3" (or *)',
    CURSOR: "must be the nextCursor of a previous page",
}
_MISMATCHES = {f"Expected `str` matching regex {regex!r}": meaning for regex, meaning in _MEANINGS.items()}
# msgspec's own formats, said the same way.
_MISMATCHES["Invalid RFC3339 encoded datetime"] = "must be a date and time such as 2026-11-29T06:00:00Z (RFC 3339)"
_MISMATCHES["Invalid RFC3339 encoded date"] = "must be a date such as 2026-11-29"


def in_words(message: str) -> str:
    """A validation message, with a pattern mismatch said in words (any other message as it is)."""
    return _MISMATCHES.get(message, message)
