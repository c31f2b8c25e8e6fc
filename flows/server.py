"""One Prefect API for a whole build: the user's, or one local server shared by every stage.

Without a configured API, each process running a flow used to start its own temporary Prefect
server (10-15 s each: every DVC stage, every Dask worker). :func:`prefect_api` instead uses

- the API the user configured (``PREFECT_API_URL`` or the active profile of their Prefect home:
  a team server, Prefect Cloud), untouched; else
- one local ``prefect server`` whose database lives in the Prefect home (``PREFECT_HOME``, or the
  project's ``.prefect`` when unset). The first process that needs it starts it; later stages,
  builds and the Dask workers (which inherit ``PREFECT_API_URL``) reuse it.

The local server is run by a small keeper process (``python -m verse_etl.flows.server``) in its own session:
it stops the server once no process has used it for ``idle`` seconds. A process using it holds a
lease (a file named for its pid); a build killed with SIGKILL leaves a lease whose pid is gone, so
the server still stops when idle, and the server dies with its keeper (``PR_SET_PDEATHSIG``), so
nothing is orphaned. The runs stay in the database: ``prefect server start`` with the same
``PREFECT_HOME`` shows them later.

This module imports nothing from Prefect at import time: the keeper must start quickly.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from verse_etl.errors import VerseEtlError

IDLE_SECONDS = 300.0
"""How long the local server outlives its last user (``VERSE_ETL_PREFECT_IDLE_SECONDS``): long
enough to bridge DVC stages and to open the UI after a build, short enough not to linger."""
STARTUP_SECONDS = 180.0
STATE_FILE = "verse-etl-server.json"
LOCK_FILE = "verse-etl-server.lock"
LEASE_DIR = "verse-etl-server.clients"
LOG_FILE = "verse-etl-server.log"


class PrefectApiError(VerseEtlError):
    """The Prefect API a build needs is unreachable or could not be started."""

    label = "prefect"


@dataclass(frozen=True)
class LocalServer:
    """A running local server: its API URL and the keeper's pid."""

    url: str
    keeper_pid: int
    server_pid: int

    @property
    def ui(self) -> str:
        return self.url.removesuffix("/api")


def local_home(cwd: Path | None = None) -> Path:
    """Where the local server keeps its database: the user's PREFECT_HOME, else ``.prefect`` in
    the project (the working directory, where DVC runs its stages)."""
    home = os.environ.get("PREFECT_HOME")
    return Path(home).expanduser() if home else (cwd or Path.cwd()) / ".prefect"


