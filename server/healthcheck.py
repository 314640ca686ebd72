"""`python -m server.healthcheck`: exit 0 when the apiserver on this machine answers /healthz, 1
otherwise; the container image's HEALTHCHECK. Standard library only, so it starts fast.

It asks the address the server listens on (APISERVER_HOST, with a wildcard meaning loopback) and
APISERVER_PORT, over https:// when TLS_CERT_FILE is set. The certificate is not verified: it
names the host clients use, not 127.0.0.1, and this only asks whether the local process lives.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request

WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})
TIMEOUT = 4.0


def healthz_url(environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    host = environ.get("APISERVER_HOST", "127.0.0.1").strip()
    host = "127.0.0.1" if host in WILDCARDS else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = environ.get("APISERVER_PORT", "8080").strip() or "8080"
    scheme = "https" if environ.get("TLS_CERT_FILE", "").strip() else "http"
    return f"{scheme}://{host}:{port}/healthz"


def main() -> int:
    url = healthz_url()
    context = ssl._create_unverified_context() if url.startswith("https://") else None
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT, context=context) as answer:
            ok = answer.status == 200
    except OSError as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
