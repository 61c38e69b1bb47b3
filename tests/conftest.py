"""Shared fixtures: real databases (a SQLite file; a real PostgreSQL server), fake peers, a fake clock."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from typer.testing import Result

from hybridflow.config import CONFIG_ENV, ENV_PREFIX, FIELDS, Settings
from hybridflow.crypto import generate_key
from hybridflow.service import Service, TenantChanges
from hybridflow.store import Store
from tests.support.cli import invoke
from tests.support.fakes import FakeEvolution, FakeOllama, fake_evolution, fake_ollama, notify_receiver  # noqa: F401
from tests.support.pg import Cluster, start_cluster, temporary_database

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


class FakeClock:
    """A clock the test moves by hand: ``clock.advance(hours=2)``."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture(autouse=True)
def _default_logging() -> Iterator[None]:
    """A CLI test configures logging for its own streams; every test starts from structlog's defaults."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[str | None]:
    """A PostgreSQL server URL: $HYBRIDFLOW_TEST_POSTGRES_URL, else a throwaway cluster, else None.

    None only outside CI: with CI=true, missing PostgreSQL binaries fail the tests that need a server.
    """
    given = os.environ.get("HYBRIDFLOW_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    try:
        cluster: Cluster | None = start_cluster()
    except FileNotFoundError:
        if IN_CI:
            pytest.fail("CI=true but the PostgreSQL binaries (initdb, pg_ctl) are missing: .ci/run installs them")
        cluster = None
    if cluster is None:
        yield None
        return
    try:
        yield cluster.url
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def pg_server(pg_cluster: str | None) -> str:
    """The PostgreSQL server's URL; the one place a test is skipped for want of one (never under CI=true)."""
    if pg_cluster is None:
        assert not IN_CI, "under CI=true pg_cluster fails instead of giving None"
        pytest.skip("PostgreSQL binaries not found (install postgresql or set HYBRIDFLOW_TEST_POSTGRES_URL)")
    return pg_cluster


@pytest.fixture
def own_pg_cluster() -> Iterator[Cluster]:
    """A PostgreSQL server of this test alone, which it may stop and start."""
    try:
        cluster = start_cluster()
    except FileNotFoundError:
        if IN_CI:
            pytest.fail("CI=true but the PostgreSQL binaries (initdb, pg_ctl) are missing")
        pytest.skip("PostgreSQL binaries not found")
    yield cluster
    cluster.destroy()


@pytest.fixture
async def postgres_url(pg_server: str) -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    async with temporary_database(pg_server) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database on each backend: a SQLite file, then a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hybridflow.db'}"
        return
    async with temporary_database(request.getfixturevalue("pg_server")) as url:
        yield url


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium and Playwright for Python, or a skip with the reason; under CI=true a missing browser
    fails instead (.ci/run installs it)."""
    from tests.support.browser import chromium

    found = chromium()
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        found = None
    if found is None:
        if IN_CI:
            pytest.fail("CI=true but Chromium or Playwright is missing: .ci/run installs chromium with apt-get and "
                        "playwright with the test extra")
        pytest.skip("Chromium (apt-get install chromium) or Playwright (pip install -e '.[test]') not found")
    return found


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty working directory and no HYBRIDFLOW_* settings from the developer's shell."""
    for key in FIELDS:
        monkeypatch.delenv(ENV_PREFIX + key.upper(), raising=False)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(database_url: str, fake_evolution: FakeEvolution, fake_ollama: FakeOllama) -> Settings:
    return Settings(
        database_url=database_url, secret_key=generate_key(), evolution_url=fake_evolution.url,
        ollama_host=fake_ollama.url, ollama_timeout=5.0, evolution_timeout=2.0, debounce=0.0,
        admin_token="admin-token", log_format="console")


@pytest.fixture
async def service(settings: Settings, clock: FakeClock) -> AsyncIterator[Service]:
    async with Service.open(settings, clock=clock) as svc:
        yield svc


EVOLUTION_API_KEY = "instance-token-123"


@pytest.fixture
async def tenant(service: Service):  # type: ignore[no-untyped-def]
    """The tenant of the real payloads' instance, with the fake Evolution's key."""
    return await service.add_tenant("test-instance", TenantChanges(
        prompt="You are the assistant of Padaria Boa. Answer briefly.", api_key=EVOLUTION_API_KEY))


@pytest.fixture
async def app_client(service: Service, tenant, fake_evolution: FakeEvolution, aiohttp_client):  # type: ignore[no-untyped-def]
    """`serve` in-process: webhook, reply worker and sweep; Evolution posts its echo back to us, as it does."""
    from hybridflow.web import create_app

    fake_evolution.api_key = EVOLUTION_API_KEY
    fake_evolution.instances = {"test-instance"}
    client = await aiohttp_client(create_app(service))
    fake_evolution.echo_webhook_url = str(client.make_url("/webhooks/evolution"))
    return client


def with_settings(settings: Settings, **changes: object) -> Settings:
    return replace(settings, **changes)


async def _create_schema(database_url: str) -> None:
    store = Store(database_url)
    try:
        await store.create_schema()
    finally:
        await store.dispose()


@pytest.fixture
def hf(database_url: str) -> Callable[..., Result]:
    """Run `hybridflow ARGS...` in-process against the test database (created, with its schema, as `serve` or
    `migrate` would have); keyword arguments become HYBRIDFLOW_*."""
    secret_key = generate_key()
    asyncio.run(_create_schema(database_url))

    def run(*args: str, **settings: str) -> Result:
        env = {"HYBRIDFLOW_DATABASE_URL": database_url, "HYBRIDFLOW_SECRET_KEY": secret_key}
        env.update({ENV_PREFIX + name.upper(): value for name, value in settings.items()})
        return invoke(*args, env=env)

    return run
