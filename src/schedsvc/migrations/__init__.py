"""Numbered, idempotent database migrations, applied in order by ``schedsvc migrate``.

Each module ``mNNNN_<what>.py`` defines ``VERSION`` (its number), ``DESCRIPTION`` and
``async def apply(db, settings)``. Applying one twice must be harmless; the runner records each
applied number in ``meta`` so a deployment knows its schema version. (The repository's top-level
``migrations/`` is a link to this package, so the scripts ship inside the wheel.)
"""
