"""``make serve``: the production server, N daphne processes behind one port.

``python -m storyproject.serve [--host H] [--port P] [--processes N] [daphne options...]`` refuses an
unsafe configuration (``DJANGO_DEBUG`` on, a missing or weak ``DJANGO_SECRET_KEY``, any warning of
``manage.py check --deploy``), collects the static files, applies migrations, marks runs left by a
stopped server as interrupted, then binds the listening socket once and starts N daphne processes
(``storyproject.serve_worker``, daphne's own command line) that inherit it: the kernel hands each new
connection to whichever process accepts first. A process that dies is started again. SIGTERM or SIGINT
stops them gracefully: each stops accepting and waits for the generations it runs, up to
``SERVE_GRACEFUL_SECONDS``. Options this module does not know go to every daphne process
(``--proxy-headers``, ``--access-log``, ``-v``). See docs/operations.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

logger = logging.getLogger("storyproject.serve")
_ROOT = Path(__file__).resolve().parent.parent

# A process that dies within this many seconds of its start counts as a failed start; after
# _MAX_FAILED_STARTS in a row the supervisor gives up rather than restart it in a tight loop.
_FAILED_START_SECONDS = 10.0
_MAX_FAILED_STARTS = 5
# Beyond the graceful period: how long a process has to exit after its generations are closed.
_EXIT_MARGIN_SECONDS = 15.0


class ServeRefused(Exception):
    """The configuration is not safe to serve; the message says what to change."""


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from django.core.exceptions import ImproperlyConfigured

    try:
        options, daphne_options = _arguments(argv)
        graceful = graceful_seconds()
    except ImproperlyConfigured as error:  # SERVE_PROCESSES, SERVE_GRACEFUL_SECONDS or PORT unusable
        print(f"serve: refusing to start: {error}", file=sys.stderr)
        return 2
    # Off unless the operator set it (then the preparation refuses): for the preparation and every
    # process, which inherit this environment.
    os.environ.setdefault("DJANGO_DEBUG", "0")
    if options.prepare_only:
        return _prepare_here()
    # In a child: the checks, collectstatic and migrate load all of Django, which the supervisor, a
    # loop that only watches its processes, would otherwise hold for its whole life (~150 MB).
    prepared = subprocess.run([sys.executable, "-m", "storyproject.serve", "--prepare-only"], cwd=_ROOT)
    if prepared.returncode != 0:
        return prepared.returncode
    try:
        listener = _listen(options.host, options.port)
    except OSError as error:  # the port is taken, or the host is not an IPv4 address of this machine
        print(f"serve: cannot listen on {options.host}:{options.port}: {error}", file=sys.stderr)
        return 2
    supervisor = Supervisor(
        listener=listener, processes=options.processes, daphne_options=daphne_options, graceful=graceful
    )
    return supervisor.run()


def graceful_seconds() -> int:
    """``SERVE_GRACEFUL_SECONDS``, read here and by the settings (the supervisor has no settings)."""
    from storyproject.env import envint

    return envint("SERVE_GRACEFUL_SECONDS", 300, minimum=0, maximum=3600)


def _prepare_here() -> int:
    try:
        _prepare()
    except ServeRefused as refusal:
        print(f"serve: refusing to start: {refusal}", file=sys.stderr)
        return 2
    return 0


def _arguments(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    from storyproject.env import envint

    parser = argparse.ArgumentParser(prog="python -m storyproject.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"), help="IPv4 address to bind")
    parser.add_argument("--port", type=int, default=envint("PORT", 8000, minimum=0, maximum=65535))
    parser.add_argument(
        "--processes",
        type=int,
        default=envint("SERVE_PROCESSES", os.cpu_count() or 1, minimum=1, maximum=64),
        help="daphne processes (SERVE_PROCESSES, default: the number of cores)",
    )
    parser.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    options, daphne_options = parser.parse_known_args(argv)
    if not 1 <= options.processes <= 64:
        parser.error("--processes must be between 1 and 64")
    return options, daphne_options


def _prepare() -> None:
    """Check the settings, collect static files, migrate, recover runs (``--prepare-only``)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "storyproject.settings")
    import django
    from django.core.exceptions import ImproperlyConfigured

    try:
        django.setup()
    except ImproperlyConfigured as error:
        raise ServeRefused(str(error)) from None
    from django.conf import settings
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError
    from django.db import connections

    if settings.DEBUG:
        raise ServeRefused("DJANGO_DEBUG is on; production serving needs it off (unset it or set it to 0)")
    try:
        # Warnings count too: `check --deploy` reports unsafe settings (a weak key, no HTTPS) as warnings.
        call_command("check", deploy=True, fail_level="WARNING")
    except SystemCheckError as error:
        raise ServeRefused(f"`manage.py check --deploy` failed:\n{error}") from None
    call_command("collectstatic", interactive=False, verbosity=0)
    call_command("migrate", interactive=False, verbosity=1)
    # Before any process serves: every run still "streaming" belongs to a server that is gone.
    call_command("recover_runs")
    connections.close_all()


