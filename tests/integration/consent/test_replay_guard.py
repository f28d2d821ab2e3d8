"""Single-use identifiers (DPoP proofs, client assertions), on both engines: a second
use is refused whatever the sweeping, and expired rows are swept at most every
``REPLAY_SWEEP_SECONDS`` per process (not once per use: one statement less per DPoP
read)."""

from __future__ import annotations

import pytest

from consent.repository import REPLAY_SWEEP_SECONDS, ReplayRepository
from vault.storage import Database

NOW = 1_800_000_000


async def jtis(database: Database) -> set[str]:
    return {str(r["jti"]) for r in await database.fetch("SELECT jti FROM replay_guard")}


async def test_a_second_use_is_refused_before_and_after_a_sweep(database: Database) -> None:
    guard = ReplayRepository(database)
    assert await guard.use_once("dpop:a", "j1", NOW + 60, NOW)
    assert not await guard.use_once("dpop:a", "j1", NOW + 60, NOW)
    assert await guard.use_once("dpop:b", "j1", NOW + 60, NOW)  # another scope
    later = NOW + REPLAY_SWEEP_SECONDS + 1  # a sweep runs; j1 has not expired
    assert await guard.use_once("dpop:a", "j2", later + 60, later)
    assert not await guard.use_once("dpop:a", "j1", NOW + 60, later)


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
    assert await guard.use_once("dpop:a", "old", NOW + 1, NOW)
    for second in range(REPLAY_SWEEP_SECONDS):
        assert await guard.use_once("dpop:a", f"j{second}", NOW + 300, NOW + second)
    assert len(sweeps) == 1  # the first use swept; the next ones, within the interval, did not
    # Past the interval and past "old"'s expiry (+60 s of grace): the next use sweeps it.
    late = NOW + 1 + 61
    assert late >= NOW + REPLAY_SWEEP_SECONDS
    assert "old" in await jtis(database)
    assert await guard.use_once("dpop:a", "new", late + 60, late)
    assert len(sweeps) == 2
    assert "old" not in await jtis(database)
    assert {"new", "j0"} <= await jtis(database)
