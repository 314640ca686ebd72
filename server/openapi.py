"""The OpenAPI schema and the API docs pages.

Error statuses: every route documents each status it can answer, each with the one error body
(`nodeapi.models.ErrorBody`). They are derived once, when the app is built, from what a route
is, not written out on every route:

| status | documented on                                                              |
|--------|----------------------------------------------------------------------------|
| 400    | every /api route (malformed id, query, header or body; a rule it breaks)    |
| 401    | every guarded route (no token, a wrong one, a malformed Authorization)      |
| 403    | every guarded route (a role or a node that may not do this)                 |
| 404    | every route with an id in its path                                         |
| 413    | every route that takes a body (MAX_BODY_SIZE; a run event above its limit)  |
| 503    | every /api route (database or queue unavailable; Retry-After)               |
| others | what a route declares in `opt={"errors": (...)}`: 409, 429, 504             |

Docs pages, all served by the apiserver itself (no file from a CDN, so they work offline):
`/schema` and `/schema/swagger` (Swagger UI, from the `swagger-ui-bundle` package, its files
under `/schema/swagger-ui/`), `/schema/openapi.json`, `/schema/openapi.yaml`.
"""

from __future__ import annotations

from litestar import Litestar, Router
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from nodeapi.models import ErrorBody

SCHEMA_PATH = "/schema"
SWAGGER_ASSETS = "/swagger-ui"  # under SCHEMA_PATH
ERRORS_OPT = "errors"  # a handler's opt key: statuses beyond the derived ones

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "The request breaks a rule: a malformed id, query parameter, header or body, or a value "
    "outside its documented range. `detail` names the field and the rule.",
    401: "No token, a wrong one, or a malformed Authorization header.",
    403: "The caller's role or node may not do this.",
    404: "The addressed object does not exist.",
    409: "The object's state forbids the change (active runs, a stale resource_version, "
    "a node that is offline or registered already).",
    413: "The body is larger than MAX_BODY_SIZE, or one run event's data is larger than 64 KiB.",
    429: "Too many requests (heartbeats of one node id); retry after the Retry-After header's seconds.",
    503: "The database or the queue is unavailable (or, for /readyz, the server is not ready); "
    "retry after the Retry-After header's seconds.",
    504: "The node did not answer in time.",
}


def errors(*statuses: int) -> dict[str, tuple[int, ...]]:
    """A handler's `opt` naming the statuses it answers beyond the derived ones."""
    return {ERRORS_OPT: statuses}


def error_statuses(handler: HTTPRouteHandler, path: str) -> set[int]:
    """The error statuses a route answers (see the module's table)."""
    statuses = set(handler.opt.get(ERRORS_OPT, ()))
    if path.startswith("/api/"):
        statuses |= {400, 503}
    if handler.resolve_guards():
        statuses |= {401, 403}
    if "{" in path:
        statuses.add(404)
    if "data" in handler.parsed_fn_signature.parameters:
        statuses |= {400, 413}
    return statuses


def error_response_specs(statuses: set[int]) -> dict[int, ResponseSpec]:
    return {
        status: ResponseSpec(
            data_container=ErrorBody, description=ERROR_DESCRIPTIONS[status], generate_examples=False
        )
        for status in sorted(statuses)
    }


def document_errors(app: Litestar) -> None:
    """Fill in the error responses of every route in the schema (once, at app creation)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if not handler.include_in_schema:
                continue
            statuses = error_statuses(handler, route.path_format)
            if statuses:
                handler.responses = {**error_response_specs(statuses), **(handler.responses or {})}


def openapi_config(title: str, version: str) -> OpenAPIConfig:
    """The schema at /schema/openapi.json (and .yaml), Swagger UI at /schema and /schema/swagger
    with its files served from here."""
    assets = f"{SCHEMA_PATH}{SWAGGER_ASSETS}"
    swagger = SwaggerRenderPlugin(
        path=["/", "/swagger"],
        js_url=f"{assets}/swagger-ui-bundle.js",
        css_url=f"{assets}/swagger-ui.css",
        standalone_preset_js_url=f"{assets}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{assets}/favicon-32x32.png'>",
    )
    swagger_files = create_static_files_router(
        path=SWAGGER_ASSETS,
        directories=[swagger_ui_path],
        name="swagger-ui-assets",
        include_in_schema=False,
    )
    router = Router(path=SCHEMA_PATH, route_handlers=[swagger_files], include_in_schema=False)
    return OpenAPIConfig(
        title=title,
        version=version,
        path=SCHEMA_PATH,
        render_plugins=[swagger, JsonRenderPlugin(), YamlRenderPlugin()],
        openapi_router=router,
    )