def _listen(host: str, port: int) -> socket.socket:
    listener = socket.create_server((host, port), family=socket.AF_INET, backlog=1024)
    # Twisted adopts the descriptor as it is and needs it non-blocking (tcp.Port._fromListeningDescriptor).
    listener.setblocking(False)
    listener.set_inheritable(True)
    logger.info("listening on http://%s:%d/", *listener.getsockname()[:2])
    return listener


@dataclass
class _Slot:
    process: subprocess.Popen[bytes]
    started: float
    failed_starts: int = 0


@dataclass
class Supervisor:
    """Starts ``processes`` workers on ``listener``, restarts those that die, stops them on a signal."""

    listener: socket.socket
    processes: int
    daphne_options: list[str]
    graceful: int
    _slots: list[_Slot] = field(default_factory=list)
    _stopping: bool = False

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self._slots = [_Slot(process=self._start(), started=time.monotonic()) for _ in range(self.processes)]
        while not self._stopping:
            if not self._restart_dead():
                self._stop()
                return 1
            time.sleep(0.5)
        return self._stop()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping:
            # A second signal: pass it on; a process that gets its second stops without waiting.
            for slot in self._slots:
                if slot.process.poll() is None:
                    slot.process.send_signal(signal.SIGTERM)
        self._stopping = True

    def _start(self) -> subprocess.Popen[bytes]:
        fd = self.listener.fileno()
        command = [
            sys.executable,
            "-m",
            "storyproject.serve_worker",
            "--fd",
            str(fd),
            *self.daphne_options,
            "storyproject.asgi:application",
        ]
        # A session of its own: Ctrl-C in a terminal reaches the supervisor only, which stops the
        # processes gracefully; given to the whole process group it would count as their first signal.
        return subprocess.Popen(command, pass_fds=(fd,), cwd=_ROOT, start_new_session=True)  # noqa: S603

    def _restart_dead(self) -> bool:
        """Start again every process that exited; False when one keeps failing at start."""
        for slot in self._slots:
            code = slot.process.poll()
            if code is None or self._stopping:
                continue
            quick = time.monotonic() - slot.started < _FAILED_START_SECONDS
            slot.failed_starts = slot.failed_starts + 1 if quick else 0
            if slot.failed_starts >= _MAX_FAILED_STARTS:
                logger.error("a server process keeps exiting at start (code %s); giving up", code)
                return False
            logger.warning("server process %d exited with code %s; starting another", slot.process.pid, code)
            slot.process, slot.started = self._start(), time.monotonic()
        return True

    def _stop(self) -> int:
        """SIGTERM every process, wait for them (graceful period and a margin), kill what is left."""
        logger.info(
            "stopping %d server processes (up to %.0f s for running generations)",
            len(self._slots),
            self.graceful,
        )
        self.listener.close()
        for slot in self._slots:
            if slot.process.poll() is None:
                slot.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.graceful + _EXIT_MARGIN_SECONDS
        clean = True
        for slot in self._slots:
            try:
                slot.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.error("server process %d did not stop in time; killing it", slot.process.pid)
                slot.process.kill()
                slot.process.wait()
                clean = False
        return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
