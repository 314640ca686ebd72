"""A throwaway certificate authority and a server certificate it signed, made by the openssl CLI."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import require_binary

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


@dataclass(frozen=True)
class ThrowawayCA:
    ca_file: Path  # the CA certificate clients trust
    cert_file: Path  # the server's certificate, for 127.0.0.1 and localhost
    key_file: Path  # its key


def make_test_ca(directory: Path) -> ThrowawayCA:
    """A CA valid for a day, and a server certificate it signed for 127.0.0.1 (IP SAN) and localhost."""
    openssl = require_binary("openssl", "the openssl CLI (Debian package openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, ca_key = directory / "ca.pem", directory / "ca-key.pem"
    cert_file, key_file = directory / "server.pem", directory / "server-key.pem"
    csr, extensions = directory / "server.csr", directory / "server.ext"
    extensions.write_text(SERVER_EXTENSIONS)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=30)

    run(
        "req",
        "-x509",
        *EC_KEY,
        "-days",
        "1",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca_file),
        "-subj",
        "/CN=agentnodes test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    run("req", *EC_KEY, "-keyout", str(key_file), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca_file),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        str(extensions),
        "-out",
        str(cert_file),
    )
    return ThrowawayCA(ca_file, cert_file, key_file)
