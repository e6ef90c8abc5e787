"""The tenants' web console: server-rendered pages under ``/console``, served by the API role.

It signs in with an API key exchanged for a server-side session and then uses the same ports, domain types
and API rules as ``/jobs`` (see docs/console.md); nothing here is a side door to the data.
"""

from schedsvc.console.plugin import ConsolePlugin

__all__ = ["ConsolePlugin"]
