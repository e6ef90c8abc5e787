"""The interactive API docs (Swagger UI), served with their assets by the service itself.

The assets come from the ``swagger-ui-bundle-v2`` wheel, pinned in ``pyproject.toml``: the docs load
nothing from a CDN, so they work offline and cannot change under us. Updating Swagger UI is bumping that
pin (the wheel's version is Swagger UI's); ``tests/integration/test_client.py`` checks that the page
references only same-origin assets and that each of them is served.
"""

from __future__ import annotations

from typing import Any

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path

DOCS_PATH = "/schema"
"""Where the docs live: the page at ``/schema`` (and ``/schema/swagger``), the document at
``/schema/openapi.json``. ``auth.PUBLIC_PATHS`` leaves this prefix open."""
ASSETS = "/assets"


class BundledSwaggerUI(SwaggerRenderPlugin):
    """Swagger UI whose scripts, stylesheet and icon are files of the installed wheel, served under
    ``/schema/assets``; its Authorize button takes an API key (the document's bearer scheme)."""

    def __init__(self, **kwargs: Any) -> None:
        base = f"{DOCS_PATH}{ASSETS}"
        super().__init__(
            js_url=f"{base}/swagger-ui-bundle.js",
            css_url=f"{base}/swagger-ui.css",
            standalone_preset_js_url=f"{base}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{base}/favicon-32x32.png'>",
            **kwargs,
        )

    def receive_router(self, router: Router) -> None:
        super().receive_router(router)
        router.register(
            create_static_files_router(
                path=ASSETS,
                directories=[str(swagger_ui_path)],
                include_in_schema=False,
                # The files change only with the pinned wheel; a day of caching spares repeat visits.
                cache_control=CacheControlHeader(max_age=86_400, public=True),
                name="docs-assets",
            )
        )
