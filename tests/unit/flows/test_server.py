"""The local Prefect server's cheap parts: a new home gets the migrated template database (only
when it would use Prefect's default SQLite file), and no server is started early when the user
configured an API."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
from verse_etl.flows import server


def _database(path: Path, schema: bool = True) -> Path:
    with contextlib.closing(sqlite3.connect(path)) as db:
        if schema:
            db.execute("CREATE TABLE alembic_version (version_num TEXT)")
            db.execute("INSERT INTO alembic_version VALUES ('rev')")
            db.execute("CREATE TABLE block_type (name TEXT)")
            db.execute("INSERT INTO block_type VALUES ('webhook')")
        db.execute("CREATE TABLE IF NOT EXISTS marker (x INTEGER)")
        db.commit()
    return path


@pytest.fixture
def template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = _database(tmp_path / "prefect-0.0.db")
    monkeypatch.setattr(server, "template_database", lambda: path)
    for key in ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    return path


def test_a_new_home_gets_the_template_database(template: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert server._seed_database(home)
    assert (home / "prefect.db").read_bytes() == template.read_bytes()
    (home / "prefect.db").write_bytes(b"runs")
    assert not server._seed_database(home)  # a home with runs keeps them
    assert (home / "prefect.db").read_bytes() == b"runs"


def test_reading_the_template_leaves_nothing_beside_it(template: Path, tmp_path: Path) -> None:
    # Prefect's databases are in WAL mode: a read-only open of one made its -shm and -wal files.
    with contextlib.closing(sqlite3.connect(template)) as db:
        db.execute("PRAGMA journal_mode=WAL")
    home = tmp_path / "home"
    home.mkdir()
    assert server._seed_database(home)
    assert [p.name for p in template.parent.glob(f"{template.name}*")] == [template.name]


def test_a_template_without_the_schema_is_never_copied(template: Path, tmp_path: Path) -> None:
    # e.g. a setup interrupted while it prepared it: the server would start on no tables.
    template.unlink()
    _database(template, schema=False)
    home = tmp_path / "home"
    home.mkdir()
    assert not server._seed_database(home)
    assert not (home / "prefect.db").exists()


@pytest.mark.parametrize("where", ["environment", "profile"])
def test_a_configured_database_is_never_seeded(
    where: str, template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    url = "postgresql+asyncpg://prefect@db/prefect"
    if where == "environment":
        monkeypatch.setenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", url)
    else:
        (home / "profiles.toml").write_text(
            f'active = "x"\n[profiles.x]\nPREFECT_API_DATABASE_CONNECTION_URL = "{url}"\n'
        )
    assert not server._seed_database(home)
    assert not (home / "prefect.db").exists()


def test_no_early_server_when_an_api_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("PREFECT_HOME", str(home))
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert not server.start_in_background(home)
    monkeypatch.delenv("PREFECT_API_URL")
    (home / "profiles.toml").write_text(
        'active = "team"\n[profiles.team]\nPREFECT_API_URL = "http://team.invalid/api"\n'
    )
    assert not server.start_in_background(home)
    assert not (home / server.STARTING_FILE).exists()
    (home / "profiles.toml").unlink()
    # An API set in Prefect's settings of this process (a command run in-process, as in tests).
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert not server.start_in_background(home)
    assert not (home / server.STARTING_FILE).exists()


def test_threads_without_the_flows_context_see_the_api_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # The Dask client's threads resolve `--runner dask` futures outside the flow's context:
    # they read Prefect's process-wide settings, which must follow the exported API (without
    # it they started a temporary server of their own).
    import threading

    from prefect.settings import get_current_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    url = "http://127.0.0.1:9/api"
    seen: list[str | None] = []

    def look() -> None:
        seen.append(get_current_settings().api.url)

    with server._exported(url):
        thread = threading.Thread(target=look)
        thread.start()
        thread.join()
    thread = threading.Thread(target=look)
    thread.start()
    thread.join()
    assert seen == [url, None]


def test_the_settings_of_a_local_server_are_made_once_and_restored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The API URL, no version check and no heartbeats, in one settings object seen by the flow's
    # context and by other threads; the settings as they were after. Nothing is rebuilt when
    # the settings hold those values already (a configured API).
    import threading

    import prefect.context
    from prefect.settings import get_current_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    url = "http://127.0.0.1:9/api"
    local = {"client.server_version_check_enabled": False, "flows.heartbeat_frequency": None}
    before = prefect.context.GLOBAL_SETTINGS_CONTEXT
    seen: list[tuple[object, ...]] = []

    def look() -> None:
        s = get_current_settings()
        seen.append((s.api.url, s.client.server_version_check_enabled, s.flows.heartbeat_frequency))

    with server._exported(url, settings=local):
        assert get_current_settings() is prefect.context.GLOBAL_SETTINGS_CONTEXT.settings
        look()
        thread = threading.Thread(target=look)
        thread.start()
        thread.join()
        inside = prefect.context.GLOBAL_SETTINGS_CONTEXT
        with server._exported(url, settings=local):
            assert prefect.context.GLOBAL_SETTINGS_CONTEXT is inside  # nothing to change
    assert prefect.context.GLOBAL_SETTINGS_CONTEXT is before
    assert seen == [(url, False, None)] * 2
    assert (
        get_current_settings().flows.heartbeat_frequency
        == before.settings.flows.heartbeat_frequency
    )


def test_settings_that_derive_nothing_are_set_without_a_validated_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A command that gave Prefect the local server's URL at its import: only the version check
    # and the heartbeats are left to set, on copies of their models (a validated settings
    # object is ~50 ms of the critical path); the UI's URLs derived from the API URL hold.
    import prefect.context
    from prefect.settings import PREFECT_API_URL, Settings, get_current_settings, temporary_settings

    url = "http://127.0.0.1:9/api"
    local = {"client.server_version_check_enabled": False, "flows.heartbeat_frequency": None}
    with temporary_settings(updates={PREFECT_API_URL: url}):
        before = get_current_settings()

        def validated(*args: object, **kwargs: object) -> None:
            raise AssertionError("a validated settings object was made")

        monkeypatch.setattr(Settings, "copy_with_update", validated)
        with server._exported(url, settings=local):
            now = get_current_settings()
            assert now is prefect.context.GLOBAL_SETTINGS_CONTEXT.settings
            assert (now.api.url, now.ui_url, now.server.ui.api_url) == (
                url,
                before.ui_url,
                before.server.ui.api_url,
            )
            assert not now.client.server_version_check_enabled
            assert now.flows.heartbeat_frequency is None
            assert now.flows.default_retries == before.flows.default_retries
        assert get_current_settings() is before
        assert before.flows.heartbeat_frequency is not None  # the copies left it alone


_PRESET_PROBE = """
import json, os, sys
from verse_etl.flows import server
server._preset_local_api()
from prefect.settings import get_current_settings
seen = {"url": get_current_settings().api.url, "configured": server.configured_api()}
with server._exported(sys.argv[1], {server.LOCAL_API: sys.argv[1]}, {"flows.heartbeat_frequency": None}):
    s = get_current_settings()
    seen["inside"] = [s.api.url, s.ui_url, s.flows.heartbeat_frequency]
