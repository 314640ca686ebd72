"""Loopback proxies and targets for the proxy check: tinyproxy, proxy.py, plain HTTP and HTTPS
targets, a blackhole that never answers, and a closed port. Everything listens on 127.0.0.1.
The fixtures are in tests/support/fixtures_proxies.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support.ports import free_port, require_binary, wait_for_port

PROXY_USER = "agent"
PROXY_PASSWORD = "s3cret-Pa55"  # tests assert this never shows up in a result


class ProxyProcess:
    """A proxy server process in its own session, so stopping it stops every process it forked."""

    def __init__(self, args: list[str], port: int, log_path: Path) -> None:
        self.port = port
        self._log = log_path.open("ab")
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, start_new_session=True
        )
        try:
            wait_for_port(port, timeout=15.0)
        except TimeoutError:
            self.stop()
            raise

    def url(self, user: str | None = None, password: str | None = None) -> str:
        credentials = f"{user}:{password}@" if user is not None else ""
        return f"http://{credentials}127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._process.poll() is None:
            try:
                os.killpg(self._process.pid, signal.SIGTERM)
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(timeout=5)
            except ProcessLookupError:
                pass
        # forked workers outlive a leader that already ended; the group still names them
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._log.close()


def start_tinyproxy(directory: Path, basic_auth: tuple[str, str] | None = None) -> ProxyProcess:
    binary = require_binary("tinyproxy", "tinyproxy (Debian package tinyproxy)")
    port = free_port()
    lines = [f"Port {port}", "Listen 127.0.0.1", "Timeout 15", "MaxClients 20", "LogLevel Info"]
    if os.geteuid() == 0:
        lines += ["User nobody", "Group nogroup"]  # tinyproxy refuses to keep running as root
    if basic_auth:
        lines.append(f"BasicAuth {basic_auth[0]} {basic_auth[1]}")
    config = directory / f"tinyproxy-{port}.conf"
    config.write_text("\n".join(lines) + "\n")
    return ProxyProcess([binary, "-d", "-c", str(config)], port, directory / f"tinyproxy-{port}.log")


def start_proxy_py(directory: Path, basic_auth: tuple[str, str] | None = None) -> ProxyProcess:
    port = free_port()
    args = [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", str(port)]
    args += ["--num-workers", "1", "--num-acceptors", "1", "--log-level", "WARNING"]
    if basic_auth:
        args += ["--basic-auth", f"{basic_auth[0]}:{basic_auth[1]}"]
    return ProxyProcess(args, port, directory / f"proxy-py-{port}.log")


class _TargetHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 500 if self.path.startswith("/fail") else 200
        body = b"target failure\n" if status == 500 else b"hello from the target\n"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


class TargetServer:
    """`/ok` answers 200, `/fail` answers 500; HTTPS when given a TLS context."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _TargetHandler)
        self.server.daemon_threads = True
        if tls is not None:
            # the handshake then happens in the handler thread, not in the accepting one
            self.server.socket = tls.wrap_socket(
                self.server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = self.server.server_address[1]
        self.scheme = "https" if tls else "http"
        self._thread = threading.Thread(target=self.server.serve_forever, name="target", daemon=True)
        self._thread.start()

    def url(self, path: str = "/ok", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class SelfSignedCert:
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_self_signed_cert(directory: Path) -> SelfSignedCert:
    """A certificate for localhost and 127.0.0.1 that is its own CA (made by the openssl CLI)."""
    openssl = require_binary("openssl", "the openssl CLI (Debian package openssl)")
    cert_file, key_file = directory / "target-cert.pem", directory / "target-key.pem"
    key_options = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"]
    extensions = ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    extensions += ["-addext", "basicConstraints=critical,CA:TRUE"]
    files = ["-keyout", str(key_file), "-out", str(cert_file)]
    subprocess.run(
        [openssl, "req", "-x509", *key_options, *files, "-subj", "/CN=agentnodes test target", *extensions],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return SelfSignedCert(cert_file, key_file)


class Blackhole:
    """Completes TCP handshakes (the kernel does, from the backlog) and never answers."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.port = self.socket.getsockname()[1]

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.socket.close()
