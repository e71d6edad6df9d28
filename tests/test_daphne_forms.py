"""daphne as clients meet it: a POST form body reaches the application as it came, unparsed by Twisted,
every status line has its reason phrase, a HEAD is answered with headers alone, and a body past
HTTP_MAX_BODY_BYTES is not kept whole while it arrives."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live_server import daphne_start, daphne_stop, server_env, writer_seeded


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    url, process = daphne_start(env=server_env(database=tmp_path / "db.sqlite3"), log=tmp_path / "daphne.log")
    yield url
    daphne_stop(process)


def _largest_open_file(pid: int) -> int:
    """The size of the largest regular file process ``pid`` holds open (a deleted temporary file too)."""
    sizes = [0]
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            sizes.append(os.stat(f"/proc/{pid}/fd/{fd}").st_size)
        except OSError:
            continue  # closed meanwhile, or not a file
    return max(sizes)


def test_a_malformed_multipart_body_is_answered_by_the_application(server: str) -> None:
    # Twisted parsed every POST form body into request.args (which daphne never reads) before daphne saw
    # the request: a multipart body it could not parse was a bare 400 with no body, and a large one held
    # the process's one event loop, every stream of it, while it parsed (20 MB of "a=1&": 2 s).
    response = httpx.post(
        f"{server}/api/stories/",
        content=b"--b--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=b"},
        timeout=30,
    )
    assert response.status_code == 401
    assert response.json()["detail"] == "Authentication credentials were not provided."


def test_a_429_says_too_many_requests_in_its_status_line(tmp_path: Path) -> None:
    # Twisted has no reason phrase for 429, and daphne wrote "429 Unknown Status".
    env = server_env(database=tmp_path / "db.sqlite3", LOGIN_FAILURES_PER_ACCOUNT="1")
    writer_seeded(env)
    url, process = daphne_start(env=env, log=tmp_path / "daphne.log")
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            client.get("/accounts/login/")
            form = {
                "username": "writer",
                "password": "wrong",
                "csrfmiddlewaretoken": client.cookies["csrftoken"],
            }
            assert client.post("/accounts/login/", data=form).status_code == 200  # refused, counted
            locked = client.post("/accounts/login/", data=form)
    finally:
        daphne_stop(process)
    assert (locked.status_code, locked.reason_phrase) == (429, "Too Many Requests")


def test_a_head_of_a_large_response_sends_no_body_and_keeps_the_connection_usable(server: str) -> None:
    # daphne writes every body chunk past the first even for a HEAD (it calls Twisted's Request.write
    # unbound, past the no-op Twisted puts in place after the headers): the schema's 80 KB came as a
    # 14 KB body after HEAD's headers, which the client then read as its next response's status line.
    with httpx.Client(base_url=server, timeout=30) as client:
        head = client.head("/api/schema/")
        after = client.get("/healthz")
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) > 65_536  # the length a GET would get, no body
    assert (after.status_code, after.text.strip()) == (200, "ok")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads the server's open files in /proc")
def test_a_body_past_the_limit_is_not_kept_whole_while_it_arrives(tmp_path: Path) -> None:
    # Twisted reads a request's whole body before daphne hands it to the application, spooling one past
    # 100 KB to a temporary file whatever its size: a client (anonymous: the 401 comes after the body)
    # filled the server's disk with one request, however small HTTP_MAX_BODY_BYTES was.
    env = server_env(database=tmp_path / "db.sqlite3", HTTP_MAX_BODY_BYTES="3000000")
    url, process = daphne_start(env=env, log=tmp_path / "daphne.log")
    size, sent = 40_000_000, 0
    try:
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as sock:
            sock.sendall(
                f"POST /api/stories/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {size}\r\nConnection: close\r\n\r\n".encode()
            )
            while sent < size - 1_000_000:
                sock.sendall(b" " * 1_000_000)
                sent += 1_000_000
            time.sleep(0.5)  # the server has read what was sent
            held = _largest_open_file(process.pid)
            sock.sendall(b" " * (size - sent))
            answer = sock.recv(100)
    finally:
        daphne_stop(process)
    assert held <= 3_000_001
    assert answer.startswith(b"HTTP/1.1 413 ")


def _raw_answer(url: str, request: bytes) -> bytes:
    """What the server answers ``request`` with, read until it closes the connection."""
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65_536):
            answer += chunk
    return answer


def test_a_request_line_too_long_is_answered_414_and_headers_too_long_431(server: str) -> None:
    # Twisted's HTTP channel closed the connection without a response for a request line past 16 KB (a
    # batch of contexts asked for by 17,000 characters of names), which clients report as a dropped
    # connection, and answered header fields past 16 KB in all with a bare 400.
    names = ",".join(["noir-detective"] * 1_200)  # 17,999 characters
    response = httpx.get(f"{server}/api/personas/contexts/?names={names}", timeout=30)
    assert (response.status_code, response.reason_phrase) == (414, "URI Too Long")
    assert "request line (its URL) is too long" in response.text
    assert response.headers["Connection"] == "close"
    # A much longer one is read to its end and dropped, so the answer is not lost to a TCP reset.
    huge = _raw_answer(server, b"GET /?q=" + b"x" * 4_000_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert huge.startswith(b"HTTP/1.1 414 URI Too Long\r\n")

    one_long = _raw_answer(
        server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n"
    )
    many = b"".join(b"X-Part-%d: %s\r\n" % (i, b"b" * 1_000) for i in range(20))
    in_all = _raw_answer(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    too_many = b"".join(b"X-%d: 1\r\n" % i for i in range(600))
    counted = _raw_answer(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + too_many + b"\r\n")
    for answer in (one_long, in_all, counted):
        assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:200]
    assert b"longer than 16384 bytes" in one_long and b"longer than 16384 bytes" in in_all
    assert b"more than 500 header fields" in counted
    # The process serves on.
    assert httpx.get(f"{server}/healthz", timeout=30).status_code == 200
