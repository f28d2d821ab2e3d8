"""``oncevault init`` then ``serve``: health, readiness, refusals, graceful stop."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import time
from pathlib import Path

import httpx

from tests.helpers.server import ServerProcess, clean_env, run_cli


def test_init_creates_an_embedded_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = run_cli("init", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    assert "migrations" in result.stdout
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    dotenv = data_dir / ".env"
    assert "ONCEVAULT_DEV_IDP=1" in dotenv.read_text()
    assert stat.S_IMODE(dotenv.stat().st_mode) == 0o600
    assert (data_dir / "oncevault.sqlite").exists()
    again = run_cli("init", "--data-dir", str(data_dir))
    assert again.returncode == 0, again.stderr
    assert "migrations up to date" in again.stdout


def test_init_on_postgres_writes_no_dev_idp(tmp_path: Path) -> None:
    dsn = os.environ.get("ONCEVAULT_TEST_POSTGRES_DSN")
    data_dir = tmp_path / "data"
    if not dsn:
        # Without Postgres, a transit-less non-embedded setup is still non-embedded:
        env = clean_env(ONCEVAULT_DATABASE_URL="postgresql://127.0.0.1:1/none")
        result = run_cli("init", "--data-dir", str(data_dir), env=env)
        assert result.returncode == 1
        assert "database unreachable" in result.stderr
        return
    schema = "t_" + secrets.token_hex(6)
    psql = ["psql", dsn, "-q", "-c"]
    subprocess.run([*psql, f'CREATE SCHEMA "{schema}"'], check=True)
    try:
        # asyncpg passes unknown DSN query parameters on as server settings.
        env = clean_env(ONCEVAULT_DATABASE_URL=f"{dsn}?search_path={schema}")
        result = run_cli("init", "--data-dir", str(data_dir), env=env)
        assert result.returncode == 0, result.stderr
        assert not (data_dir / ".env").exists()
        tables = subprocess.run(
            [*psql, f"SELECT count(*) FROM pg_tables WHERE schemaname = '{schema}'", "-tA"],
            check=True,
            capture_output=True,
            text=True,
        )
        assert int(tables.stdout) >= 2
    finally:
        subprocess.run([*psql, f'DROP SCHEMA "{schema}" CASCADE'], check=True)


def test_serve_answers_health_and_readiness(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert run_cli("init", "--data-dir", str(data_dir)).returncode == 0
    server = ServerProcess(data_dir, workers=2)
    with server:
        health = httpx.get(server.base_url + "/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        assert health.headers["x-request-id"].startswith("req_")
        ready = httpx.get(server.base_url + "/readyz")
        assert ready.status_code == 200

        # The database goes away: readiness fails closed, liveness stays.
        for suffix in ("", "-wal", "-shm"):
            (data_dir / f"oncevault.sqlite{suffix}").unlink(missing_ok=True)
        gone = httpx.get(server.base_url + "/readyz")
        assert gone.status_code == 503
        assert gone.headers["content-type"].startswith("application/problem+json")
        assert gone.json()["code"] == "unavailable"
        assert "retry-after" in gone.headers
        assert httpx.get(server.base_url + "/healthz").status_code == 200
    assert server.process is not None
    assert server.process.returncode == 0, server.log()
    assert "app.stopped" in server.log()  # graceful shutdown ran the lifespan


WARNING = "warning: the KEK directory"


def test_serve_warns_when_the_kek_is_inside_the_data_dir(tmp_path: Path) -> None:
    """DESIGN section 4: in production the KEK lives outside the data dir and its
    backups, and ``serve`` warns when it does not (the embedded default does not)."""
    data_dir = tmp_path / "data"
    assert run_cli("init", "--data-dir", str(data_dir)).returncode == 0
    with ServerProcess(data_dir) as server:
        pass
    assert WARNING in server.log()
    assert "ONCEVAULT_KEK_DIR outside the data dir" in server.log()

    apart = tmp_path / "apart"
    env = clean_env(ONCEVAULT_KEK_DIR=str(tmp_path / "kek"))
    assert run_cli("init", "--data-dir", str(apart), env=env).returncode == 0
    assert list((tmp_path / "kek").glob("kek.*"))
    with ServerProcess(apart, env=env) as server:
        pass
    assert WARNING not in server.log()


def _readyz_answers(metrics: str) -> int:
    line = 'oncevault_http_requests_total{method="GET",route="/readyz",status="200"} '
    return sum(int(row[len(line) :]) for row in metrics.splitlines() if row.startswith(line))


def test_metrics_add_up_every_worker_and_start_at_zero_with_serve(tmp_path: Path) -> None:
    """A scrape reaches one worker; it answers the counters of all of them, and a new
    ``serve`` starts them at zero."""
    data_dir = tmp_path / "data"
    assert run_cli("init", "--data-dir", str(data_dir)).returncode == 0
    for _ in range(2):
        with ServerProcess(data_dir, workers=2) as server:
            answered = 0
            with httpx.Client(base_url=server.base_url) as http:
                for _ in range(40):  # new connections: the kernel spreads them
                    assert httpx.get(server.base_url + "/readyz").status_code == 200
                    answered += 1
                deadline = time.monotonic() + 10
                while True:  # each worker publishes every 2 s
                    scrape = http.get("/metrics")
                    assert scrape.status_code == 200
                    if _readyz_answers(scrape.text) >= answered or time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
            assert _readyz_answers(scrape.text) == answered
            assert "oncevault_workers 2\n" in scrape.text
            assert "oncevault_audit_tree_size " in scrape.text
            assert sorted(p.name for p in (data_dir / "metrics").glob("*.json")) == sorted(
                f"{pid}.json"
                for pid in worker_pids(server.process.pid)  # type: ignore[union-attr]
            )


def test_log_lines_are_json_with_request_id(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert run_cli("init", "--data-dir", str(data_dir)).returncode == 0
    with ServerProcess(data_dir) as server:
        response = httpx.get(server.base_url + "/healthz")
        request_id = response.headers["x-request-id"]
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("event") == "http.request"]
    assert any(line.get("request_id") == request_id for line in access)


def test_spread_workers_each_run_on_a_cpu_of_their_own(tmp_path: Path) -> None:
    """ONCEVAULT_WORKER_AFFINITY=spread: every thread of each worker is pinned, two
    workers never share a CPU (when there are two), and each says where it runs."""
    cpus = sorted(os.sched_getaffinity(0))
    data_dir = tmp_path / "data"
    assert run_cli("init", "--data-dir", str(data_dir)).returncode == 0
    env = clean_env(ONCEVAULT_WORKER_AFFINITY="spread")
    with ServerProcess(data_dir, workers=2, env=env) as server:
        assert server.process is not None
        assert httpx.get(server.base_url + "/healthz").status_code == 200
        masks = {
            pid: {
                tuple(sorted(os.sched_getaffinity(int(task.name))))
                for task in Path(f"/proc/{pid}/task").iterdir()
            }
            for pid in worker_pids(server.process.pid)
        }
    assert len(masks) == 2
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    pinned = sorted(line["cpu"] for line in lines if line.get("event") == "worker.pinned")
    if len(cpus) >= 2:
        assert all(len(threads) == 1 for threads in masks.values()), masks  # one mask each
        used = sorted(mask for threads in masks.values() for mask in threads)
        assert used == [(cpu,) for cpu in pinned]
        assert len(set(pinned)) == 2
    else:
        assert pinned == cpus


def worker_pids(server_pid: int) -> list[int]:
    """The server's worker processes: the other members of its process group."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == server_pid:
            continue
        try:
            stat_line = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat_line[2]) == server_pid:
            pids.append(int(entry.name))
    return pids


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "oncevault.sqlite").touch()
    result = run_cli("serve", "--data-dir", str(data_dir), "--port", "1")
    assert result.returncode == 1
    assert "database is not migrated" in result.stderr
    assert "oncevault init" in result.stderr


