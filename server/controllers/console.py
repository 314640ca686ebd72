"""The web console: `GET /` serves the page, `/console/*` its static assets (no token needed).

The files hold no data; every API call the page makes carries the admin token the user
enters, so serving them openly exposes nothing.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.response import File
from litestar.static_files import create_static_files_router

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
INDEX = CONSOLE_DIR / "index.html"

# Every file is revalidated (ETag / Last-Modified), so an upgraded server never runs stale JS.
NO_CACHE = CacheControlHeader(no_cache=True)
# The page builds its DOM without innerHTML; the policy is a second line of defence against XSS.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@get("/", include_in_schema=False, cache_control=NO_CACHE, name="console-index")
async def console_index() -> File:
    return File(
        INDEX,
        filename="index.html",
        media_type="text/html",
        content_disposition_type="inline",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def _no_sniff(response: Response[object]) -> Response[object]:
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


console_assets = create_static_files_router(
    path="/console",
    directories=[CONSOLE_DIR],
    name="console-assets",
    cache_control=NO_CACHE,
    after_request=_no_sniff,
    include_in_schema=False,
)

console_router = Router(path="/", route_handlers=[console_index, console_assets])
