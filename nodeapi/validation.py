"""Validation rules shared by the apiserver and nodectl (pure Python, no server dependencies).

Each check raises ValueError with a message that names the bad field and the rule.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import SplitResult, urlsplit

import msgspec

from nodeapi.masking import mask_url_password

MAX_CAPACITY = 10_000
# the largest integer every JSON reader keeps exact (2^53): sequence numbers, sizes, versions
MAX_SAFE_INT = 2**53
# a process exit code as runtimes report it (negative: killed by that signal)
MIN_EXIT_CODE = -(2**31)
MAX_EXIT_CODE = 2**31 - 1
# one run event's `data`, JSON-encoded; a node cuts longer log lines into several events
MAX_EVENT_DATA_BYTES = 64 * 1024
MAX_EVENT_BATCH = 1000  # events in one report of a node
MAX_RUNS_PER_EVENT_BATCH = 1000  # runs in one POST /nodes/{id}/events
# a node_seq further than this past the run's last stored one is refused: one absurd number
# must not make the run drop every later real event as "already stored"
MAX_NODE_SEQ_JUMP = 1_000_000
MAX_LABELS = 64
MAX_CPUS = 4096.0
MAX_MEMORY_MB = 2**32  # 4 PiB
MAX_DEADLINE_SECONDS = 366 * 86400
MIN_PIDS_LIMIT = 16
MAX_PIDS_LIMIT = 4_194_304  # the kernel's pid_max ceiling
MAX_ENV_VARS = 256
MAX_ENV_VALUE_LENGTH = 32 * 1024
MAX_NO_PROXY_LENGTH = 4096
PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")

# The label and env var name rules as OpenAPI patterns (the schema states them; the checks below
# add the length rules a pattern cannot say, e.g. a key's prefix of at most 253 characters)
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_KEY_MAX_LENGTH = 253 + 1 + 63
LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
LABEL_VALUE_MAX_LENGTH = 63
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
ENV_NAME_MAX_LENGTH = 256

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_LABEL_NAME_RE = re.compile(rf"^{_NAME}$")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN_RE = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Node ids and run ids: letters, digits, '.', '_' and '-', starting with a letter or digit, so an id
# is always one safe path segment (no '/', no '..', no NUL, no spaces, ASCII only). The patterns
# are also the OpenAPI `pattern` of every id (ECMA-262 and Python read them alike).
NODE_ID_MAX_LENGTH = 253
NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
# the server makes run ids as run-<20 hex digits>; any id of this shape is accepted in paths
RUN_ID_MAX_LENGTH = 64
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_NODE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_RUN_ID_RE = _NODE_ID_RE
_HOST_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def validate_node_id(node_id: str, field: str = "node_id") -> str:
    """1-253 characters, starting with a letter or digit, then letters, digits, '.', '_' or '-'."""
    if not 1 <= len(node_id) <= NODE_ID_MAX_LENGTH or not _NODE_ID_RE.fullmatch(node_id):
        raise ValueError(
            f"{field} {_shown(node_id)} is invalid: use 1-253 characters, starting with a letter or digit, "
            "then letters, digits, '.', '_' or '-'"
        )
    return node_id


def validate_run_id(run_id: str, field: str = "run_id") -> str:
    """1-64 characters, starting with a letter or digit, then letters, digits, '.', '_' or '-'."""
    if not 1 <= len(run_id) <= RUN_ID_MAX_LENGTH or not _RUN_ID_RE.fullmatch(run_id):
        raise ValueError(
            f"{field} {_shown(run_id)} is invalid: use 1-64 characters, starting with a letter or digit, "
            "then letters, digits, '.', '_' or '-'"
        )
    return run_id


def validate_label_key(key: str, field: str = "labels") -> str:
    """Kubernetes label key: optional DNS-subdomain prefix (<=253) and '/', then a name (<=63)."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.fullmatch(prefix)):
        raise ValueError(
            f"{field}: key {_shown(key)} has an invalid prefix: it must be a lower-case DNS subdomain "
            "of at most 253 characters (e.g. example.com/gpu)"
        )
    if not name or len(name) > 63 or not _LABEL_NAME_RE.fullmatch(name):
        raise ValueError(
            f"{field}: key {_shown(key)} is invalid: the name must be 1-63 characters of letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit"
        )
    return key


