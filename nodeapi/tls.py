"""What the API clients trust when they talk to an https:// apiserver.

A client verifies the server's certificate against the system CA store (OpenSSL's default
paths, which `SSL_CERT_FILE` / `SSL_CERT_DIR` override), or against one CA file instead.
Verification is never turned off.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Literal

# a CA file (PEM), or True for the system CA store; there is no False
Verify = str | os.PathLike[str] | Literal[True]


class CAFileError(ValueError):
    """A CA file that cannot be read or holds no PEM certificate; `reason` says which."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def client_context(verify: Verify = True) -> ssl.SSLContext:
    """An SSL context that verifies the server's certificate and host name."""
    if verify is True:
        return ssl.create_default_context()
    if not verify:
        raise ValueError("certificate verification cannot be turned off: pass a CA file or True")
    path = os.fspath(verify)
    try:
        return ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        reason = ssl_reason(exc)
        raise CAFileError(f"{path} holds no PEM CA certificate ({reason})", reason) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CAFileError(f"cannot read CA file {path}: {reason}", reason) from None


def check_ca_file(path: str | os.PathLike[str]) -> Path:
    """`path` when it is a CA file a client can use; CAFileError saying why not otherwise."""
    client_context(path)
    return Path(path)


def trusted(verify: Verify) -> str:
    """What a client with this `verify` trusts, for messages."""
    return "the system CA store" if verify is True else f"CA file {os.fspath(verify)}"


def ssl_reason(exc: ssl.SSLError) -> str:
    """An SSL error without OpenSSL's source location: `certificate verify failed: <why>`."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message or exc.reason}"
    reason = exc.reason or ""
    return reason.replace("_", " ").lower() if reason else str(exc)
