"""The OpenBao fixture itself: both modes start, answer, restart, die and leave nothing behind."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
import requests

from tests.fixtures.openbao import OpenBaoServer, bao_server_pids, pid_alive

pytestmark = pytest.mark.openbao


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_dev_server_answers_health_and_transit(openbao_dev: OpenBaoServer) -> None:
    assert openbao_dev.addr.startswith("http://127.0.0.1:")
    client = openbao_dev.client()
    health = client.sys.read_health_status(method="GET")
    assert health["initialized"] is True
    assert health["sealed"] is False

    transit = client.secrets.transit
    transit.create_key("fixture-dev", key_type="aes256-gcm96")
    sealed = transit.encrypt_data("fixture-dev", plaintext=_b64(b"hello"))["data"]["ciphertext"]
    assert sealed.startswith("vault:v1:")
    opened = transit.decrypt_data("fixture-dev", ciphertext=sealed)["data"]["plaintext"]
    assert base64.b64decode(opened) == b"hello"


def test_dev_server_has_kv_v2_at_secret(openbao_dev: OpenBaoServer) -> None:
    kv = openbao_dev.client().secrets.kv.v2
    kv.create_or_update_secret("fixture-test/dev", secret={"a": "1"}, mount_point="secret")
    read = kv.read_secret_version(
        "fixture-test/dev", mount_point="secret", raise_on_deleted_version=True
    )
    assert read["data"]["data"] == {"a": "1"}


def test_raft_server_keeps_data_across_restart(openbao_raft: OpenBaoServer) -> None:
    client = openbao_raft.client()
    assert client.sys.read_health_status(method="GET")["sealed"] is False
    kv = client.secrets.kv.v2
    kv.create_or_update_secret("fixture-test/raft", secret={"kept": "yes"}, mount_point="secret")
    first_pid = openbao_raft.pid
    port = openbao_raft.port

    openbao_raft.restart()

    assert openbao_raft.pid != first_pid
    assert first_pid is not None
    assert not pid_alive(first_pid)
    assert openbao_raft.port == port
    read = openbao_raft.client().secrets.kv.v2.read_secret_version(
        "fixture-test/raft", mount_point="secret", raise_on_deleted_version=True
    )
    assert read["data"]["data"] == {"kept": "yes"}


def test_raft_server_killed_refuses_fast_and_comes_back(openbao_raft: OpenBaoServer) -> None:
    client = openbao_raft.client()
    client.secrets.kv.v2.create_or_update_secret(
        "fixture-test/kill", secret={"v": "1"}, mount_point="secret"
    )
    pid = openbao_raft.pid
    assert pid is not None

    openbao_raft.kill()

    assert not pid_alive(pid)
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{openbao_raft.addr}/v1/sys/health", timeout=5)
    assert time.monotonic() - started < 1.0

    openbao_raft.restart()  # the data survives a SIGKILL too
    read = openbao_raft.client().secrets.kv.v2.read_secret_version(
        "fixture-test/kill", mount_point="secret", raise_on_deleted_version=True
    )
    assert read["data"]["data"] == {"v": "1"}


def test_raft_bare_server_has_no_secret_mount(openbao_raft_bare: OpenBaoServer) -> None:
    mounts = openbao_raft_bare.client().sys.list_mounted_secrets_engines()["data"]
    assert "transit/" in mounts
    assert "secret/" not in mounts


@pytest.mark.parametrize("mode", ["dev", "raft"])
def test_stop_leaves_no_process_behind(tmp_path: Path, mode: str) -> None:
    server = OpenBaoServer(tmp_path, "dev" if mode == "dev" else "raft", kv=False)
    server.start()
    pid = server.pid
    assert pid is not None
    assert pid in bao_server_pids()
    server.pause()  # even a SIGSTOPped server must go away on stop()

    server.stop()

    assert not pid_alive(pid)
    assert pid not in bao_server_pids()
    assert not server.running
    server.stop()  # idempotent
    assert "bao.log" in {p.name for p in tmp_path.iterdir()}
