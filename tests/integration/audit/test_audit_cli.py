"""The operator's view: `oncevault audit verify/export` and `serve` refusing a rollback."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import httpx

from tests import independent_verifier as ref
from tests.helpers.server import ServerProcess, run_cli


def _init(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    assert run_cli("init", "--data-dir", str(data_dir)).returncode == 0
    for _ in range(2):  # more entries: 3 signing keys rotated each time
        result = run_cli("keys", "rotate", "--signing", "--data-dir", str(data_dir))
        assert result.returncode == 0, result.stderr
    return data_dir


def _sql(data_dir: Path, statement: str, *args: object) -> None:
    with sqlite3.connect(data_dir / "oncevault.sqlite") as connection:
        connection.execute(statement, args)


def test_verify_passes_then_names_the_first_bad_seq(tmp_path: Path) -> None:
    data_dir = _init(tmp_path)
    ok = run_cli("audit", "verify", "--data-dir", str(data_dir))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "verified tree size 10"
    _sql(data_dir, "UPDATE audit_entries SET actor_id = 'someone' WHERE seq = 6")
    bad = run_cli("audit", "verify", "--data-dir", str(data_dir))
    assert bad.returncode == 1
    assert "first bad seq 6" in bad.stderr


def test_export_verify_and_trusted_checkpoint(tmp_path: Path) -> None:
    data_dir = _init(tmp_path)
    export = tmp_path / "log.jsonl"
    assert run_cli("audit", "export", str(export), "--data-dir", str(data_dir)).returncode == 0
    lines = export.read_text().splitlines()
    assert json.loads(lines[0])["seq"] == 0
    assert "jwks" in json.loads(lines[-1])
    checkpoints = [json.loads(line)["checkpoint"] for line in lines if '"checkpoint"' in line]
    assert checkpoints, "init makes the first checkpoint"
    ok = run_cli("audit", "verify", "--export", str(export))
    assert ok.returncode == 0, ok.stderr

    # Tampering inside the export file is found.
    tampered = tmp_path / "tampered.jsonl"
    entry = json.loads(lines[3])
    entry["entry"]["actor"]["id"] = "mallory"
    tampered.write_text("\n".join([*lines[:3], json.dumps(entry), *lines[4:]]) + "\n")
    bad = run_cli("audit", "verify", "--export", str(tampered))
    assert bad.returncode == 1
    assert "first bad seq 3" in bad.stderr

    # A checkpoint kept by an auditor (the GET /v1/audit/checkpoint shape).
    trusted = tmp_path / "trusted.json"
    latest = max(checkpoints, key=lambda c: c["tree_size"])
    trusted.write_text(json.dumps(latest))
    size = latest["tree_size"]
    # Truncate rows together with their stored checkpoints: verify alone passes...
    cut = size - 3
    _sql(data_dir, "DELETE FROM audit_entries WHERE seq >= ?", cut)
    _sql(data_dir, "DELETE FROM audit_checkpoints WHERE tree_size > ?", cut)
    _sql(data_dir, "DELETE FROM audit_nodes WHERE idx * (1 << level) + (1 << level) > ?", cut)
    root = _root(data_dir, cut)
    _sql(data_dir, "UPDATE audit_state SET size = ?, root_hash = ?", cut, root)
    alone = run_cli("audit", "verify", "--data-dir", str(data_dir))
    assert alone.returncode == 0, alone.stderr
    # ...but not against the checkpoint the auditor kept.
    caught = run_cli(
        "audit", "verify", "--data-dir", str(data_dir), "--trusted-checkpoint", str(trusted)
    )
    assert caught.returncode == 1
    assert f"bad checkpoint at size {size}" in caught.stderr


def _root(data_dir: Path, size: int) -> bytes:
    with sqlite3.connect(data_dir / "oncevault.sqlite") as connection:
        leaves = [
            row[0]
            for row in connection.execute(
                "SELECT leaf FROM audit_entries WHERE seq < ? ORDER BY seq", (size,)
            )
        ]
    return ref.root_from_leaves(leaves)


def test_serve_refuses_a_rolled_back_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert run_cli("init", "--data-dir", str(data_dir)).returncode == 0
    backup = tmp_path / "backup.sqlite"
    shutil.copy(data_dir / "oncevault.sqlite", backup)
    assert run_cli("keys", "rotate", "--signing", "--data-dir", str(data_dir)).returncode == 0
    with ServerProcess(data_dir):
        pass  # start-up checkpoints the grown log and copies it outside the database
    for suffix in ("-wal", "-shm"):
        (data_dir / f"oncevault.sqlite{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, data_dir / "oncevault.sqlite")

    refused = run_cli("serve", "--data-dir", str(data_dir), "--port", "1")
    assert refused.returncode == 1
    assert "rollback" in refused.stderr
    assert "--accept-rollback" in refused.stderr

    with ServerProcess(data_dir, extra_args=("--accept-rollback",)) as server:
        assert httpx.get(server.base_url + "/healthz").status_code == 200
    assert "rollback accepted" in server.log()
    verified = run_cli("audit", "verify", "--data-dir", str(data_dir))
    assert verified.returncode == 0, verified.stderr
    # Started normally again: no refusal now.
    with ServerProcess(data_dir) as again:
        assert httpx.get(again.base_url + "/healthz").status_code == 200
