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

Starting that server costs seconds of CPU (Prefect's server imports, and on a new database
a hundred migrations), so the build keeps it off its critical path:

- :func:`start_in_background` spawns the keeper without waiting, at the very start of a
  command (before the build's own imports) or of ``make run`` (while the sample is written);
  :func:`local_server` later waits only for what is left of the start;
- ``make setup`` migrates an empty database once per Prefect version (:func:`prepare`); a new
  Prefect home gets a copy of it instead of running the migrations again.

This module imports nothing from Prefect at import time: the keeper must start quickly.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verse_etl.flows.timing import COST, import_library, import_prefect, process_seconds

from verse_etl.errors import VerseEtlError

IDLE_SECONDS = 300.0
"""How long the local server outlives its last user (``VERSE_ETL_PREFECT_IDLE_SECONDS``): long
enough to bridge DVC stages and to open the UI after a build, short enough not to linger."""
STARTUP_SECONDS = 180.0
STATE_FILE = "verse-etl-server.json"
LOCK_FILE = "verse-etl-server.lock"
LEASE_DIR = "verse-etl-server.clients"
LOG_FILE = "verse-etl-server.log"
STARTING_FILE = "verse-etl-server.starting"  # a keeper whose server is not up yet: pid, URL
LOCAL_API = "VERSE_ETL_PREFECT_LOCAL_API"
"""Set with ``PREFECT_API_URL`` when verse-etl put the URL of its local server there before Prefect
was imported (:func:`start_prefect`): that URL is the local server's, leased as such, not an API
the user configured."""
# Prefect's settings for the local server, spelled as environment variables: this environment's
# own server, so the version check each client process makes first (a request, and a TLS
# context built for it: 0.1-0.2 s of a background thread at the start of every flow run here)
# cannot find a mismatch.
_LOCAL_CLIENT_ENV = {"PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED": "false"}
DATABASE = "prefect.db"  # Prefect's default SQLite database in its home

# The local server runs the services a build's runs need (task runs and events recorded); the
# ones for deployments, schedules, workers and automations have nothing to do on a server that
# stops when idle, and each polls the database every few seconds during the build.
_IDLE_SERVICES = (
    "SCHEDULER",
    "LATE_RUNS",
    "FOREMAN",
    "PAUSE_EXPIRATIONS",
    "REPOSSESSOR",
    "TRIGGERS",
)


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
    """The API URL the user configured (environment, profile, prefect.toml), if any; not the
    local server's URL that :func:`start_prefect` put in the environment."""
    from prefect.settings import get_current_settings

    return _set_by_user(get_current_settings().api.url or None)


def _set_by_user(url: str | None) -> str | None:
    """``url``, unless it is the local server's URL that :func:`start_prefect` put in the
    environment (marked by :data:`LOCAL_API`)."""
    return None if url == os.environ.get(LOCAL_API) else url


def _healthy(url: str, timeout: float = 5.0) -> bool:
    import urllib.request  # here: `make run`'s first step (start) never needs it (~15 ms)

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


# Read-only requests sent to a new server before it is announced: its first queries open the
# database and prepare their statements, which the first flow run otherwise waited for (measured
# on a fresh server: 0.49-0.56 s from calling a flow to its body, 0.12-0.15 s after these). The
# version check every client makes first took 0.18-0.25 s on a fresh server (2 ms after).
_WARM_UP = ("flows", "flow_runs", "task_runs", "deployments")
_WARM_UP_GET = ("admin/version",)


def _warm_up(url: str) -> int:
    """Send the ``_WARM_UP`` filter queries (limit 1) and the ``_WARM_UP_GET`` requests to the
    server at ``url``; the number answered. A request that fails is left alone: the server is
    healthy, and a cold first flow run is only slower."""
    import urllib.request

    answered = 0
    requests = [
        urllib.request.Request(
            f"{url}/{name}/filter",
            data=b'{"limit": 1}',
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        for name in _WARM_UP
    ] + [urllib.request.Request(f"{url}/{name}") for name in _WARM_UP_GET]
    for request in requests:
        with (
            contextlib.suppress(OSError, ValueError),
            urllib.request.urlopen(request, timeout=10) as response,
        ):
            response.read()
            answered += 1
    return answered


def _local_url(url: str) -> bool:
    """A self-hosted server (whose /health answers without credentials), not Prefect Cloud."""
    return url.startswith("http") and "api.prefect.cloud" not in url


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # a keeper this process started and that ended: reap it
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


def _recorded(home: Path) -> LocalServer | None:
    """The local server the state file of ``home`` names (its keeper alive or not), if any."""
    try:
        state = json.loads((home / STATE_FILE).read_text())
        return LocalServer(state["url"], int(state["keeper_pid"]), int(state["server_pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_state(home: Path, patience: float = 60.0) -> LocalServer | None:
    """The local server of ``home`` if its keeper is alive and it answers, else None.

    A live keeper's server gets ``patience`` seconds to answer: on a loaded machine a health
    check can be slow, and giving up early would start a second server on the same database.
    """
    server = _recorded(home)
    if server is None:
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


def _spawn_keeper(home: Path, idle: float) -> subprocess.Popen[bytes]:
    """Start a keeper for ``home`` (call with the lock held); it is announced as starting, with
    the URL its server will answer at (the port is chosen here, so that a command can give
    Prefect that URL before the server is up: :func:`start_prefect`)."""
    (home / STATE_FILE).unlink(missing_ok=True)
    port = _free_port()
    args = [sys.executable, "-m", "verse_etl.flows.server", "keep", str(home), str(idle), str(port)]
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
    (home / STARTING_FILE).write_text(json.dumps({"keeper_pid": keeper.pid, "url": _url(port)}))
    return keeper


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}/api"


def _starting(home: Path) -> tuple[int, str | None] | None:
    """The pid of a live keeper whose server is still starting, and that server's URL (None
    from a keeper of an earlier verse-etl, whose file holds its pid alone), if any."""
    try:
        starting = json.loads((home / STARTING_FILE).read_text())
        if isinstance(starting, int):
            pid, url = starting, None
        else:
            pid, url = int(starting["keeper_pid"]), str(starting["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (pid, url) if _alive(pid) else None


def _starting_keeper(home: Path) -> int | None:
    """The pid of a live keeper whose server is still starting, if any."""
    starting = _starting(home)
    return starting[0] if starting else None


def announced_url(home: Path) -> str | None:
    """The URL of the local server of ``home`` whose keeper lives, up or still starting, read
    from the keeper's files (no request: whether it answers is for :func:`local_server`)."""
    server = _recorded(home)
    if server is not None and _alive(server.keeper_pid):
        return server.url
    starting = _starting(home)
    return starting[1] if starting else None


def _running_keeper(home: Path) -> bool:
    """Whether the keeper named by the state file of ``home`` is alive."""
    server = _recorded(home)
    return server is not None and _alive(server.keeper_pid)


def _wait_for(home: Path, keeper_pid: int) -> LocalServer:
    """Wait until the server of the keeper ``keeper_pid`` answers."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline and _alive(keeper_pid):
        server = read_state(home)
        if server is not None and server.keeper_pid == keeper_pid:
            return server
        time.sleep(0.2)
    if _alive(keeper_pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(keeper_pid, signal.SIGTERM)
    raise PrefectApiError(
        f"{home / LOG_FILE}: the local Prefect server did not start within {STARTUP_SECONDS:.0f} s "
        "(or its keeper ended); read the log, or set PREFECT_API_URL to a running server "
        "(`prefect server start`)"
    )


def _env_api() -> str | None:
    """``PREFECT_API_URL`` as the user set it (not the local server's, :data:`LOCAL_API`)."""
    return _set_by_user(os.environ.get("PREFECT_API_URL"))


def _api_in_config() -> bool:
    """Whether a Prefect settings file may configure an API (read as text, no Prefect import):
    then only Prefect's settings can tell, later, and no local server is started early."""
    user_home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    profiles = os.environ.get("PREFECT_PROFILES_PATH") or str(user_home / "profiles.toml")
    for config in (Path(profiles), Path("prefect.toml"), Path(".env")):
        with contextlib.suppress(OSError):
            text = config.read_text().upper()
            if "API_URL" in text or "[API]" in text:
                return True
    return False


def start_prefect(module: str) -> None:
    """First thing in a command that runs a flow: start the local server in the background
    (:func:`start_in_background`), then, while it starts, import the library the flow module
    ``module`` composes (:func:`~verse_etl.flows.timing.import_library`) and Prefect (timed),
    with the local server's URL in its settings from the start (:func:`_preset_local_api`)."""
    start_in_background()
    import_library(module)
    _preset_local_api()
    import_prefect()


def _preset_local_api() -> None:
    """Before Prefect is imported: put the URL of the local server (up or starting) and its
    client settings in the environment, marked as the local server's (:data:`LOCAL_API`).

    Prefect reads the environment once, when it is imported: with the URL there, the settings
    it makes hold it, and :func:`prefect_api` need not make another validated settings object
    (50 ms on the critical path of every command). Nothing is set when an API is configured,
    when Prefect was imported already (a command run in-process), or when no keeper runs: then
    :func:`prefect_api` sets the settings as before. If the server found here is gone by then,
    :func:`prefect_api` starts another, and Prefect's settings follow it."""
    if "prefect.settings" in sys.modules or _env_api() or _api_in_config():
        return
    url = announced_url(local_home())
    if url is not None:
        os.environ.update({"PREFECT_API_URL": url, LOCAL_API: url, **_LOCAL_CLIENT_ENV})


def start_in_background(home: Path | None = None, idle: float | None = None) -> bool:
    """Start the local server of ``home`` without waiting for it, unless an API is configured
    in the environment or a server of ``home`` runs or starts already. Returns whether a keeper
    was started.

    Cheap (no Prefect import): called first thing by the commands that run flows, so the
    server starts while they import the build's modules. A profile's API (which only Prefect's
    settings can tell) is not looked at here: a keeper started in vain stops when idle.
    """
    if _env_api() or _api_in_config():
        return False
    if "prefect.settings" in sys.modules and configured_api():
        return False  # Prefect already imported (a command run in-process): it can tell, cheaply
    home = home or local_home()
    if idle is None:
        idle = float(os.environ.get("VERSE_ETL_PREFECT_IDLE_SECONDS", IDLE_SECONDS))
    with _locked(home):
        if _starting_keeper(home) is not None or _running_keeper(home):
            return False  # whether it answers is for local_server to find out, patiently
        _spawn_keeper(home, idle)
        return True


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
        server = read_state(home)
        if server is None:
            keeper = _starting_keeper(home) or _spawn_keeper(home, idle).pid
            server = _wait_for(home, keeper)
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
    with COST.part("server"):
        configured = configured_api()
        if configured and _local_url(configured) and not _healthy(configured, 10):
            raise PrefectApiError(
                f"{configured}: the configured Prefect API does not answer (expected a running "
                "server); start it (`prefect server start`), or unset PREFECT_API_URL to let the "
                "build start a local one"
            )
    if configured:
        # The user's API, which Prefect's settings hold already: exported for the processes
        # started inside only.
        with _exported(configured):
            yield configured
        return
    if idle is None:
        idle = float(os.environ.get("VERSE_ETL_PREFECT_IDLE_SECONDS", IDLE_SECONDS))
    home = local_home()
    # Timed: getting the server (what is left of its start), the lease and the settings; held:
    # until the end.
    with COST.part("server"), contextlib.ExitStack() as stack:
        server = stack.enter_context(local_server(home, idle))
        ca = _plain_http_ca(home)
        stack.enter_context(
            _exported(
                server.url,
                {LOCAL_API: server.url, "PREFECT_API_SSL_CERT_FILE": str(ca), **_LOCAL_CLIENT_ENV},
                # No flow-run heartbeats: they serve automations, which the local server does
                # not run, and stopping their thread costs up to a second at the end of every
                # flow run. (None has no environment spelling: settings only.)
                {
                    "client.server_version_check_enabled": False,
                    "flows.heartbeat_frequency": None,
                    "api.ssl_cert_file": str(ca),
                },
            )
        )
        held = stack.pop_all()
    with held:
        print(
            f"Prefect: local server {server.url} (UI {server.ui}), runs kept in {home}; it stops "
            f"after {idle:.0f} s unused (browse later: PREFECT_HOME={home} prefect server start)",
            file=sys.stderr,
            flush=True,
        )
        yield server.url


# The local server speaks plain HTTP on loopback: its clients never verify a certificate. Prefect
# still builds a TLS context for every API client it makes, from certifi's bundle of ~140
# certificates by default: 30-40 ms each here (the flow run's client, its log and event
# workers', and on Dask workers one per task run). Its clients get this bundle instead: one
# self-signed certificate whose private key was discarded when it was made, so it trusts no
# server (0.3-0.5 ms to load).
_PLAIN_HTTP_CA = """\
-----BEGIN CERTIFICATE-----
MIIBpzCCAU6gAwIBAgIUW7NEke1R4Cdh6fUqUpfIuBCauzIwCgYIKoZIzj0EAwIw
RzFFMEMGA1UEAww8dmVyc2UtZXRsIGxvY2FsIFByZWZlY3Qgc2VydmVyOiBwbGFp
biBIVFRQLCB0cnVzdHMgbm8gc2VydmVyMCAXDTI2MTIwNzAwMDAwMFoYDzIwNTYx
MTI5MDAwMDAwWjBHMUUwQwYDVQQDDDx2ZXJzZS1ldGwgbG9jYWwgUHJlZmVjdCBz
ZXJ2ZXI6IHBsYWluIEhUVFAsIHRydXN0cyBubyBzZXJ2ZXIwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAAT4SuJ8ayxcO0z4H2cK5r8WyAhWSXFp2ENchMPu841aH2AK
TYOBhST6n52NuBqv8cwyWZDrzzzEpAxuRv1L5e7HoxYwFDASBgNVHRMBAf8ECDAG
AQH/AgEAMAoGCCqGSM49BAMCA0cAMEQCIGhNSMuPbNOJVfdzp598Q6sFySPgAM92
IEhq4Qsn3iCVAiAY/ddajcYqpH26xq0m8lxrtYm1UjFj/Ce3MZAoy97yMg==
-----END CERTIFICATE-----
"""
PLAIN_HTTP_CA_FILE = "verse-etl-plain-http-ca.pem"


def _plain_http_ca(home: Path) -> Path:
    """The CA bundle of the local server's clients (see :data:`_PLAIN_HTTP_CA`), in ``home``."""
    path = home / PLAIN_HTTP_CA_FILE
    with contextlib.suppress(OSError):
        if path.read_text() == _PLAIN_HTTP_CA:
            return path
    tmp = home / f".{PLAIN_HTTP_CA_FILE}.{os.getpid()}"
    tmp.write_text(_PLAIN_HTTP_CA)
    os.replace(tmp, path)
    return path


@contextlib.contextmanager
def _exported(
    url: str, more: dict[str, str] | None = None, settings: dict[str, object] | None = None
) -> Iterator[None]:
    """``PREFECT_API_URL`` (and the ``more`` variables) set in the environment while inside, for
    the processes started there; Prefect's settings in this process set to the API URL and
    ``settings`` (dotted names), for the flows inside and for the threads that do not inherit
    their context (:func:`_prefect_settings`)."""
    names = {"PREFECT_API_URL": url, **(more or {})}
    before = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    imported = "prefect.context" in sys.modules
    updates = {"api.url": url, **(settings or {})}
    try:
        with _prefect_settings(updates) if imported else contextlib.nullcontext():
            yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if not imported and "prefect.context" in sys.modules:
            # Prefect imported inside read the environment above: rebuilt from it as it is now.
            import prefect.context

            prefect.context.refresh_global_settings_context()


@contextlib.contextmanager
def _prefect_settings(updates: Mapping[Any, object]) -> Iterator[None]:
    """Prefect's settings with ``updates`` inside, both as the current context and as the
    process-wide settings (Prefect reads the environment once, at import; threads that do not
    inherit the flow's context, such as the Dask client's that resolves the futures of
    `--runner dask`, read the process-wide ones: without an API URL there they started a
    temporary server of their own). The process-wide settings are restored after, not
    rebuilt, as Prefect's own test harness restores them.

    Nothing is made if nothing changes. A new API URL makes one validated settings object
    (~50 ms): Prefect's validators derive the UI's URLs from it. Other settings (the version
    check, the heartbeats, the CA bundle), from which nothing is derived, are set on copies of
    the models on their paths (~0.1 ms): the case of a command that gave Prefect the URL at its
    import."""
    import prefect.context

    current = prefect.context.get_settings_context()
    prior = prefect.context.GLOBAL_SETTINGS_CONTEXT
    if all(
        _setting(held.settings, name) == value
        for held in (current, prior)
        for name, value in updates.items()
    ):
        yield
        return
    if "api.url" in updates and _setting(current.settings, "api.url") != updates["api.url"]:
        settings = current.settings.copy_with_update(updates=updates)
    else:
        settings = current.settings
        for name, value in updates.items():
            settings = _with_setting(settings, name.split("."), value)
    context = prefect.context.SettingsContext(profile=current.profile, settings=settings)
    prefect.context.GLOBAL_SETTINGS_CONTEXT = context
    try:
        with context:
            yield
    finally:
        prefect.context.GLOBAL_SETTINGS_CONTEXT = prior


def _setting(settings: object, name: str) -> object:
    for part in name.split("."):
        settings = getattr(settings, part)
    return settings


def _with_setting(model: Any, path: list[str], value: object) -> Any:
    """A copy of the settings ``model`` with the setting at ``path`` set to ``value`` (the models
    on the path copied, the others shared; not validated)."""
    head, *rest = path
    inner = _with_setting(getattr(model, head), rest, value) if rest else value
    return model.model_copy(update={head: inner})


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


def template_database(version: str | None = None) -> Path:
    """Where :func:`prepare` keeps the migrated empty database of a Prefect version (in the
    environment's prefix: it belongs to the installed Prefect, like its UI build)."""
    import importlib.metadata  # here: `make run`'s first step (start) never needs it (~30 ms)

    version = version or importlib.metadata.version("prefect")
    return Path(sys.prefix) / "share" / "verse-etl" / f"prefect-{version}.db"


def prepare() -> Path:
    """Migrate an empty Prefect database once and keep it as the template of new homes.

    Run by ``make setup``: the first server start on a new home then copies it instead of
    running every migration. It also registers the block types in it and writes Prefect's UI
    build (kept in the installed package for every later start).
    """
    target = template_database()
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="verse-etl-prefect-") as tmp:
        env = {
            k: v for k, v in os.environ.items() if "DATABASE" not in k and k != "PREFECT_API_URL"
        }
        env |= {
            "PREFECT_HOME": tmp,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        # What the server's start does on a new database, without serving: the migrations,
        # the block types, and (create_app) Prefect's UI build.
        code = (
            "import asyncio\n"
            "from prefect.server.api.server import create_app\n"
            "from prefect.server.database import provide_database_interface\n"
            "from prefect.server.models.block_registration import run_block_auto_registration\n"
            "db = provide_database_interface()\n"
            "async def main():\n"
            "    await db.create_db()\n"
            "    async with await db.session() as session:\n"
            "        await run_block_auto_registration(session=session)\n"
            "        await session.commit()\n"
            "    await (await db.engine()).dispose()\n"
            "asyncio.run(main())\n"
            "create_app(final=True)\n"
        )
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=600)
        with contextlib.closing(sqlite3.connect(Path(tmp) / DATABASE)) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the one file
        if not _migrated(Path(tmp) / DATABASE):
            raise PrefectApiError(
                f"{Path(tmp) / DATABASE}: the prepared Prefect database has no schema (expected "
                "an alembic revision and the block types); run `make setup` again"
            )
        partial = target.with_name(f".{target.name}.{os.getpid()}")
        shutil.copyfile(Path(tmp) / DATABASE, partial)
        os.replace(partial, target)
    return target


def _migrated(database: Path) -> bool:
    """Whether ``database`` holds Prefect's schema: an alembic revision and the block types."""
    try:
        # immutable: the template is only ever replaced whole (prepare), never written in place;
        # a plain read-only open of a WAL database left -shm and -wal files beside it.
        uri = f"file:{database}?mode=ro&immutable=1"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            revisions = db.execute("SELECT count(*) FROM alembic_version").fetchone()[0]
            return bool(revisions and db.execute("SELECT count(*) FROM block_type").fetchone()[0])
    except sqlite3.Error:
        return False


def _default_database(home: Path) -> bool:
    """Whether the server of ``home`` uses Prefect's default SQLite file in it: no database
    setting in the environment, and none in the home's profiles or the project's Prefect files
    (read as text: importing Prefect's settings here would delay the server)."""
    if any("DATABASE" in key for key in os.environ if key.startswith("PREFECT_")):
        return False
    for config in (home / "profiles.toml", Path("prefect.toml"), Path(".env")):
        with contextlib.suppress(OSError):
            if "DATABASE" in config.read_text().upper():
                return False
    return True


def _seed_database(home: Path) -> bool:
    """Copy the template database into a home that has none; returns whether it did."""
    template = template_database()
    database = home / DATABASE
    if database.exists() or not _migrated(template) or not _default_database(home):
        return False  # (a template without the schema would start a server on nothing)
    partial = home / f".{DATABASE}.{os.getpid()}"
    shutil.copyfile(template, partial)
    os.replace(partial, database)
    return True


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a live process has used, from /proc (0 when unknown)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def keep(home: Path, idle: float, port: int) -> int:
    """Run a local server for ``home`` on ``port`` until no process has leased it for ``idle``
    seconds."""
    started = time.monotonic()
    url = _url(port)
    prefect = str(Path(sys.executable).parent / "prefect")
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    env |= {f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in _IDLE_SERVICES}
    # The UI asks its /ui-settings where the API is: without these, the default port (4200),
    # not this server's, and the UI of a local server showed nothing.
    env |= {"PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port)}
    env.setdefault("PREFECT_UI_API_URL", url)
    seeded = _seed_database(home)
    if seeded:
        # The copy is migrated to this Prefect version and holds the block types already.
        env |= {
            "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false",
            "PREFECT_SERVER_REGISTER_BLOCKS_ON_START": "false",
            "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
        }
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
            time.sleep(0.1)
        warmed = _warm_up(url)  # before it is announced: no build waits on a cold server
        state = {"url": url, "keeper_pid": os.getpid(), "server_pid": server.pid}
        tmp = home / f".{STATE_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, home / STATE_FILE)
        _forget_starting(home)
        print(
            f"verse-etl: Prefect server {url} up in {time.monotonic() - started:.1f} s, "
            f"{_cpu_seconds(server.pid):.1f} s CPU (database in {home}"
            f"{', copied from the migrated template' if seeded else ''}; "
            f"{warmed} of {len(_WARM_UP) + len(_WARM_UP_GET)} warm-up requests answered)",
            flush=True,
        )
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
        _forget_starting(home)
        with _locked(home), contextlib.suppress(OSError):
            recorded = _recorded(home)
            if recorded is not None and recorded.keeper_pid == os.getpid():
                (home / STATE_FILE).unlink()
        cpu = _cpu_seconds(server.pid)
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        print(f"verse-etl: Prefect server {url} stopped ({cpu:.1f} s CPU in all)", flush=True)


def stop(home: Path, patience: float = 60.0) -> bool:
    """Stop the local server of ``home`` now (``make clean``); returns whether one ran."""
    recorded = _recorded(home)
    pids = [_starting_keeper(home), recorded.keeper_pid if recorded else None]
    keepers = [pid for pid in pids if pid is not None and _alive(pid)]
    for pid in keepers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + patience
    while any(_alive(pid) for pid in keepers) and time.monotonic() < deadline:
        time.sleep(0.2)
    return bool(keepers)


def _forget_starting(home: Path) -> None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        if json.loads((home / STARTING_FILE).read_text())["keeper_pid"] == os.getpid():
            (home / STARTING_FILE).unlink()


def main(argv: list[str]) -> int:
    """``keep HOME IDLE_SECONDS PORT`` (the keeper), ``prepare`` (make setup), ``start`` (make run:
    start the local server in the background unless an API is configured)."""
    if argv[:1] == ["keep"] and len(argv) == 4:
        return keep(Path(argv[1]), float(argv[2]), int(argv[3]))
    if argv == ["prepare"]:
        print(f"Prefect: migrated empty database in {prepare()}")
        return 0
    if argv == ["start"]:
        start_in_background()
        # A step of `make run` there for Prefect alone: all of its time is Prefect's.
        COST.add("server", process_seconds())
        print(COST.line("server start", process_seconds()), file=sys.stderr, flush=True)
        return 0
    if argv == ["stop"]:
        stop(local_home())
        return 0
    print(
        "usage: python -m verse_etl.flows.server keep HOME IDLE PORT | prepare | start | stop",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
