"""``make serve``: the production server, N daphne processes behind one port.

``python -m storyproject.serve [--host H] [--port P] [--processes N] [daphne options...]`` refuses an
unsafe configuration (``DJANGO_DEBUG`` on, a missing or weak ``DJANGO_SECRET_KEY``, any warning of
``manage.py check --deploy``), collects the static files, applies migrations, marks runs left by a
stopped server as interrupted, then binds the listening socket once (an IPv4 or IPv6 address, or a Unix
socket: ``--host unix:/run/story/story.sock``) and starts N daphne processes
(``storyproject.serve_worker``, daphne's own command line) that inherit it: the kernel hands each new
connection to whichever process accepts first. A process that dies is started again. SIGTERM or SIGINT
stops them gracefully: each stops accepting and waits for the generations it runs, up to
``SERVE_GRACEFUL_SECONDS``, then hands the resumable ones to another process (storyproject.serve_worker).
Options this module does not know go to every daphne process
(``--proxy-headers``, ``--access-log``, ``-v``). See docs/operations.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import NoReturn

from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger("storyproject.serve")
_ROOT = Path(__file__).resolve().parent.parent

# A process that dies within this many seconds of its start counts as a failed start; after
# _MAX_FAILED_STARTS in a row the supervisor gives up rather than restart it in a tight loop.
_FAILED_START_SECONDS = 10.0
_MAX_FAILED_STARTS = 5
# Beyond the graceful period: how long a process has to hand its generations over or close them, and
# exit (storyproject.serve_worker: up to 10 s for the hand-over, 5 s for its threads).
_EXIT_MARGIN_SECONDS = 20.0


class ServeRefused(Exception):
    """The configuration is not safe to serve; the message says what to change."""


def supervisor_log_level() -> str:
    """``DJANGO_LOG_LEVEL`` as the processes read it (storyproject/settings.py), for the supervisor's own
    lines, which have no settings; a value the settings refuse is said by the preparation: INFO here."""
    level = os.environ.get("DJANGO_LOG_LEVEL", "").strip().upper()
    return level if level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") else "INFO"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=supervisor_log_level(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if os.environ.get("LOG_FORMAT", "").strip() == "json":
        # The supervisor's own lines (listening, a process restarted, stopping) as the processes' are.
        from storyproject.logs import JsonFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    try:
        options, daphne_options = _arguments(argv)
        graceful = graceful_seconds()
        address = serve_address(options.host, options.port)
        metrics_summed_check(options.processes)
        if warning := redis_unshared_warning(options.processes):
            logger.warning("%s", warning)
    except ImproperlyConfigured as error:  # HOST, PORT, SERVE_PROCESSES or SERVE_GRACEFUL_SECONDS unusable
        print(f"serve: refusing to start: {error}", file=sys.stderr)
        return 2
    # Off unless the operator set it (then the preparation refuses): for the preparation and every
    # process, which inherit this environment.
    os.environ.setdefault("DJANGO_DEBUG", "0")
    if options.prepare_only:
        return _prepare_here(daphne_options)
    # The address first: a port already taken is said at once, not after the migrations and the
    # recovery of interrupted runs (which can take minutes). Until the processes start, connections
    # wait in the listening socket's backlog.
    try:
        listener = address.listen()
    except (
        OSError,
        ImproperlyConfigured,
    ) as error:  # the port or path is taken, the address not this machine's
        print(f"serve: cannot listen on {address}: {error}", file=sys.stderr)
        return 2
    try:
        supervisor = Supervisor(
            listener=listener,
            domain=address.domain,
            processes=options.processes,
            daphne_options=daphne_options,
            graceful=graceful,
        )
        return supervisor.run()
    finally:
        listener.close()
        address.remove()


def graceful_seconds() -> int:
    """``SERVE_GRACEFUL_SECONDS``, read here and by the settings (the supervisor has no settings)."""
    from storyproject.env import envint

    return envint("SERVE_GRACEFUL_SECONDS", 300, minimum=0, maximum=3600)


def metrics_summed_check(processes: int) -> None:
    """Refuse ``/metrics`` on several processes without prometheus-client's multiprocess directory.

    Without it each scrape reaches one process and reports that process's counters alone: from one
    scrape to the next they jump back and forth, which Prometheus takes for counter resets.
    """
    from storyproject.env import envnetworks, envstr

    metrics_on = bool(envstr("METRICS_TOKEN") or envnetworks("METRICS_ALLOWED_NETWORKS"))
    if processes > 1 and metrics_on and not envstr("PROMETHEUS_MULTIPROC_DIR"):
        raise ImproperlyConfigured(
            f"/metrics is on (METRICS_TOKEN or METRICS_ALLOWED_NETWORKS) with {processes} processes, but "
            "PROMETHEUS_MULTIPROC_DIR is unset: each scrape would count one process alone. Set it to an "
            "empty directory (docs/operations.md, Several processes), or serve with --processes 1"
        )


def redis_unshared_warning(processes: int) -> str | None:
    """What several processes without ``REDIS_URL`` do not share, for the operator to read at start.

    Not a refusal (``make serve`` on the embedded defaults runs one process per core): each process then
    keeps its own cache and run logs, so the limits counted in the cache hold per process."""
    from storyproject.env import envstr

    if processes < 2 or envstr("REDIS_URL"):
        return None
    return (
        f"{processes} processes without REDIS_URL: each counts login attempts, generations per hour and "
        f"open sockets on its own (so up to {processes} times each limit), and a reconnect, an attach or a "
        "cancel that reaches another process than its run's does not find it. Set REDIS_URL "
        "(docs/operations.md, Several processes), or serve with --processes 1"
    )


def _prepare_here(daphne_options: list[str]) -> int:
    import psycopg
    from django.core.management.base import CommandError
    from django.db import Error as DatabaseError

    from storyproject.commands import database_failure

    try:
        daphne_options_check(daphne_options)
        _prepare()
    except (ServeRefused, CommandError) as refusal:  # CommandError: recover_runs' database failure
        print(f"serve: refusing to start: {refusal}", file=sys.stderr)
        return 2
    except (DatabaseError, psycopg.Error) as error:  # unreachable, refused the credentials, no such database
        print(f"serve: refusing to start: {database_failure(error)}", file=sys.stderr)
        return 2
    return 0


# daphne's options that say where it listens: make serve binds the one socket every process shares.
_DAPHNE_LISTENING = {"port": "-p/--port", "host": "-b/--bind", "unix_socket": "-u", "file_descriptor": "--fd"}


def daphne_options_check(daphne_options: list[str]) -> None:
    """Refuse, before anything is prepared, the options each daphne process would refuse at its start.

    They were found by the processes only, after the migrations: each printed daphne's usage and exited,
    was started again five times, and the server gave up with exit status 1.
    """
    from daphne.cli import CommandLineInterface

    parser = CommandLineInterface().parser

    def refuse(message: str) -> NoReturn:
        raise ServeRefused(f"daphne option: {message}")

    parser.error = refuse
    _application_not_given(parser, daphne_options)
    parsed = parser.parse_args([*daphne_options, "storyproject.asgi:application"])
    if parsed.verbosity not in (0, 1, 2, 3):
        refuse(f"-v/--verbosity must be 0, 1, 2 or 3; got {parsed.verbosity}")
    listening = [option for name, option in _DAPHNE_LISTENING.items() if getattr(parsed, name) is not None]
    if listening or parsed.socket_strings:
        refuse(f"{', '.join(listening) or '-e'} is not for make serve: give --host and --port")


def _application_not_given(parser: argparse.ArgumentParser, daphne_options: list[str]) -> None:
    """Refuse an argument that is no option (daphne would take it for the application): the message
    named ``storyproject.asgi:application``, pushed past it, as the argument it did not know."""
    try:
        given = parser.parse_args(daphne_options).application
    except ServeRefused:
        return  # no application among them (daphne requires one): the options are checked next
    raise ServeRefused(
        f"daphne option: {given!r} is not an option; make serve serves storyproject.asgi:application itself"
    )


def _arguments(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    from storyproject.env import envint

    parser = argparse.ArgumentParser(prog="python -m storyproject.serve", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--host",
        default=os.environ.get("HOST", "127.0.0.1"),
        help="IPv4 or IPv6 address to bind (:: is dual-stack where the system allows), or unix:/path/to.sock",
    )
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
    from stories.generation.backends.registry import backend_class_load

    try:
        # What each process does at start (storyproject.asgi): refused here, once, before any of them runs.
        backend_class_load()
    except ImproperlyConfigured as error:
        raise ServeRefused(str(error)) from None
    try:
        # Warnings count too: `check --deploy` reports unsafe settings (a weak key, no HTTPS) as warnings.
        call_command("check", deploy=True, fail_level="WARNING")
    except SystemCheckError as error:
        raise ServeRefused(f"`manage.py check --deploy` failed:\n{error}") from None
    from storyproject.commands import database_connect_once

    # Once, directly: psycopg's pool retried for 10 s, logging each try, then said only that it got no
    # connection, not why (no such database, a wrong password, nothing listening).
    database_connect_once()
    call_command("collectstatic", interactive=False, verbosity=0)
    call_command("migrate", interactive=False, verbosity=1)
    # Before any process serves: every run still "streaming" belongs to a server that is gone.
    call_command("recover_runs")
    connections.close_all()


# Whoever runs the server and its group (a reverse proxy's user added to it) may connect; nobody else.
UNIX_SOCKET_MODE = 0o660


@dataclass(frozen=True)
class ServeAddress:
    """Where ``make serve`` listens: an IP address and port, or a Unix socket's path (``unix:/path``)."""

    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def domain(self) -> str:
        """The address family as Twisted names it in an ``fd:`` endpoint (INET, INET6, UNIX)."""
        if self.path:
            return "UNIX"
        return "INET6" if ipaddress.ip_address(self.host).version == 6 else "INET"

    def __str__(self) -> str:
        if self.path:
            return f"unix:{self.path}"
        return f"[{self.host}]:{self.port}" if self.domain == "INET6" else f"{self.host}:{self.port}"

    def listen(self) -> socket.socket:
        listener = self._unix_listen() if self.path else self._tcp_listen()
        # Twisted adopts the descriptor as it is and needs it non-blocking (tcp.Port._fromListeningDescriptor).
        listener.setblocking(False)
        listener.set_inheritable(True)
        return listener

    def _tcp_listen(self) -> socket.socket:
        if self.domain == "INET":
            listener = socket.create_server((self.host, self.port), family=socket.AF_INET, backlog=1024)
        else:
            # "::" also takes IPv4 connections where the system allows it (IPV6_V6ONLY off); an IPv6
            # address of this machine takes IPv6 only.
            dualstack = self.host == "::" and socket.has_dualstack_ipv6()
            listener = socket.create_server(
                (self.host, self.port), family=socket.AF_INET6, backlog=1024, dualstack_ipv6=dualstack
            )
        host, port = listener.getsockname()[:2]
        bound = f"[{host}]" if ":" in host else host
        logger.info("listening on http://%s:%d/", bound, port)
        return listener

    def _unix_listen(self) -> socket.socket:
        path = Path(self.path)
        _unix_path_check(path)  # again: the preparation took a while
        if path.is_socket():
            path.unlink()  # left by a server that did not stop cleanly
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(path))
            os.chmod(path, UNIX_SOCKET_MODE)
            listener.listen(1024)
        except OSError:
            listener.close()
            raise
        logger.info("listening on unix:%s", path)
        return listener

    def remove(self) -> None:
        """Remove the Unix socket's file once nothing serves on it (nothing for an IP address)."""
        if self.path:
            Path(self.path).unlink(missing_ok=True)


