"""A loopback HTTP relay that can lose answers: the request reaches the server, which answers, but
the client never hears it (the connection is dropped), as when a client's connection resets after
the server committed. One request per connection; the requests of one method (POST by default)
are recorded and use the backends in turn (replicas); any other request (nodectl's version check)
goes to the first backend and is neither recorded nor lost."""

from __future__ import annotations

import socket
import struct
import threading
from types import TracebackType

HEADER_END = b"\r\n\r\n"


def _read_message(sock: socket.socket) -> bytes:
    """One HTTP/1.1 message with a Content-Length body (or none)."""
    data = b""
    while HEADER_END not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(HEADER_END)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + HEADER_END + body


def _close_after(message: bytes) -> bytes:
    """The answer with `Connection: close`, so the client opens a new connection next time."""
    head, _, body = message.partition(HEADER_END)
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close"]) + HEADER_END + body


class LossyProxy:
    def __init__(self, backends: list[tuple[str, int]], lose: int, method: str = "POST") -> None:
        """Relay `method` requests to `backends` in turn; the answers of the first `lose` are lost."""
        self.backends = backends
        self.lose = lose
        self._method = f"{method} ".encode()
        self.relayed: list[tuple[str, int]] = []  # (request line, backend index) of each request
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> LossyProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._listener.close()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with client:
            request = _read_message(client)
            if not request:
                return
            index, lose = 0, False
            if request.startswith(self._method):
                with self._lock:
                    index = len(self.relayed) % len(self.backends)
                    self.relayed.append((request.split(b"\r\n", 1)[0].decode(errors="replace"), index))
                    lose = len(self.relayed) <= self.lose
            with socket.create_connection(self.backends[index], timeout=30) as backend:
                backend.sendall(request)
                answer = _read_message(backend)
            if lose:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return  # closed with a reset: the answer is lost
            client.sendall(_close_after(answer))
