"""Fixtures for the citizen pages: the app in-process, a real server, and Debian's Chromium.

* ``site``: ``create_app`` plus :func:`api.web.web_router` registered with
  ``app.register`` (until ``create_app`` mounts it), over httpx's ASGI transport on
  the test's event loop, with registered clients and a ``sign_in`` shortcut that
  mints the same sealed session cookie ``/my/callback`` sets.
* ``served``: a data dir made by ``oncevault init``, clients added by
  ``oncevault clients add``, and ``oncevault serve`` on a free loopback port.
* ``browser``: Playwright for Python driving ``/usr/bin/chromium`` (never a downloaded
  browser), headless, with the flags from PITFALLS.md and a fresh user-data-dir.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar

from api.app import create_app
from api.runtime import Runtime
from api.settings import Settings
from api.web import web_router
from api.web.config import load_web_config
from api.web.session import SESSION_COOKIE, Sealer, Session, load_or_create_secret
from tests.e2e.test_oauth_server import register as register_cli
from tests.helpers.clients import TestClient, register
from tests.helpers.lifespan import lifespan
from tests.helpers.runtime import local_settings, open_runtime
from tests.helpers.server import ServerProcess, clean_env, run_cli
from vault.clock import Clock, ManualClock
from vault.models import Subject
from vault.storage import Database

ISSUER = "http://testserver.local"
CHROMIUM = "/usr/bin/chromium"
PLAYWRIGHT_VERSION = "1.65.2"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CITIZEN_NID = "900101-1234567"
OTHER_NID = "850505-2345678"


def make_web_app(settings: Settings, *, database: Database | None = None) -> Litestar:
    """``create_app`` with the ``/my`` router registered after creation (until
    ``create_app`` mounts it itself; the router reads the process environment either way)."""
    app = create_app(settings, database=database)
    if not any(route.path == "/my" or route.path.startswith("/my/") for route in app.routes):
        app.register(web_router(settings))
    return app


# --------------------------------------------------------------------------
# In-process
# --------------------------------------------------------------------------


@dataclass
class Site:
    http: httpx.AsyncClient
    runtime: Runtime
    settings: Settings
    clock: Clock
    clients: dict[str, TestClient] = field(default_factory=dict)

    async def register(self, client: TestClient) -> TestClient:
        self.clients[client.client_id] = await register(self.runtime, client)
        return client

    async def citizen_id(self, nid: str) -> str:
        assert self.runtime.vault is not None
        return await self.runtime.vault.resolve(Subject.parse({"nid": nid}))

    async def session_cookie(self, nid: str, *, fresh: bool = True) -> tuple[str, Session]:
        """The sealed cookie ``/my/callback`` would set after signing ``nid`` in."""
        config = load_web_config(self.settings, {})
        sealer = Sealer(load_or_create_secret(config.session_key_file), issuer=config.issuer)
        now = self.clock.now_ms() // 1000
        session = Session.start(
            await self.citizen_id(nid), auth_time=now if fresh else now - 3600, now=now
        )
        return sealer.seal("session", session.as_json()), session

    async def sign_in(self, nid: str, *, fresh: bool = True) -> Session:
        value, session = await self.session_cookie(nid, fresh=fresh)
        self.http.cookies.set(SESSION_COOKIE, value, domain="testserver.local", path="/my")
        return session

    async def token(self, client_id: str, **kw: Any) -> str:
        form = self.clients[client_id].token_form(self.settings.issuer, **kw)
        response = await self.http.post("/oauth/token", data=form)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def request_consent(self, nid: str, **overrides: Any) -> dict[str, Any]:
        body = {
            "subject": {"nid": nid},
            "purpose": "mortgage_screening",
            "items": [{"type": "income_certificate", "fields": ["year", "total_income"]}],
            "access": "standing",
            "valid_days": 30,
            **overrides,
        }
        token = await self.token("kbank")
        response = await self.http.post(
            "/v1/consent-requests", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result


@pytest.fixture
async def site(database: Database, tmp_path: Path) -> AsyncIterator[Site]:
    settings = local_settings(tmp_path, ONCEVAULT_ISSUER=ISSUER, ONCEVAULT_DEV_IDP="1")
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    clock = ManualClock()
    seed = await open_runtime(settings, database, clock)
    await seed.close(database=False)
    app = make_web_app(settings, database=database)
    transport = httpx.ASGITransport(app=app)
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=transport, base_url=ISSUER) as http,
    ):
        runtime: Runtime = app.state.runtime
        found = Site(http=http, runtime=runtime, settings=settings, clock=runtime.clock)
        await found.register(TestClient("kbank", roles=("consumer",)))
        await found.register(TestClient("nts", alg="ES256", roles=("issuer",)))
        yield found


# --------------------------------------------------------------------------
# A real server
# --------------------------------------------------------------------------


@dataclass
class Served:
    server: ServerProcess
    data_dir: Path
    clients: dict[str, TestClient]

    @property
    def base(self) -> str:
        return self.server.base_url

    def token(self, client_id: str, **kw: Any) -> str:
        form = self.clients[client_id].token_form(self.base, **kw)
        response = httpx.post(self.base + "/oauth/token", data=form, timeout=10)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def bearer(self, client_id: str, **kw: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(client_id, **kw)}"}


def server_env() -> dict[str, str]:
    """The server's environment (create_app mounts the /my pages itself)."""
    return clean_env()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("web-server") / "data"
    init = run_cli("init", "--data-dir", str(data_dir))
    assert init.returncode == 0, init.stderr
    clients = {
        "kbank": register_cli(data_dir, TestClient("kbank", roles=("consumer",))),
        "nts": register_cli(data_dir, TestClient("nts", alg="ES256", roles=("issuer",))),
        "court": register_cli(data_dir, TestClient("court", roles=("issuer",))),
    }
    with ServerProcess(data_dir, workers=2, env=server_env()) as server:
        yield Served(server=server, data_dir=data_dir, clients=clients)


