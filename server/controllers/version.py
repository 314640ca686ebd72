"""`GET /version`: the apiserver's version, open like the health probes (as Kubernetes' /version
is to anyone): nodes check it before they register, and clients before they change anything."""

from __future__ import annotations

from litestar import MediaType, get

from nodeapi import __version__
from nodeapi.models import VersionInfo


@get("/version", media_type=MediaType.JSON, tags=["health"], sync_to_thread=False)
def version() -> VersionInfo:
    return VersionInfo(version=__version__)
