"""The app in-process (Litestar test client) on each engine, with registered clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.runtime import Runtime
from api.settings import Settings
from tests.helpers.clients import TestClient, register
from tests.helpers.lifespan import lifespan
from tests.helpers.runtime import local_settings, open_runtime
from vault.clock import ManualClock
from vault.storage import Database

ISSUER = "http://testserver.local"


@dataclass
class Platform:
    http: httpx.AsyncClient
    runtime: Runtime
    settings: Settings
    clients: dict[str, TestClient]

    @property
    def issuer(self) -> str:
        return self.settings.issuer

    async def register(self, client: TestClient, *, approved: bool = True) -> TestClient:
        self.clients[client.client_id] = await register(self.runtime, client, approved=approved)
        return client

    def citizen(self, nid: str, *, fresh: bool = True) -> dict[str, str]:
        """Headers for a citizen signed in through the development IdP."""
        idp = self.runtime.dev_idp
        assert idp is not None
        now = self.runtime.clock.now_ms() // 1000
        token = idp.mint(nid, now=now, auth_time=now if fresh else now - 3600)
        return {"Authorization": f"Bearer {token}"}

    def limit_rate(self, per_minute: int) -> None:
        """Every client's API budget from now on (the limiter stays on)."""
        limiter = self.runtime.rate_limiter
        assert limiter is not None
        limiter.per_minute = per_minute

    async def token(self, client_id: str, **kw: object) -> str:
        response = await self.http.post(
            "/oauth/token", data=self.clients[client_id].token_form(self.issuer, **kw)
        )  # type: ignore[arg-type]
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])


@pytest.fixture
async def platform(database: Database, tmp_path: Path) -> AsyncIterator[Platform]:
    settings = local_settings(tmp_path, ONCEVAULT_ISSUER=ISSUER, ONCEVAULT_DEV_IDP="1")
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # init: keys and the first checkpoint (as `oncevault init` does)
    seed = await open_runtime(settings, database, ManualClock())
    await seed.close(database=False)
    app = create_app(settings, database=database)
    # The app runs on the test's own event loop (asyncpg pools are bound to one loop).
    transport = httpx.ASGITransport(app=app)
    async with lifespan(app), httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
        runtime: Runtime = app.state.runtime
        platform = Platform(http=http, runtime=runtime, settings=settings, clients={})
        await platform.register(TestClient("kbank", roles=("consumer",)))
        await platform.register(TestClient("nts", alg="ES256", roles=("issuer", "consumer")))
        yield platform
