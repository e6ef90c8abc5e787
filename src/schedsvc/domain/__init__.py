"""Pure domain: models, enums, errors and rules. Imports nothing of ours and performs no I/O.

Import each name from the module that owns it (`schedsvc.domain.models`, `.errors`, ...): one path per name.
"""
