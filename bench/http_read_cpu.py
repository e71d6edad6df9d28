"""CPU per read of a model's event stream in the HTTP client alone: python -m bench.http_read_cpu.

A server process sends ``STREAMS`` chunked responses at once, one SSE event (a 12-character text delta)
per chunked part every ``PAUSE`` seconds, ``EVENTS`` each; this process reads them with ``aiter_bytes``
through the SDK's default client (httpcore2's anyio backend) and through ``model_http_client()`` (the
asyncio protocol of stories.generation.backends.network), alternately, ``ROUNDS`` times, and prints
this process's CPU time (``time.process_time``) per read. Nothing else runs in the process, so the
figure is the HTTP client's own cost per model chunk (quoted in bench/results/stream_cpu.md). Benchmarks print
figures; nothing here asserts.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench import harness

STREAMS, EVENTS, PAUSE, ROUNDS = 20, 200, 0.025, 3
EVENT = (
    b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
    b'"delta": {"type": "text_delta", "text": "abcdefghijkl"}}\n\n'
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        started = time.monotonic()
        for sent in range(EVENTS):
            self.wfile.write(f"{len(EVENT):x}\r\n".encode() + EVENT + b"\r\n")
            self.wfile.flush()
            time.sleep(max(started + (sent + 1) * PAUSE - time.monotonic(), 0))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


async def _read_all(kind: str, url: str) -> tuple[int, float]:
    import anthropic

    from stories.generation.backends.network import model_http_client

    client = model_http_client() if kind == "asyncio" else anthropic.DefaultAsyncHttpxClient()

    async def one() -> int:
        reads = 0
        async with client.stream("GET", url) as response:
            async for _ in response.aiter_bytes():
                reads += 1
        return reads

    async with client:
        started = time.process_time()
        reads = sum(await asyncio.gather(*(one() for _ in range(STREAMS))))
        return reads, time.process_time() - started


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "serve":
        ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), _Handler).serve_forever()
        return
    port = harness.free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.http_read_cpu", "serve", str(port)])
    try:
        time.sleep(1.0)
        print(f"load average at the start: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
        for _ in range(ROUNDS):
            for kind in ("anyio (the SDK's default client)", "asyncio (model_http_client)"):
                reads, cpu = asyncio.run(_read_all(kind.split()[0], f"http://127.0.0.1:{port}/"))
                print(f"{kind}: {reads} reads, {cpu * 1e6 / reads:.0f} µs of CPU per read")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