print(json.dumps(seen))
"""


@pytest.mark.parametrize("user_api", [None, "http://team.invalid:4200/api"])
def test_prefect_is_given_the_local_servers_url_at_its_import(
    user_api: str | None, tmp_path: Path
) -> None:
    # A keeper announced as starting (a live pid; its server at a URL): a command imports Prefect
    # with that URL, marked as the local server's (not an API the user configured). When the
    # server came up elsewhere after all, Prefect's settings follow it, UI URL included. An API
    # the user set is never replaced.
    import json
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    announced, moved = "http://127.0.0.1:9/api", "http://127.0.0.1:10/api"
    keeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (home / server.STARTING_FILE).write_text(
            json.dumps({"keeper_pid": keeper.pid, "url": announced})
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
        env.pop(server.LOCAL_API, None)
        env |= {"PREFECT_HOME": str(home), "PYTHONPATH": str(Path(server.__file__).parents[1])}
        if user_api:
            env["PREFECT_API_URL"] = user_api
        probe = subprocess.run(
            [sys.executable, "-c", _PRESET_PROBE, moved],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        keeper.kill()
        keeper.wait()
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout.splitlines()[-1])
    if user_api:
        assert (seen["url"], seen["configured"]) == (user_api, user_api)
    else:
        assert (seen["url"], seen["configured"]) == (announced, None)
    assert seen["inside"] == [moved, moved.removesuffix("/api"), None]


def test_the_local_servers_clients_trust_one_certificate_of_their_own(tmp_path: Path) -> None:
    # The local server is plain HTTP: its clients' TLS context, never used, is built from one
    # certificate (not certifi's bundle), which signs no server: a TLS connection made with it
    # by mistake fails to verify instead of trusting anyone.
    import ssl

    home = tmp_path / "home"
    home.mkdir()
    ca = server._plain_http_ca(home)
    assert ca.parent == home
    context = ssl.create_default_context(cafile=str(ca))
    assert context.cert_store_stats()["x509_ca"] == 1
    (certificate,) = context.get_ca_certs()
    assert "trusts no server" in str(certificate["subject"])
    ca.write_text("tampered")
    assert server._plain_http_ca(home).read_text() == server._PLAIN_HTTP_CA  # written again
    assert [p.name for p in home.iterdir()] == [server.PLAIN_HTTP_CA_FILE]


def test_a_keeper_of_an_earlier_version_is_still_found_while_it_starts(tmp_path: Path) -> None:
    # Its file holds its pid alone: it is found (no second server is started on the same
    # database), and no URL is given to Prefect early.
    import os

    home = tmp_path / "home"
    home.mkdir()
    (home / server.STARTING_FILE).write_text(str(os.getpid()))
    assert server._starting_keeper(home) == os.getpid()
    assert server.announced_url(home) is None
    (home / server.STARTING_FILE).write_text('{"keeper_pid": 2147483646, "url": "http://x/api"}')
    assert server._starting_keeper(home) is None  # its keeper is gone