def _unix_path_check(path: Path) -> None:
    """Refuse a path that holds something else than a socket, or a socket a server answers on."""
    if not (path.exists() or path.is_symlink()):
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise ImproperlyConfigured(f"{path} exists and is not a socket; refusing to replace it")
    if _unix_answers(path):
        raise ImproperlyConfigured(f"{path} is in use by a running server")


def _unix_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def serve_address(host: str, port: int) -> ServeAddress:
    """``--host``/``HOST`` checked: an IPv4 or IPv6 address (brackets allowed), or ``unix:`` and a path."""
    host = host.strip()
    if host.startswith("unix:"):
        path = host.removeprefix("unix:")
        if not path.startswith("/"):
            raise ImproperlyConfigured(
                f"HOST unix: needs an absolute path, e.g. unix:/run/story/story.sock; got {host!r}"
            )
        # sockaddr_un holds 108 bytes with the terminating NUL (unix(7)).
        if len(os.fsencode(path)) > 107:
            raise ImproperlyConfigured(f"HOST unix: path is longer than 107 bytes: {path!r}")
        if not Path(path).parent.is_dir():
            raise ImproperlyConfigured(f"HOST unix: the directory {Path(path).parent} does not exist")
        _unix_path_check(Path(path))
        return ServeAddress(path=path)
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(literal)
    except ValueError:
        raise ImproperlyConfigured(
            "HOST must be an IPv4 address (127.0.0.1, 0.0.0.0), an IPv6 address (::1, ::) or "
            f"unix:/absolute/path.sock; got {host!r}"
        ) from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise ImproperlyConfigured(
            f"HOST: an IPv6 address with a zone (%{address.scope_id}) is not supported"
        )
    # The PORT variable is range-checked as it is read; --port (which `make serve` passes) is not.
    if not 0 <= port <= 65535:
        raise ImproperlyConfigured(f"PORT (--port) must be from 0 to 65535; got {port}")
    return ServeAddress(host=str(address), port=port)


