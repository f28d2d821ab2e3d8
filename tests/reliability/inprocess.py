"""The app in-process (httpx over ASGI) on SQLite, for the twins: same workloads, same
checks as against the real server, but guards can be monkeypatched out. `served` puts
the same app object on a loopback port (uvicorn in the test's event loop) for an
outside client such as schemathesis."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from litestar import Litestar

from api.app import create_app
from api.db import migrate, open_database
from api.runtime import Runtime
from api.settings import DatabaseURL
from tests.helpers.clients import TestClient, register
from tests.helpers.lifespan import lifespan
from tests.helpers.runtime import local_settings, open_runtime
from tests.reliability.stack import DEFAULT_CLIENTS, TestIdP
from vault.clock import ManualClock
from vault.storage import Database

ISSUER = "http://reliability.local"


@dataclass
class Local:
    """A deployment (see :class:`tests.reliability.scenario.Deployment`) in this process."""

    http: httpx.AsyncClient
    app: Litestar
    runtime: Runtime
    database: Database
    clients: dict[str, TestClient]
    idp: TestIdP
    kek_dir: Path

    @property
    def base_url(self) -> str:
        return ISSUER

    async def entries(self) -> dict[int, dict[str, object]]:
        import json  # noqa: PLC0415

        rows = await self.database.fetch("SELECT seq, leaf FROM audit_entries ORDER BY seq")
        return {int(r["seq"]): json.loads(bytes(r["leaf"])) for r in rows}


@asynccontextmanager
async def local_platform(tmp_path: Path, **env: str) -> AsyncIterator[Local]:
    """The app in this process on a migrated SQLite file (``env``: more settings)."""
    idp = TestIdP()
    settings = local_settings(
        tmp_path, ONCEVAULT_ISSUER=ISSUER, **idp.env(tmp_path / "idp-jwks.json"), **env
    )
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = tmp_path / "oncevault.sqlite"
    database = open_database(
        DatabaseURL(dialect="sqlite", url=f"sqlite:///{path}", sqlite_path=path)
    )
    await database.start(create=True)
    try:
        await migrate(database)
        seed = await open_runtime(settings, database, ManualClock())
        await seed.close(database=False)
        app = create_app(settings, database=database)
        transport = httpx.ASGITransport(app=app)
        async with (
            lifespan(app),
            httpx.AsyncClient(transport=transport, base_url=ISSUER, timeout=30) as http,
        ):
            runtime: Runtime = app.state.runtime
            assert runtime.clients is not None
            clients: dict[str, TestClient] = {}
            for client_id, roles in DEFAULT_CLIENTS:
                clients[client_id] = await register(runtime, TestClient(client_id, roles=roles))
            yield Local(
                http=http,
                app=app,
                runtime=runtime,
                database=database,
                clients=clients,
                idp=idp,
                kek_dir=settings.kek_dir,
            )
    finally:
        await database.close()


@asynccontextmanager
async def served(app: Litestar) -> AsyncIterator[str]:
    """The (already started) app on a free loopback port, served from this event loop so
    monkeypatched guards apply; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
