"""Container images for the image tests, made without any registry.

No registry answers here, so there is no `python:3.11-slim`: a Debian bookworm root file system
with python3 and venv is made with mmdebstrap (about a minute, once per machine: the tarball is
kept in CACHE_DIR across test sessions) and imported as BASE_IMAGE. On top of it a CI-only layer
adds the machine's CA bundle and PIP_CERT, since pip inside a build reaches the package index
through a TLS proxy that only that bundle trusts. The product's Dockerfile stays plain: it is
built `--build-arg BASE_IMAGE=` that layer.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.ports import require_binary

SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
MMDEBSTRAP_ARGS = ("--variant=apt", f"--include={','.join(PACKAGES)}", SUITE)
# what the tarball is made of: another recipe makes (and imports) another one
RECIPE = hashlib.sha256(" ".join(MMDEBSTRAP_ARGS).encode()).hexdigest()[:12]
BASE_IMAGE = f"agentnodes-test/debian-python:{SUITE}-{RECIPE}"
CI_BASE_IMAGE = f"agentnodes-test/debian-python-ci:{SUITE}-{RECIPE}"
CI_LABEL = "agentnodes.test.ca"  # on the CI layer, so on every image built on it
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CACHE_DIR = Path(
    os.environ.get("AGENTNODES_TEST_CACHE")
    or ("/var/cache/agentnodes-test" if os.geteuid() == 0 else Path.home() / ".cache" / "agentnodes-test")
)
MMDEBSTRAP_TIMEOUT = 300  # 17-55 s measured here
CI_LAYER = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
"""


def _image_present(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    """One maker at a time on this machine: concurrent sessions wait for the first one's tarball."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with (CACHE_DIR / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def base_tarball() -> Path:
    """The cached root file system tarball, made with mmdebstrap when missing."""
    tarball = CACHE_DIR / f"debian-python-{SUITE}-{RECIPE}.tar"
    with _cache_lock():
        if tarball.is_file():
            return tarball
        mmdebstrap = require_binary("mmdebstrap", "mmdebstrap (Debian package mmdebstrap)")
        partial = tarball.with_suffix(".partial.tar")
        partial.unlink(missing_ok=True)
        done = subprocess.run(
            [mmdebstrap, "--quiet", "--format=tar", *MMDEBSTRAP_ARGS, str(partial)],
            capture_output=True,
            text=True,
            timeout=MMDEBSTRAP_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            raise RuntimeError(f"mmdebstrap failed ({done.returncode}):\n{done.stderr[-5000:]}")
        partial.rename(tarball)
    return tarball


def ensure_base_image(client: Any) -> str:
    """BASE_IMAGE, imported from the cached tarball unless the engine has it already."""
    if not _image_present(client, BASE_IMAGE):
        repository, tag = BASE_IMAGE.rsplit(":", 1)
        with base_tarball().open("rb") as tarball:
            client.api.import_image_from_data(tarball, repository=repository, tag=tag)
    return BASE_IMAGE


def ensure_ci_base_image(client: Any) -> str:
    """CI_BASE_IMAGE: BASE_IMAGE with this machine's CA bundle for pip."""
    if not CA_BUNDLE.is_file():
        raise RuntimeError(f"{CA_BUNDLE} is missing: pip inside a build could not trust the index")
    base = ensure_base_image(client)
    bundle = CA_BUNDLE.read_bytes()
    marker = hashlib.sha256(bundle).hexdigest()[:12]
    with contextlib.suppress(Exception):
        if client.images.get(CI_BASE_IMAGE).labels.get(CI_LABEL) == marker:
            return CI_BASE_IMAGE
    with tempfile.TemporaryDirectory(prefix="ci-base-") as context:
        (Path(context) / "Dockerfile").write_text(CI_LAYER)
        (Path(context) / "ca-certificates.crt").write_bytes(bundle)
        docker_build(
            context=Path(context),
            tag=CI_BASE_IMAGE,
            build_args={"BASE_IMAGE": base},
            labels={CI_LABEL: marker},
        )
    return CI_BASE_IMAGE


def docker_build(
    context: Path,
    tag: str,
    build_args: dict[str, str],
    labels: dict[str, str] | None = None,
    dockerfile: Path | None = None,
    timeout: float = 900,
) -> str:
    """`docker build --network host` (the engine has no bridge); returns its output, raises with it."""
    docker = shutil.which("docker")
    assert docker is not None, "the docker CLI is required"
    # --force-rm: a failed step leaves no intermediate container either (they carry no test label)
    command = [docker, "build", "--force-rm", "--network", "host", "--tag", tag]
    for name, value in build_args.items():
        command += ["--build-arg", f"{name}={value}"]
    for name, value in (labels or {}).items():
        command += ["--label", f"{name}={value}"]
    if dockerfile is not None:
        command += ["--file", str(dockerfile)]
    done = subprocess.run(
        [*command, str(context)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"docker build of {tag} failed ({done.returncode}):\n{done.stdout[-8000:]}{done.stderr}"
        )
    return done.stdout
