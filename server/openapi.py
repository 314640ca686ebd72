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

Containers: Litestar's schema generation drops msgspec's constraints on dicts and lists (and it
knows nothing of the label, env var name and image rules, which the services check with messages
that name the rule), so `state_container_rules` writes them into the component schemas: the
number of labels and env vars (`maxProperties`), their key rules (`propertyNames`), label
values, the run ids a heartbeat lists, the events of a batch (`maxItems`) and a run's image.

Docs pages, all served by the apiserver itself (no file from a CDN, so they work offline):
`/schema` and `/schema/swagger` (Swagger UI, from the `swagger-ui-bundle` package, its files
under `/schema/swagger-ui/`), `/schema/openapi.json`, `/schema/openapi.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Litestar, Router
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from nodeapi import validation as v
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


@dataclass(frozen=True)
class StringRule:
    pattern: str | None = None
    max_length: int | None = None
    min_length: int | None = None

    def apply(self, schema: Schema) -> None:
        schema.pattern = self.pattern or schema.pattern
        schema.max_length = self.max_length if self.max_length is not None else schema.max_length
        schema.min_length = self.min_length if self.min_length is not None else schema.min_length

    def schema(self) -> Schema:
        target = Schema(type=OpenAPIType.STRING)
        self.apply(target)
        return target


@dataclass(frozen=True)
class ContainerRule:
    """What a dict (`max_properties`, `keys`, `values`) or list (`max_items`, `items`) allows."""

    max_properties: int | None = None
    keys: StringRule | None = None
    values: StringRule | None = None
    max_items: int | None = None
    items: StringRule | None = None


LABEL_KEY = StringRule(v.LABEL_KEY_PATTERN, v.LABEL_KEY_MAX_LENGTH, 1)
LABELS = ContainerRule(
    max_properties=v.MAX_LABELS,
    keys=LABEL_KEY,
    values=StringRule(v.LABEL_VALUE_PATTERN, v.LABEL_VALUE_MAX_LENGTH),
)
ENV = ContainerRule(
    max_properties=v.MAX_ENV_VARS,
    keys=StringRule(v.ENV_NAME_PATTERN, v.ENV_NAME_MAX_LENGTH, 1),
    values=StringRule(max_length=v.MAX_ENV_VALUE_LENGTH),
)
CONTAINER_RULES: dict[tuple[str, str], ContainerRule | StringRule] = {
    # the services check these (with messages that name the rule); the schema states them too
    ("RunCreate", "image"): StringRule(r"^\S+$", 512, 1),
    ("HeartbeatRequest", "labels"): LABELS,
    ("HeartbeatRequest", "active_runs"): ContainerRule(
        max_items=v.MAX_CAPACITY, items=StringRule(v.RUN_ID_PATTERN, v.RUN_ID_MAX_LENGTH, 1)
    ),
    # values may be null (removes the label): only the keys and the count are stated
    ("NodePatch", "labels"): ContainerRule(max_properties=v.MAX_LABELS, keys=LABEL_KEY),
    ("EnvConfig", "env"): ENV,
    ("EnvConfig", "secret_env"): ENV,
    ("RunCreate", "env"): ENV,
    ("RunCreate", "secret_env"): ENV,
    ("RunCreate", "node_selector"): LABELS,
    ("NodeEventBatch", "events"): ContainerRule(max_items=v.MAX_EVENT_BATCH),
}


def state_container_rules(app: Litestar) -> None:
    """Write CONTAINER_RULES into the app's component schemas (builds the schema once, now)."""
    schemas = app.openapi_schema.components.schemas
    for (component, field), rule in CONTAINER_RULES.items():
        properties = schemas[component].properties if component in schemas else None
        if isinstance(rule, StringRule):
            string = properties.get(field) if isinstance(properties, dict) else None
            if not isinstance(string, Schema) or string.type != OpenAPIType.STRING:
                raise RuntimeError(f"the OpenAPI schema has no string {component}.{field} to describe")
            rule.apply(string)
            continue
        target = _container(properties, field)
        if target is None:
            raise RuntimeError(f"the OpenAPI schema has no container {component}.{field} to describe")
        if rule.max_properties is not None:
            target.max_properties = rule.max_properties
        if rule.keys is not None:
            target.property_names = rule.keys.schema()
        if rule.values is not None and isinstance(target.additional_properties, Schema):
            rule.values.apply(target.additional_properties)
        if rule.max_items is not None:
            target.max_items = rule.max_items
        if rule.items is not None and isinstance(target.items, Schema):
            rule.items.apply(target.items)


def _container(properties: object, field: str) -> Schema | None:
    """The object or array schema of a property (also inside a nullable oneOf)."""
    found = properties.get(field) if isinstance(properties, dict) else None
    if not isinstance(found, Schema):
        return None
    containers = (OpenAPIType.OBJECT, OpenAPIType.ARRAY)
    if found.type in containers:
        return found
    for option in found.one_of or ():
        if isinstance(option, Schema) and option.type in containers:
            return option
    return None


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
