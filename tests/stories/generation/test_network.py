"""The model's connections through the asyncio backend: plain and TLS, certificates checked, errors mapped.

The streaming, timeout and dropped-connection cases run through it in every test against the fake
Anthropic server (test_faults, test_sse); here what those cannot show: TLS, and that it is in use.
"""

from __future__ import annotations

import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx2
import pytest

from stories.generation.backends.network import AsyncioBackend, model_http_client

BODY = [b"event: ping\ndata: {}\n\n" * n for n in range(1, 40)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for part in BODY:
            self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, ssl.SSLContext]]:
    """An HTTPS server on localhost with a self-signed certificate, and a context that trusts it."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
    subprocess.run(
        [
            "openssl",
            *request,
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(cert, key)
    server.socket = serving.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    trusting = ssl.create_default_context(cafile=str(cert))
    try:
        yield f"https://localhost:{server.server_address[1]}/", trusting
    finally:
        server.shutdown()
        server.server_close()


async def test_a_tls_stream_is_read_whole_through_the_asyncio_backend(
    tls_server: tuple[str, ssl.SSLContext],
) -> None:
    url, trusting = tls_server
    async with model_http_client(verify=trusting) as client:
        for _ in range(2):  # the second on the kept-alive connection
            async with client.stream("GET", url) as response:
                assert response.http_version == "HTTP/1.1"
                assert b"".join([chunk async for chunk in response.aiter_bytes()]) == b"".join(BODY)


async def test_a_certificate_the_client_does_not_trust_is_refused(
    tls_server: tuple[str, ssl.SSLContext],
) -> None:
    url, _ = tls_server
    async with model_http_client() as client:
        with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get(url)


async def test_nobody_listening_is_a_connect_error() -> None:
    async with model_http_client() as client:
        with pytest.raises(httpx2.ConnectError):
            await client.get("http://127.0.0.1:9/")


def test_the_model_client_makes_its_connections_with_the_asyncio_backend() -> None:
    # httpx2 takes no backend: model_http_client sets its pool's (a private attribute of httpx2 and
    # httpcore2); if an upgrade renamed them, this fails rather than the speed-up silently going.
    transport = model_http_client()._transport
    assert isinstance(transport._pool._network_backend, AsyncioBackend)  # type: ignore[attr-defined]
