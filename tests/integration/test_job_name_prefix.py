"""The job list's name filter is a range on the ``{tenant, name}`` index: it must select exactly the names an
anchored regex would, at the edges of the character set too, on a real MongoDB-wire server."""

from __future__ import annotations

import re

from schedsvc import names
from schedsvc.domain.wire import JobSelector
from schedsvc.store import job_codec

NAMES = ["ab", "ab-1", "ab\uffff", "ab\U0010ffff", "ac", "aa\U0010ffff", "a\ud7ff", "a\ud7ffz", "a\ue000", "b", "Ab"]


async def test_a_name_prefix_selects_what_an_anchored_regex_would(mongo_db) -> None:  # type: ignore[no-untyped-def]
    jobs = mongo_db[names.JOBS]
    stored = [n for n in NAMES if not any(0xD800 <= ord(c) < 0xE000 for c in n)]  # BSON has no lone surrogates
    await jobs.insert_many([{"_id": f"j{i:02d}", "tenant": "prefix", "name": n} for i, n in enumerate(stored)])
    await jobs.insert_one({"_id": "other", "tenant": "someone-else", "name": "ab"})
    for prefix in ["a", "ab", "ab\uffff", "aa\U0010ffff", "a\ue000", "A", "abc", "ab-"]:
        query = job_codec.page_query("prefix", JobSelector(name_prefix=prefix))
        found = sorted(doc["name"] for doc in await jobs.find(query).to_list())
        assert found == sorted(n for n in stored if re.match(re.escape(prefix), n)), prefix
