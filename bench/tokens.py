"""Tokens issued and verified per second (the token service in-process, SQLite).

Usage: .venv/bin/python bench/tokens.py [--seconds 5]

Issuance = client assertion verification (EdDSA) + jti replay insert + scope check
+ at+jwt signing + the token.issued audit entry (group commit). Verification = the
whole per-request check of DESIGN section 6 (signature, claims, revoked-jti lookup,
the live client registration). Each runs with 16 concurrent tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.db import migrate, open_database  # noqa: E402
from api.logging import configure_logging  # noqa: E402
from api.settings import load_settings  # noqa: E402
from tests.helpers.clients import TestClient  # noqa: E402
from tests.helpers.runtime import open_runtime  # noqa: E402
from vault.clock import SystemClock  # noqa: E402
from vault.service import Actor  # noqa: E402


async def _run(seconds: float, concurrency: int) -> None:
    configure_logging(level="warning")
    tmp = Path(tempfile.mkdtemp())
    settings = load_settings(
        {"ONCEVAULT_KEK_DIR": str(tmp / "keys")}, {}, data_dir_flag=str(tmp / "data")
    )
    database = open_database(settings.database)
    await database.start(create=True)
    await migrate(database)
    runtime = await open_runtime(settings, database, SystemClock())  # type: ignore[arg-type]
    client = TestClient("kbank")
    assert runtime.clients is not None and runtime.tokens is not None
    await runtime.clients.add(
        client_id="kbank",
        name="K",
        kind="agency",
        roles=["consumer"],
        jwks=client.jwks,
        approved=True,
        dpop_required=False,
        actor=Actor("operator", "bench"),
    )
    tokens = runtime.tokens
    issued: list[str] = []
    latencies: list[float] = []

    async def issuer(deadline: float) -> None:
        while time.perf_counter() < deadline:
            form = client.token_form(settings.issuer)
            started = time.perf_counter()
            response = await tokens.issue(form, dpop_proof=None, request_id=None)
            latencies.append(time.perf_counter() - started)
            issued.append(response.access_token)

    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(issuer(deadline) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    print(
        f"issue   {len(issued) / elapsed:8.0f} tokens/s  p50 {statistics.median(latencies) * 1000:6.2f} ms"
        f"  p99 {sorted(latencies)[int(len(latencies) * 0.99)] * 1000:6.2f} ms  (n={len(issued)})"
    )

    verified = 0
    vlat: list[float] = []
    header = f"Bearer {issued[-1]}"

    async def verifier(deadline: float) -> None:
        nonlocal verified
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            await tokens.verify(
                header, dpop_proof=None, htm="GET", htu=settings.issuer + "/v1/data"
            )
            vlat.append(time.perf_counter() - t0)
            verified += 1

    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(verifier(deadline) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    print(
        f"verify  {verified / elapsed:8.0f} tokens/s  p50 {statistics.median(vlat) * 1000:6.2f} ms"
        f"  p99 {sorted(vlat)[int(len(vlat) * 0.99)] * 1000:6.2f} ms  (n={verified})"
    )
    await runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(_run(args.seconds, args.concurrency))


if __name__ == "__main__":
    main()