def validate_label_value(key: str, value: str, field: str = "labels") -> str:
    if value and (len(value) > 63 or not _LABEL_NAME_RE.fullmatch(value)):
        raise ValueError(
            f"{field}: value {_shown(value)} of {key!r} is invalid: it must be empty or 1-63 characters "
            "of letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    return value


def validate_labels(labels: Mapping[str, str | None], field: str = "labels") -> None:
    """Keys and values; a None value (merge-patch removal) is allowed and not checked."""
    if len(labels) > MAX_LABELS:
        raise ValueError(f"{field}: at most {MAX_LABELS} labels are allowed, got {len(labels)}")
    for key, value in labels.items():
        validate_label_key(key, field)
        if value is not None:
            validate_label_value(key, value, field)


def parse_selector(text: str, field: str = "selector") -> dict[str, str]:
    """`k=v,k2=v2` (also `k==v`) into a dict; raises ValueError naming the bad term."""
    selector: dict[str, str] = {}
    for term in (t.strip() for t in text.split(",")):
        if not term:
            continue
        key, eq, value = term.partition("=")
        value = value[1:] if value.startswith("=") else value
        if not eq:
            raise ValueError(f"{field}: term {_shown(term)} must look like key=value")
        key, value = key.strip(), value.strip()
        validate_label_key(key, field)
        validate_label_value(key, value, field)
        selector[key] = value
        if len(selector) > MAX_LABELS:
            raise ValueError(f"{field}: at most {MAX_LABELS} terms are allowed")
    return selector


def validate_env_name(name: str, field: str = "env") -> str:
    if not _ENV_NAME_RE.fullmatch(name) or len(name) > 256:
        raise ValueError(
            f"{field}: variable name {_shown(name)} is invalid: it must match [A-Za-z_][A-Za-z0-9_]* "
            "(at most 256 characters)"
        )
    return name


def validate_env(env: Mapping[str, str], field: str = "env") -> None:
    if len(env) > MAX_ENV_VARS:
        raise ValueError(f"{field}: at most {MAX_ENV_VARS} variables are allowed, got {len(env)}")
    for name, value in env.items():
        validate_env_name(name, field)
        if "\x00" in value:
            raise ValueError(f"{field}: the value of {name} contains a NUL character")
        if len(value) > MAX_ENV_VALUE_LENGTH:
            raise ValueError(f"{field}: the value of {name} is longer than {MAX_ENV_VALUE_LENGTH} characters")


def validate_env_total(env: Mapping[str, str], secret_env: Mapping[str, str]) -> None:
    """`env` and `secret_env` together: one name in both, or too many in all, is an error."""
    both = sorted(set(env) & set(secret_env))
    if both:
        raise ValueError(f"{both[0]} is in both env and secret_env; keep it in one of them")
    if len(env) + len(secret_env) > MAX_ENV_VARS:
        raise ValueError(f"env and secret_env: at most {MAX_ENV_VARS} variables in all")


def validate_proxy_url(url: str, field: str = "proxy") -> str:
    """http, https, socks5 or socks5h URL with a host, optional user:password and a valid port."""
    if any(ch.isspace() or ch == "\x00" for ch in url) or len(url) > 2048:
        raise ValueError(f"{field}: proxy URL must not contain whitespace and be at most 2048 characters")
    parts = _split(url, field)
    if parts.scheme.lower() not in PROXY_SCHEMES:
        raise ValueError(
            f"{field}: proxy URL {mask_url_password(url)!r} must use one of the schemes "
            f"{', '.join(PROXY_SCHEMES)} (e.g. http://proxy.example:3128)"
        )
    host = parts.hostname or ""
    if not host or not (_HOST_RE.fullmatch(host) or _is_ip_literal(parts)):
        raise ValueError(f"{field}: proxy URL {mask_url_password(url)!r} needs a valid host name")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(
            f"{field}: proxy URL {mask_url_password(url)!r} has a port outside 1-65535"
        ) from None
    if port == 0:
        raise ValueError(f"{field}: proxy URL {mask_url_password(url)!r} has a port outside 1-65535")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{field}: proxy URL {mask_url_password(url)!r} must not have a path or query")
    return url


def validate_no_proxy(value: str, field: str = "no_proxy") -> str:
    if len(value) > MAX_NO_PROXY_LENGTH or any(ch in value for ch in "\x00\n\r\t"):
        raise ValueError(
            f"{field}: must be a comma-separated list of hosts/domains/CIDRs, at most "
            f"{MAX_NO_PROXY_LENGTH} characters and without control characters"
        )
    return value


def validate_proxy_settings(
    http_proxy: str | None, https_proxy: str | None, no_proxy: str | None, field: str = "proxy"
) -> None:
    """The proxy part of an env config (or of a proxy test request): URLs and no_proxy."""
    for name, url in (("http_proxy", http_proxy), ("https_proxy", https_proxy)):
        if url:
            validate_proxy_url(url, f"{field}.{name}")
    if no_proxy:
        validate_no_proxy(no_proxy, f"{field}.no_proxy")


MAX_TARGET_URLS = 16


def validate_target_urls(urls: list[str], field: str = "urls") -> list[str]:
    """Proxy-test targets: at most MAX_TARGET_URLS http:// or https:// URLs without white space."""
    if len(urls) > MAX_TARGET_URLS:
        raise ValueError(f"{field}: at most {MAX_TARGET_URLS} target URLs, got {len(urls)}")
    for url in urls:
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        host = urlsplit(url).hostname if scheme in ("http", "https") else None
        if (
            scheme not in ("http", "https")
            or not host
            or len(url) > 2048
            or any(ch.isspace() or not ch.isprintable() for ch in url)
        ):
            raise ValueError(f"{field}: {_shown(url)} must be an http:// or https:// URL without spaces")
    return urls


def validate_capacity(max_concurrent: int, field: str = "capacity.max_concurrent") -> int:
    if isinstance(max_concurrent, bool) or not 1 <= max_concurrent <= MAX_CAPACITY:
        raise ValueError(f"{field} must be an integer between 1 and {MAX_CAPACITY}, got {max_concurrent!r}")
    return max_concurrent


def json_pieces(text: str, max_bytes: int) -> list[str]:
    """`text` cut into consecutive pieces, each at most `max_bytes` as a JSON string (quotes
    and escapes included); one piece when it fits. `max_bytes` must be at least 8."""
    if len(msgspec.json.encode(text)) <= max_bytes:
        return [text]
    pieces: list[str] = []
    rest = text
    while rest:
        length = min(len(rest), max_bytes)
        while (size := len(msgspec.json.encode(rest[:length]))) > max_bytes:
            length = max(1, length * max_bytes // size - 1)
        pieces.append(rest[:length])
        rest = rest[length:]
    return pieces


def _split(url: str, field: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError:
        raise ValueError(f"{field}: {mask_url_password(url)!r} is not a valid URL") from None


def _is_ip_literal(parts: SplitResult) -> bool:
    try:
        ipaddress.ip_address(parts.hostname or "")
    except ValueError:
        return False
    return True


def _shown(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:77] + "...")
