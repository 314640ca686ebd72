"""nodeapi.tls and the clients' `verify`: what an https:// server must prove, and the errors if it cannot."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import certifi
import pytest

from nodeapi import errors
from nodeapi.client import AsyncClient, Calls, Client
from nodeapi.tls import CAFileError, check_ca_file, client_context, trusted
from tests.support.tls import ThrowawayCA, make_test_ca

EMPTY_LIST = b'{"items": [], "total": 0, "limit": 100, "offset": 0}'


class _JsonHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(EMPTY_LIST)))
        self.end_headers()
        self.wfile.write(EMPTY_LIST)

    def log_message(self, format: str, *args: object) -> None:
        return


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        return  # the handshakes these tests make fail on purpose


class _Server:
    """An empty node list on 127.0.0.1, over HTTPS when given a server context."""

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        self.httpd = _QuietServer(("127.0.0.1", 0), _JsonHandler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(
                self.httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCA:
    return make_test_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def https_url(test_ca: ThrowawayCA) -> Iterator[str]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(test_ca.cert_file, test_ca.key_file)
    server = _Server(context)
    yield f"https://127.0.0.1:{server.port}"
    server.close()


@pytest.fixture(scope="module")
def plain_url() -> Iterator[str]:
    server = _Server(None)
    yield f"http://127.0.0.1:{server.port}"
    server.close()


def test_a_ca_file_or_the_system_store_and_never_no_verification(tmp_path: Path) -> None:
    for verify in (True, certifi.where(), Path(certifi.where())):
        context = client_context(verify)
        assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    with pytest.raises(ValueError, match="cannot be turned off"):
        client_context(False)  # type: ignore[arg-type]
    assert trusted(True) == "the system CA store"
    assert trusted(Path("/etc/ca.pem")) == "CA file /etc/ca.pem"


def test_unusable_ca_files_say_why(tmp_path: Path) -> None:
    with pytest.raises(CAFileError, match=r"cannot read CA file .*missing\.pem: No such file"):
        check_ca_file(tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(CAFileError, match="holds no PEM CA certificate") as info:
        check_ca_file(garbage)
    assert "_ssl.c" not in str(info.value)
    with pytest.raises(CAFileError):
        Client("https://127.0.0.1:1", verify=garbage)


def test_the_client_verifies_against_the_ca_file(https_url: str, test_ca: ThrowawayCA) -> None:
    with Client(https_url, verify=test_ca.ca_file) as client:
        assert client.send(Calls.list_nodes()).items == []
    with Client(https_url.replace("127.0.0.1", "localhost"), verify=str(test_ca.ca_file)) as client:
        assert client.send(Calls.list_nodes()).total == 0


def test_an_untrusted_certificate_is_one_clear_error(https_url: str, test_ca: ThrowawayCA) -> None:
    with Client(https_url, ca_hint="pass --ca") as client, pytest.raises(errors.CertificateError) as info:
        client.send(Calls.list_nodes())
    assert str(info.value) == (
        f"cannot reach {https_url}: certificate verify failed: unable to get local issuer certificate "
        "(trusting the system CA store); pass --ca"
    )
    # a CA that did not sign the server's certificate: the message names the file it trusted
    with Client(https_url, verify=certifi.where()) as client, pytest.raises(errors.CertificateError) as info:
        client.send(Calls.list_nodes())
    assert f"(trusting CA file {certifi.where()})" in str(info.value)
    assert isinstance(info.value, errors.TransportError)  # retried like any unreachable server


def test_https_to_a_plain_http_server_is_a_tls_error(plain_url: str) -> None:
    url = plain_url.replace("http://", "https://")
    with Client(url) as client, pytest.raises(errors.TLSError) as info:
        client.send(Calls.list_nodes())
    assert not isinstance(info.value, errors.CertificateError)
    assert str(info.value) == (
        f"cannot reach {url}: TLS handshake failed: wrong version number (does the server serve plain http://?)"
    )


async def test_the_async_client_verifies_the_same_way(https_url: str, test_ca: ThrowawayCA) -> None:
    async with AsyncClient(https_url, verify=test_ca.ca_file) as client:
        assert (await client.send(Calls.list_nodes())).items == []
    async with AsyncClient(https_url, ca_hint="set API_SERVER_CA") as client:
        with pytest.raises(errors.CertificateError, match=r"verify failed: .*; set API_SERVER_CA$"):
            await client.send(Calls.list_nodes())