def configured_api() -> str | None:
    """The API URL the user configured (environment, profile, prefect.toml), if any."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def _healthy(url: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def _local_url(url: str) -> bool:
    """A self-hosted server (whose /health answers without credentials), not Prefect Cloud."""
    return url.startswith("http") and "api.prefect.cloud" not in url


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """Serialise finding, starting, leasing and stopping the server of ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_state(home: Path, patience: float = 60.0) -> LocalServer | None:
    """The local server of ``home`` if its keeper is alive and it answers, else None.

    A live keeper's server gets ``patience`` seconds to answer: on a loaded machine a health
    check can be slow, and giving up early would start a second server on the same database.
    """
    try:
        state = json.loads((home / STATE_FILE).read_text())
        server = LocalServer(state["url"], int(state["keeper_pid"]), int(state["server_pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    deadline = time.monotonic() + patience
    while _alive(server.keeper_pid) and (home / STATE_FILE).exists():
        if _healthy(server.url, 10):
            return server
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    return None


def _dvc_ancestor() -> int | None:
    """The pid of the `dvc` process (repro, exp run) this process is a stage of, if any."""
    pid = os.getppid()
    for _ in range(6):
        if pid <= 1:
            return None
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:3]
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        if any(Path(a.decode(errors="replace")).name == "dvc" for a in args):
            return pid
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return None


def _start(home: Path, idle: float) -> LocalServer:
    """Start a keeper (and through it a server) for ``home``; wait until the server answers."""
    (home / STATE_FILE).unlink(missing_ok=True)
    args = [sys.executable, "-m", "verse_etl.flows.server", str(home), str(idle)]
    with open(home / LOG_FILE, "ab") as log:
        # Own session: Ctrl-C in the terminal of the first stage must not stop the shared server.
        keeper = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": _pythonpath()},
        )
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if keeper.poll() is not None:
            break
        server = read_state(home)
        if server is not None and server.keeper_pid == keeper.pid:
            return server
        time.sleep(0.3)
    with contextlib.suppress(ProcessLookupError):
        keeper.terminate()
    raise PrefectApiError(
        f"{home / LOG_FILE}: the local Prefect server did not start within {STARTUP_SECONDS:.0f} s "
        f"(keeper exit code {keeper.poll()}); read the log, or set PREFECT_API_URL to a running "
        "server (`prefect server start`)"
    )


def _pythonpath() -> str:
    # The keeper imports this package: make it importable where the caller found it.
    root = str(Path(__file__).resolve().parents[1])
    current = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join([root, current]) if current else root


@contextlib.contextmanager
def local_server(home: Path, idle: float = IDLE_SECONDS) -> Iterator[LocalServer]:
    """The shared local server of ``home`` (started if none runs), leased while inside.

    A DVC stage also leases the server for its `dvc` process: the server then bridges the time
    DVC spends between stages (hashing outputs) however long, and stops once `dvc` is done.
    """
    lease = home / LEASE_DIR / str(os.getpid())
    dvc = _dvc_ancestor()
    with _locked(home):
        server = read_state(home) or _start(home, idle)
        lease.parent.mkdir(parents=True, exist_ok=True)
        lease.write_text(server.url)
        if dvc is not None:
            (home / LEASE_DIR / str(dvc)).write_text(server.url)
    try:
        yield server
    finally:
        lease.unlink(missing_ok=True)


@contextlib.contextmanager
def prefect_api(idle: float | None = None) -> Iterator[str]:
    """Run the flows inside on one Prefect API (see the module docstring); yields its URL.

    Sets ``PREFECT_API_URL`` in the environment too, so that the processes started inside (Dask
    workers) report to the same API instead of starting servers of their own.
    """
    configured = configured_api()
    if configured:
        if _local_url(configured) and not _healthy(configured, 10):
            raise PrefectApiError(
                f"{configured}: the configured Prefect API does not answer (expected a running "
                "server); start it (`prefect server start`), or unset PREFECT_API_URL to let the "
                "build start a local one"
            )
        with _exported(configured):
            yield configured
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if idle is None:
        idle = float(os.environ.get("VERSE_ETL_PREFECT_IDLE_SECONDS", IDLE_SECONDS))
    home = local_home()
    with local_server(home, idle) as server, _exported(server.url):
        print(
            f"Prefect: local server {server.url} (UI {server.ui}), runs kept in {home}; it stops "
            f"after {idle:.0f} s unused (browse later: PREFECT_HOME={home} prefect server start)",
            file=sys.stderr,
            flush=True,
        )
        with temporary_settings(updates={PREFECT_API_URL: server.url}):
            yield server.url


@contextlib.contextmanager
def _exported(url: str) -> Iterator[None]:
    """``PREFECT_API_URL`` set in the environment while inside, for the processes started there."""
    before = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before


def serve_api() -> str:
    """The persistent API a deployment is served against: configured and answering.

    Raises
    ------
    PrefectApiError
        If no API is configured (a served deployment needs a server that outlives the command)
        or the configured one does not answer.
    """
    url = configured_api()
    start = (
        "start one with `prefect server start` (in another terminal), then "
        "`export PREFECT_API_URL=http://127.0.0.1:4200/api` "
        "(or `prefect config set PREFECT_API_URL=...`, or `prefect cloud login`)"
    )
    if not url:
        raise PrefectApiError(
            "PREFECT_API_URL: not set (expected the URL of a running Prefect server or Prefect "
            f"Cloud; scheduled runs need a server that outlives this command); {start}"
        )
    if _local_url(url) and not _healthy(url, 10):
        raise PrefectApiError(
            f"{url}: the Prefect API does not answer (expected a running server); {start}"
        )
    return url


# The keeper -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # Linux: the server gets SIGTERM when the keeper dies, even by SIGKILL.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _leases(home: Path) -> list[int]:
    """Pids of the live processes using the server; leases of dead ones are removed."""
    live = []
    for lease in (home / LEASE_DIR).glob("*"):
        if lease.name.isdigit() and _alive(int(lease.name)):
            live.append(int(lease.name))
        else:
            lease.unlink(missing_ok=True)
    return live


def keep(home: Path, idle: float) -> int:
    """Run a local server for ``home`` until no process has leased it for ``idle`` seconds."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    prefect = str(Path(sys.executable).parent / "prefect")
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _healthy(url, 2):
            if server.poll() is not None or stopping or time.monotonic() > deadline:
                return 1
            time.sleep(0.3)
        state = {"url": url, "keeper_pid": os.getpid(), "server_pid": server.pid}
        tmp = home / f".{STATE_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, home / STATE_FILE)
        print(f"verse-etl: Prefect server {url} up (database in {home})", flush=True)
        idle_since = time.monotonic()
        while not stopping and server.poll() is None:
            time.sleep(1.0)
            with _locked(home):
                if _leases(home):
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= idle:
                    (home / STATE_FILE).unlink(missing_ok=True)
                    break
        return 0
    finally:
        with _locked(home), contextlib.suppress(OSError, ValueError):
            if json.loads((home / STATE_FILE).read_text())["keeper_pid"] == os.getpid():
                (home / STATE_FILE).unlink()
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        print(f"verse-etl: Prefect server {url} stopped", flush=True)


if __name__ == "__main__":  # the keeper: python -m verse_etl.flows.server HOME IDLE_SECONDS
    sys.exit(keep(Path(sys.argv[1]), float(sys.argv[2])))
