"""Single-use identifiers (DPoP proofs, client assertions), on both engines: a second
use is refused whatever the sweeping, and expired rows are swept at most every
``REPLAY_SWEEP_SECONDS`` per process (not once per use: one statement less per DPoP
read). Times are epoch milliseconds, as the token service passes them."""

from __future__ import annotations

import pytest

from consent.repository import REPLAY_SWEEP_SECONDS, ReplayRepository
from vault.storage import Database

NOW = 1_800_000_000_000  # ms
SECOND = 1000
INTERVAL = REPLAY_SWEEP_SECONDS * SECOND


async def jtis(database: Database) -> set[str]:
    return {str(r["jti"]) for r in await database.fetch("SELECT jti FROM replay_guard")}


async def test_a_second_use_is_refused_before_and_after_a_sweep(database: Database) -> None:
    guard = ReplayRepository(database)
    expires = NOW + 90 * SECOND
    assert await guard.use_once("dpop:a", "j1", expires, NOW)
    assert not await guard.use_once("dpop:a", "j1", expires, NOW)
    assert await guard.use_once("dpop:b", "j1", expires, NOW)  # another scope
    later = NOW + INTERVAL + SECOND  # a sweep runs; j1 has not expired
    assert await guard.use_once("dpop:a", "j2", later + 90 * SECOND, later)
    assert not await guard.use_once("dpop:a", "j1", expires, later)


async def test_expired_rows_are_swept_at_most_every_interval(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweeps: list[str] = []
    execute = database.execute

    async def counting(sql: str, *args: object) -> None:
        if sql.startswith("DELETE FROM replay_guard"):
            sweeps.append(sql)
        await execute(sql, *args)

    monkeypatch.setattr(database, "execute", counting)
    guard = ReplayRepository(database)
    assert await guard.use_once("dpop:a", "old", NOW + SECOND, NOW)
    for second in range(REPLAY_SWEEP_SECONDS):
        at = NOW + second * SECOND
        assert await guard.use_once("dpop:a", f"j{second}", NOW + 300 * SECOND, at)
    assert len(sweeps) == 1  # the first use swept; the next ones, within the interval, did not
    assert "old" in await jtis(database)  # expired at NOW + 1 s, not swept yet
    late = NOW + INTERVAL
    assert await guard.use_once("dpop:a", "new", late + 90 * SECOND, late)
    assert len(sweeps) == 2
    assert "old" not in await jtis(database)
    assert {"new", "j0"} <= await jtis(database)
