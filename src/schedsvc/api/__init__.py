"""The REST API (Litestar)."""

from schedsvc.api.app import create_app, create_app_from_env

__all__ = ["create_app", "create_app_from_env"]
