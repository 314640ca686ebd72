"""`python -m server.healthcheck`, the container image's HEALTHCHECK: 0 while the local apiserver
answers /healthz, 1 otherwise, one line on stderr saying why."""

from __future__ import annotations

import subprocess
import sys

from server.healthcheck import healthz_url
from tests.support.ports import free_port
from tests.support.server import REPO_ROOT, ServerProcess


def test_the_url_follows_the_listen_settings() -> None:
    assert healthz_url({}) == "http://127.0.0.1:8080/healthz"
    assert (
        healthz_url({"APISERVER_HOST": "0.0.0.0", "APISERVER_PORT": "9000"})
        == "http://127.0.0.1:9000/healthz"
    )
    assert healthz_url({"APISERVER_HOST": "10.0.0.5"}) == "http://10.0.0.5:8080/healthz"
    assert healthz_url({"APISERVER_HOST": "::1"}) == "http://[::1]:8080/healthz"
    assert healthz_url({"TLS_CERT_FILE": "/etc/cert.pem"}) == "https://127.0.0.1:8080/healthz"


def healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.healthcheck"],
        cwd=REPO_ROOT,
        env={"APISERVER_HOST": "0.0.0.0", "APISERVER_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_exit_0_while_the_server_lives_and_1_when_it_does_not() -> None:
    with ServerProcess() as server:
        alive = healthcheck(server.port)
    assert (alive.returncode, alive.stderr) == (0, "")
    gone = healthcheck(free_port())
    assert gone.returncode == 1
    assert gone.stderr.startswith("healthcheck: http://127.0.0.1:")
    assert gone.stderr.count("\n") == 1
