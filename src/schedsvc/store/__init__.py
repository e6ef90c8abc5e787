"""MongoDB adapters (pymongo's native async client) behind small, technology-named classes."""

from schedsvc.store._client import connect, database
from schedsvc.store.jobs import MongoJobStore
from schedsvc.store.tenants import MongoTenantStore

__all__ = ["MongoJobStore", "MongoTenantStore", "connect", "database"]