@dataclass
class _Slot:
    process: subprocess.Popen[bytes]
    started: float
    failed_starts: int = 0


@dataclass
class Supervisor:
    """Starts ``processes`` workers on ``listener``, restarts those that die, stops them on a signal."""

    listener: socket.socket
    domain: str
    processes: int
    daphne_options: list[str]
    graceful: int
    _slots: list[_Slot] = field(default_factory=list)
    _preparing: subprocess.Popen[bytes] | None = None
    _stopping: bool = False

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        # The terminal it runs in closing (an ssh session dropped): a graceful stop too, rather than the
        # supervisor dying at once with nothing said and a preparation left running on. Unless started
        # with the hang-up ignored (nohup), which its processes and the preparation inherit.
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            signal.signal(signal.SIGHUP, self._on_signal)
        prepared = self._prepare()
        if self._stopping:
            logger.info("stopped during the preparation; no server process was started")
            return 0
        if prepared != 0:
            return prepared
        self._slots = [_Slot(process=self._start(), started=time.monotonic()) for _ in range(self.processes)]
        while not self._stopping:
            if not self._restart_dead():
                self._stop()
                return 1
            time.sleep(0.5)
        return self._stop()

    def _prepare(self) -> int:
        """The checks, static files, migrations and recover_runs (``--prepare-only``); its exit status.

        In a child: they load all of Django, which the supervisor, a loop that only watches its processes,
        would otherwise hold for its whole life (~150 MB). In a session of its own, as the processes are:
        Ctrl-C in a terminal reaches the supervisor alone, which stops the preparation (_on_signal).
        """
        command = [sys.executable, "-m", "storyproject.serve", "--prepare-only", *self.daphne_options]
        self._preparing = subprocess.Popen(command, cwd=_ROOT, start_new_session=True)  # noqa: S603
        return self._preparing.wait()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._preparing is not None and self._preparing.poll() is None:
            # Stopped before serving: the preparation ends where it is, as a killed `manage.py` would (a
            # migration's transaction is rolled back; a run being resumed keeps its lease, and is resumed
            # again once it runs out).
            self._preparing.send_signal(signal.SIGTERM)
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
            # daphne's --fd adopts the socket as IPv4; an endpoint names its family.
            "--endpoint",
            f"fd:fileno={fd}:domain={self.domain}",
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