# --------------------------------------------------------------------------
# Debian's Chromium through Playwright
# --------------------------------------------------------------------------


def _ensure_chromium() -> str | None:
    """``None`` when /usr/bin/chromium (and a Nanum font) is there, else why it is not."""
    if not Path(CHROMIUM).exists() and shutil.which("apt-get") and os.geteuid() == 0:
        # `make test` runs `make browser-deps` first; this covers a bare `pytest` run.
        subprocess.run(
            "apt-get update -q && apt-get install -y -q chromium fonts-nanum",
            shell=True,
            check=False,
            capture_output=True,
            timeout=900,
        )
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing and could not be installed (run `make browser-deps`)"
    return None


_BROWSER_VERSION: list[str] = []


def chromium_version() -> str:
    if not _BROWSER_VERSION:
        done = subprocess.run(
            [CHROMIUM, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        _BROWSER_VERSION.append(done.stdout.strip() or done.stderr.strip() or "unknown")
    return _BROWSER_VERSION[0]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _BROWSER_VERSION:
        terminalreporter.write_line(
            f"browser tests: {_BROWSER_VERSION[0]} via Playwright {PLAYWRIGHT_VERSION} "
            f"({CHROMIUM}); screenshots in {ARTIFACTS}"
        )


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Any]:
    """Playwright's sync driver, for one module at a time: while it runs, it holds an
    event loop on this thread that the async tests of later modules must not meet."""
    reason = _ensure_chromium()
    if reason is not None:
        pytest.skip(reason)
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason=f"pip install playwright=={PLAYWRIGHT_VERSION}"
    )
    version = chromium_version()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "browser-version.txt").write_text(version + "\n")
    print(f"\nbrowser: {version} (playwright {PLAYWRIGHT_VERSION})")
    with sync_api.sync_playwright() as driver:
        yield driver


@pytest.fixture
def browser(playwright_driver: Any) -> Iterator[Any]:
    """A fresh Chromium profile (its own user-data-dir); yields the browser context."""
    profile = tempfile.mkdtemp(prefix="oncevault-chromium-")
    context = playwright_driver.chromium.launch_persistent_context(
        profile,
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_FLAGS,
        locale="ko-KR",
        timezone_id="Asia/Seoul",
        viewport={"width": 1100, "height": 900},
    )
    context.set_default_timeout(15_000)
    try:
        yield context
    finally:
        context.close()
        shutil.rmtree(profile, ignore_errors=True)
