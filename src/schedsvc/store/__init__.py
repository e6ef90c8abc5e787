"""MongoDB adapters (pymongo's native async client) behind small, technology-named classes."""

from schedsvc.store._client import connect, database
from schedsvc.store.jobs import JobPage, MongoJobStore
from schedsvc.store.tenants import MongoTenantStore

__all__ = ["JobPage", "MongoJobStore", "MongoTenantStore", "connect", "database"]
