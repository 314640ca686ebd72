"""The local test image, built without any pull: `docker import` of a busybox-static rootfs."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
from typing import Any

from tests.support.ports import require_binary

TEST_IMAGE = "agentnodes-test/busybox:latest"
TEST_LABEL = "agentnodes.test"  # on every container a test starts
# the pytest process that started it: concurrent sessions on one engine leave each other's alone
SESSION_LABEL = "agentnodes.test.session"
TEST_SESSION = str(os.getpid())
TEST_LABELS = {TEST_LABEL: "1", SESSION_LABEL: TEST_SESSION}
APPLETS = (
    "sh", "echo", "sleep", "cat", "env", "wget", "printf", "ls", "true", "false", "kill", "pwd",
    "touch", "mkdir", "rm", "id", "head", "tail", "seq", "date", "timeout", "grep", "sed",
)  # fmt: skip
# marks the image's content: one imported from another applet list is imported again
# (`docker import --change` takes ENV, not LABEL)
CONTENT_ENV = "AGENTNODES_TEST_IMAGE=" + hashlib.sha256(" ".join(APPLETS).encode()).hexdigest()[:12]


def rootfs_tarball(busybox_path: str) -> bytes:
    """A rootfs with /bin/busybox, symlinks for the applets the tests use, and /tmp."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory, mode in (("bin", 0o755), ("tmp", 0o1777), ("workspace", 0o755), ("etc", 0o755)):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        tar.add(busybox_path, arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(link)
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size, info.mode = len(passwd), 0o644
        tar.addfile(info, io.BytesIO(passwd))
    return buffer.getvalue()


def ensure_test_image(client: Any) -> str:
    """The tag of the test image, imported once (later calls find it present)."""
    import docker.errors

    outdated = None
    try:
        present = client.images.get(TEST_IMAGE)
        if CONTENT_ENV in (present.attrs["Config"].get("Env") or []):
            return TEST_IMAGE
        outdated = present.id
    except docker.errors.ImageNotFound:
        pass
    busybox = require_binary("/bin/busybox", "a static busybox (Debian package busybox-static)")
    repository, tag = TEST_IMAGE.rsplit(":", 1)
    client.api.import_image_from_data(
        rootfs_tarball(busybox),
        repository=repository,
        tag=tag,
        changes=[f"ENV PATH=/bin {CONTENT_ENV}", 'CMD ["sh"]'],
    )
    client.images.get(TEST_IMAGE)
    if outdated:
        with contextlib.suppress(docker.errors.APIError):  # still used by a container: leave it
            client.images.remove(outdated)
    return TEST_IMAGE