def test_serve_refuses_a_missing_database(tmp_path: Path) -> None:
    result = run_cli("serve", "--data-dir", str(tmp_path / "nothing"))
    assert result.returncode == 1
    assert "run `oncevault init` first" in result.stderr


def test_serve_refuses_dev_idp_off_loopback(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert run_cli("init", "--data-dir", str(data_dir)).returncode == 0
    result = run_cli("serve", "--data-dir", str(data_dir), "--host", "0.0.0.0")
    assert result.returncode == 2
    assert "ONCEVAULT_DEV_IDP" in result.stderr
    assert "loopback" in result.stderr


def test_bad_setting_exits_2_with_one_line(tmp_path: Path) -> None:
    env = clean_env(ONCEVAULT_KEY_PROVIDER="hsm")
    result = run_cli("init", "--data-dir", str(tmp_path / "d"), env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "oncevault: ONCEVAULT_KEY_PROVIDER: unknown key provider (expected local or transit)"
    ]


def test_a_bad_policy_file_stops_start_up(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert run_cli("init", "--data-dir", str(data_dir)).returncode == 0
    policy_dir = tmp_path / "policies"
    shutil.copytree(Path(__file__).resolve().parents[3] / "policies" / "catalogue", policy_dir)
    purposes = policy_dir / "purposes.toml"
    purposes.write_text(
        purposes.read_text().replace("max_valid_days = 30", 'max_valid_days = "30"', 1)
    )
    env = clean_env(ONCEVAULT_POLICY_DIR=str(policy_dir))
    result = run_cli("serve", "--data-dir", str(data_dir), "--port", "1", env=env)
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "purposes.toml" in line
    assert "max_valid_days" in line
    assert "expected an integer" in line
