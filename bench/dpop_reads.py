"""Audited reads with DPoP: the same ``GET /v1/data/{type}`` with bearer and DPoP-bound tokens.

Usage: .venv/bin/python bench/dpop_reads.py [--citizens 100] [--duration 20] [--rounds 3]
       [--warmup 3] [--connections 64] [--workers 2] [--dek-cache 60]
       [--rate-limit 10000000] [--synchronous FULL|NORMAL] [--probe DIR] [--keep]
       [--write-doc]

wrk cannot load DPoP reads: a proof is single use (the server remembers its ``jti``)
and binds the method, the URL and the access token (``htm``, ``htu``, ``ath``), so a
prepared request cannot be replayed. This script loads oncevault with its own asyncio
load generator that signs a fresh proof per request, and runs the same generator with
bearer tokens in alternated rounds, so the DPoP cost is a like-for-like difference.

* **oncevault** is started and seeded exactly as bench/vs_openbao.py does it (its
  ``Oncevault`` class): ``oncevault init`` on a temporary data dir, ``serve --workers
  2`` (workers pinned, ``--worker-affinity``), SQLite, local KEK, DEK cache 60 s, rate limit 10,000,000/min (on, never hit);
  ``nts`` issues one ~1 KiB ``income_certificate`` per citizen, ``kbank`` gets a
  standing ``mortgage_screening`` consent from each.
* **Tokens**: before each run ``kbank`` gets one consent-bound token per citizen. Bearer
  runs: the tokens bench/vs_openbao.py mints. DPoP runs: the same token request with a
  DPoP proof, so each token carries ``cnf.jkt``. There is **one Ed25519 proof key for
  the client** ``kbank`` (as a deployed client holds one), so every token is bound to it.
  ``kbank`` is not registered ``--dpop-required``; a bound token sent as Bearer is
  refused all the same (checked before every DPoP run).
* **Load generator**: raw asyncio streams (uvloop when installed), keep-alive HTTP/1.1,
  ``--connections`` connections each rotating over the citizens' tokens from its own
  offset, one request in flight per connection. A DPoP request signs a fresh proof:
  the proof header and each token's fixed claims (``htm``, ``htu``, ``ath``) are
  base64url-encoded once (the claim prefix padded with JSON whitespace to a multiple
  of three bytes so the rest's encoding continues it); per request only ``iat``, a
  counter ``jti`` (a run prefix plus a hex counter), one Ed25519 signature and two short
  base64url encodings are computed. Bearer requests are prepared bytes. Latency runs
  from building the request (proof included) to the last byte of the answer. At the
  end of the duration no new request starts and the ones in flight are awaited (at most
  10 s; those still open then are counted as timeouts), so every 2xx is counted. The
  generator runs in this process while nothing else does: its CPU time (user + system,
  ``getrusage``) over the run is its cost.
* **Runs**: each after a ``--warmup`` s warm-up with the same tokens; rounds alternate
  which mode goes first; medians are reported.

A run is **valid** only if nothing answered non-2xx and no socket error or timeout
happened; the audit tree (``audit_state.size``, once the load stopped and the size is
stable) grew by at least the 2xx count and at most that plus the connection count;
every sampled ``X-Audit-Seq`` (the first eight answers, then one in 997) is an ``ok``
``data.read`` entry of ``kbank`` inside the run's range; and, for DPoP, the replay
store holds between the 2xx count and that plus the connection count of this run's
proof ``jti`` values (so every accepted proof was remembered). Before each DPoP run one
proof is checked with the product's own verifier, one read by hand answers 200 with
exactly the released fields, the same proof replayed answers 401
``invalid_dpop_proof`` and the bound token sent as Bearer answers 401.

Printed: every run (req/s, p50, p99, errors, audit growth, the server's CPU time per
request from ``/proc`` of its process group, the generator's CPU time per request and
the share of a core it took, the 1-minute load average at the start), the medians per
mode and a Markdown block; ``--write-doc`` puts that block in docs/performance.md
between ``<!-- dpop:begin -->`` and ``<!-- dpop:end -->`` (appended at the end of the
file when the markers are missing; nothing else is touched). ``--probe DIR`` times the
read path's steps inside the workers (bench/vs_openbao_probe.py). Every process started
here is stopped on the way out, errors and SIGTERM included. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import platform
import resource
import secrets
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
from benchlib import (
    RECORD_BYTES,
    RECORD_TYPE,
    RELEASED,
    block_head,
    client_token,
    cpu_model,
    gather_bounded,
    med,
    ms,
    percentile,
    publish,
    workspace,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: TID251 - a client's proof signer
    Ed25519PrivateKey,
)
from vs_openbao import Oncevault, add_oncevault_arguments, git_revision, measure

from vault import crypto

DOC_BEGIN = "<!-- dpop:begin -->"
DOC_END = "<!-- dpop:end -->"
READ_PATH = f"/v1/data/{RECORD_TYPE}"
DPOP_TYP = "dpop+jwt"
#: A request still open this long after the duration is a timeout (wrk --timeout 10s).
DRAIN_SECONDS = 10.0
#: Proofs are remembered for iat + 90 s (DPOP_WINDOW + SKEW in consent/tokens.py); the
#: replay-store count is read after the run, so a run must end well before that.
MAX_DURATION = 60
MODES = ("bearer", "dpop")
LABELS = {"bearer": "Bearer", "dpop": "DPoP"}

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop ships with granian
    uvloop = None  # type: ignore[assignment]


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- DPoP proofs -------------------------------------------------------------------------


class ProofSigner:
    """RFC 9449 proofs with one Ed25519 key: the header and each token's fixed claims
    are encoded once; a request adds ``iat``, a fresh ``jti`` and the signature."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        x = crypto.b64url_encode(self.key.public_key().public_bytes_raw())
        self.jwk = {"kty": "OKP", "crv": "Ed25519", "x": x}
        self.jkt = crypto.jwk_thumbprint(self.jwk)
        header = {"typ": DPOP_TYP, "alg": "EdDSA", "jwk": self.jwk}
        self.header = b64(json.dumps(header, separators=(",", ":")).encode())
        self.series = b""
        self.count = 0
        self.new_series()

    def new_series(self) -> str:
        """A fresh ``jti`` prefix: a run's proofs are found in the replay store by it."""
        self.series = secrets.token_hex(6).encode()
        self.count = 0
        return self.series.decode()

    def sign(self, claims: dict[str, Any]) -> str:
        """A proof with any claims (the token endpoint, checks): the plain path."""
        signing_input = self.header + b"." + b64(json.dumps(claims).encode())
        return (signing_input + b"." + b64(self.key.sign(signing_input))).decode()

    def token_endpoint_proof(self, url: str) -> str:
        claims = {
            "htm": "POST",
            "htu": url + "/oauth/token",
            "iat": int(time.time()),
            "jti": secrets.token_urlsafe(12),
        }
        return self.sign(claims)

    def head(self, htm: str, htu: str, token: str) -> bytes:
        """``header.`` plus the encoded claims that never change for ``token``; the JSON
        prefix is padded to a multiple of 3 bytes, so base64url of the rest continues it."""
        ath = crypto.b64url_encode(hashlib.sha256(token.encode()).digest())
        fixed = json.dumps({"htm": htm, "htu": htu, "ath": ath}, separators=(",", ":"))
        prefix = "{" + " " * (-(len(fixed) + 6) % 3) + fixed[1:-1] + ',"iat":'
        assert len(prefix) % 3 == 0 and prefix.isascii()
        return self.header + b"." + b64(prefix.encode())

    def proof(self, head: bytes) -> bytes:
        """The per-request work: the rest of the claims, one signature."""
        self.count += 1
        rest = b'%d,"jti":"%s%x"}' % (int(time.time()), self.series, self.count)
        signing_input = head + b64(rest)
        return signing_input + b"." + b64(self.key.sign(signing_input))


# -- the load generator ------------------------------------------------------------------


@dataclass
class Target:
    #: Bearer: the whole request. DPoP: the request up to the ``DPoP:`` header's value.
    request: bytes
    #: DPoP: :meth:`ProofSigner.head` for this token.
    head: bytes = b""


@dataclass
class LoadResult:
    seconds: float
    sent: int
    ok2xx: int
    other: int
    socket_errors: int
    timeouts: int
    latencies: list[float] = field(repr=False)
    samples: list[int]
    cpu: float
    refusals: list[str]

    @property
    def rate(self) -> float:
        """2xx answers per second (errors are not throughput)."""
        return self.ok2xx / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.other + self.socket_errors + self.timeouts

    def p(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu * 1000 / self.ok2xx if self.ok2xx else float("nan")

    @property
    def cores(self) -> float:
        """The generator's share of one core over the run."""
        return self.cpu / self.seconds if self.seconds else float("nan")


class Generator:
    """``connections`` keep-alive HTTP/1.1 connections, one request in flight each."""

    def __init__(
        self,
        url: str,
        targets: list[Target],
        signer: ProofSigner | None,
        *,
        connections: int,
        seconds: float,
    ) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        if host != "127.0.0.1":
            raise ValueError("loopback only")
        self.host, self.port = host, int(port)
        self.targets = targets
        self.signer = signer
        self.connections = connections
        self.seconds = seconds
        self.running = False
        self.sent = self.ok2xx = self.other = self.socket_errors = self.seen = 0
        self.latencies: list[float] = []
        self.samples: list[int] = []
        self.refusals: list[str] = []

    def run(self) -> LoadResult:
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None)
        with runner:
            return runner.run(self._run())

    async def _run(self) -> LoadResult:
        loop = asyncio.get_running_loop()
        cpu_before, started = cpu_self(), time.perf_counter()
        self.running = True
        loop.call_later(self.seconds, self._stop)
        tasks = [asyncio.create_task(self._connection(i)) for i in range(self.connections)]
        done, pending = await asyncio.wait(tasks, timeout=self.seconds + DRAIN_SECONDS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        seconds, cpu = time.perf_counter() - started, cpu_self() - cpu_before
        for task in done:
            task.result()  # a bug in the generator is not a measurement
        self.latencies.sort()
        return LoadResult(
            seconds=seconds,
            sent=self.sent,
            ok2xx=self.ok2xx,
            other=self.other,
            socket_errors=self.socket_errors,
            timeouts=len(pending),
            latencies=self.latencies,
            samples=self.samples,
            cpu=cpu,
            refusals=self.refusals,
        )

    def _stop(self) -> None:
        self.running = False

    async def _connection(self, number: int) -> None:
        targets, signer, count = self.targets, self.signer, len(self.targets)
        index = number * 7919 % count
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            while self.running:
                if writer is None:
                    try:
                        reader, writer = await asyncio.open_connection(self.host, self.port)
                    except OSError:
                        self.socket_errors += 1
                        await asyncio.sleep(0.05)
                        continue
                assert reader is not None
                index = index + 1 if index + 1 < count else 0
                target = targets[index]
                start = time.perf_counter()
                if signer is None:
                    writer.write(target.request)
                else:
                    writer.write(target.request + signer.proof(target.head) + b"\r\n\r\n")
                self.sent += 1
                try:
                    status, head = await self._response(reader)
                except (OSError, ValueError, asyncio.IncompleteReadError):
                    self.socket_errors += 1
                    writer.close()
                    writer = None
                    continue
                self.latencies.append(time.perf_counter() - start)
                self._count(status, head)
                if b"\r\nconnection: close" in head:
                    writer.close()
                    writer = None
        finally:
            if writer is not None:
                writer.close()

    async def _response(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        """Status and lower-cased head of one answer; its body is read and dropped."""
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        status = int(head[9:12])
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            end = head.index(b"\r\n", at + 17)
            body = await reader.readexactly(int(head[at + 17 : end]))
        elif b"\r\ntransfer-encoding: chunked" in head:
            body = b""
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                body += (await reader.readexactly(size + 2))[:-2]
            await reader.readuntil(b"\r\n")  # no trailers are sent
        else:
            raise ValueError("an answer without a length")
        if not 200 <= status < 300 and len(self.refusals) < 5:
            self.refusals.append(f"{status} {body[:200]!r}")
        return status, head

    def _count(self, status: int, head: bytes) -> None:
        self.seen += 1
        if not 200 <= status < 300:
            self.other += 1
            return
        self.ok2xx += 1
        if len(self.samples) < 40 and (self.seen <= 8 or self.seen % 997 == 0):
            at = head.find(b"\r\nx-audit-seq:")
            if at >= 0:
                self.samples.append(int(head[at + 14 : head.index(b"\r\n", at + 14)]))


# -- tokens and checks -------------------------------------------------------------------


def request_prefix(url: str, scheme: str, token: str) -> bytes:
    host = url.removeprefix("http://")
    return (
        f"GET {READ_PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {scheme} {token}\r\n"
    ).encode()


def bearer_targets(ours: Oncevault, workdir: Path) -> list[Target]:
    """bench/vs_openbao.py's tokens and its read by hand."""
    path = ours.prepare_round(workdir)
    ours.check_one_read(path)
    tokens = [line.split("\t")[2].removeprefix("Bearer ") for line in path.read_text().splitlines()]
    return [Target(request_prefix(ours.url, "Bearer", t) + b"\r\n") for t in tokens]


def dpop_targets(ours: Oncevault, signer: ProofSigner) -> list[Target]:
    """One DPoP-bound consent-bound token per citizen, checked by hand."""

    def proof() -> str:
        return signer.token_endpoint_proof(ours.url)

    async def mint() -> list[str]:
        async with httpx.AsyncClient(base_url=ours.url, timeout=60) as http:
            return await gather_bounded(
                8,
                [
                    client_token(http, ours.url, ours.kbank, cid, dpop=proof)
                    for cid in ours.consent_ids
                ],
            )

    tokens = asyncio.run(mint())
    htu = ours.url + READ_PATH
    targets = [
        Target(request_prefix(ours.url, "DPoP", t) + b"DPoP: ", signer.head("GET", htu, t))
        for t in tokens
    ]
    check_dpop_read(ours, signer, tokens[0], targets[0])
    return targets


def check_dpop_read(ours: Oncevault, signer: ProofSigner, token: str, target: Target) -> None:
    """A fast-path proof verifies with the product's own code and says what it should;
    a read answers 200 with the released fields; replay and Bearer use are refused."""
    signer.new_series()
    proof = signer.proof(target.head).decode()
    header, claims = crypto.verify_jws_with_embedded_jwk(proof, typ=DPOP_TYP)
    expected = {
        "htm": "GET",
        "htu": ours.url + READ_PATH,
        "ath": crypto.b64url_encode(hashlib.sha256(token.encode()).digest()),
    }
    if (
        crypto.jwk_thumbprint(header["jwk"]) != signer.jkt
        or {k: claims.get(k) for k in expected} != expected
        or set(claims) != {*expected, "iat", "jti"}
        or abs(claims["iat"] - time.time()) > 2
        or claims["jti"] != f"{signer.series.decode()}1"
    ):
        raise RuntimeError(f"the proof says something else: {header} {claims}")
    url = ours.url + READ_PATH
    with httpx.Client(timeout=10) as http:
        answer = http.get(url, headers={"Authorization": f"DPoP {token}", "DPoP": proof})
        if answer.status_code != 200:
            raise RuntimeError(f"DPoP read: {answer.status_code} {answer.text}")
        if set(answer.json()["data"]) != set(RELEASED) or "x-audit-seq" not in answer.headers:
            raise RuntimeError(f"DPoP read answered an unexpected shape: {answer.text[:300]}")
        replay = http.get(url, headers={"Authorization": f"DPoP {token}", "DPoP": proof})
        if (replay.status_code, replay.json().get("code")) != (401, "invalid_dpop_proof"):
            raise RuntimeError(f"a replayed proof got {replay.status_code} {replay.text}")
        as_bearer = http.get(url, headers={"Authorization": f"Bearer {token}"})
        if as_bearer.status_code != 401:
            raise RuntimeError(f"the bound token as Bearer got {as_bearer.status_code}")


def remembered_proofs(ours: Oncevault, signer: ProofSigner, series: str) -> int:
    """This run's proofs in the replay store (rows live 90 s past their iat)."""
    rows = ours._query(
        "SELECT count(*) FROM replay_guard WHERE scope = $1 AND jti LIKE $2",
        f"dpop:{signer.jkt}",
        series + "%",
    )
    return int(rows[0][0])


# -- runs --------------------------------------------------------------------------------


@dataclass
class Run:
    mode: str
    round: int
    load: float
    result: LoadResult
    audit_growth: int
    server_cpu: float
    remembered: int | None
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def server_ms(self) -> float:
        ok = self.result.ok2xx
        return self.server_cpu * 1000 / ok if ok else float("nan")


def one_run(
    ours: Oncevault,
    mode: str,
    number: int,
    signer: ProofSigner,
    workdir: Path,
    args: argparse.Namespace,
) -> Run:
    targets = bearer_targets(ours, workdir) if mode == "bearer" else dpop_targets(ours, signer)
    proofs = signer if mode == "dpop" else None

    def generate(seconds: float) -> LoadResult:
        return Generator(
            ours.url, targets, proofs, connections=args.connections, seconds=seconds
        ).run()

    if args.warmup:
        signer.new_series()
        generate(args.warmup)
    series = signer.new_series()  # the measured run's proofs
    result, load, growth, cpu, audit_problems = measure(
        ours,
        lambda: generate(args.duration),
        connections=args.connections,
        probe_dir=args.probe,
    )
    problems = []
    if result.errors:
        problems.append(
            f"{result.other} non-2xx answers {result.refusals}, {result.socket_errors} "
            f"socket errors, {result.timeouts} timeouts"
        )
    problems += audit_problems
    remembered = None
    if mode == "dpop":
        remembered = remembered_proofs(ours, signer, series)
        if not result.ok2xx <= remembered <= result.ok2xx + args.connections:
            problems.append(f"{remembered} proofs remembered for {result.ok2xx} 2xx")
    run = Run(mode, number, load, result, growth, cpu, remembered, problems)
    print_run(run)
    return run


def print_run(run: Run) -> None:
    r = run.result
    verdict = "VALID" if run.valid else "INVALID: " + "; ".join(run.problems)
    print(
        f"  round {run.round} {LABELS[run.mode]:<6} {r.rate:8,.0f} req/s  p50 {r.p(0.5):6.1f} ms"
        f"  p99 {r.p(0.99):6.1f} ms  2xx {r.ok2xx:,}  errors {r.errors}"
        f"  audit +{run.audit_growth:,}"
        + (f"  proofs remembered {run.remembered:,}" if run.remembered is not None else "")
        + f"  samples {len(r.samples)}  server CPU {run.server_ms:.2f} ms/req"
        f"  generator CPU {r.cpu_ms_per_request:.3f} ms/req ({r.cores:.2f} core)"
        f"  load {run.load:.2f}  {verdict}",
        flush=True,
    )


@dataclass
class Summary:
    mode: str
    rate: float
    p50: float
    p99: float
    errors: int
    server_ms: float
    generator_ms: float
    generator_cores: float
    valid: int
    runs: int


def summarise(mode: str, runs: list[Run]) -> Summary:
    return Summary(
        mode=mode,
        rate=med([r.result.rate for r in runs]),
        p50=med([r.result.p(0.5) for r in runs]),
        p99=med([r.result.p(0.99) for r in runs]),
        errors=sum(r.result.errors for r in runs),
        server_ms=med([r.server_ms for r in runs]),
        generator_ms=med([r.result.cpu_ms_per_request for r in runs]),
        generator_cores=med([r.result.cores for r in runs]),
        valid=sum(r.valid for r in runs),
        runs=len(runs),
    )


def report(
    args: argparse.Namespace, machine: str, config: str, runs: dict[str, list[Run]]
) -> list[str]:
    bearer, dpop = summarise("bearer", runs["bearer"]), summarise("dpop", runs["dpop"])
    by_round = {(r.mode, r.round): r for r in runs["bearer"] + runs["dpop"]}
    paired = [
        by_round["dpop", n].server_ms - by_round["bearer", n].server_ms
        for n in range(1, args.rounds + 1)
    ]
    extra = med(paired)
    ratio = dpop.rate / bearer.rate if bearer.rate else float("nan")
    lines = [
        "## Audited reads with DPoP",
        "",
        "`bench/dpop_reads.py` loads the read of the OpenBao comparison above (same "
        "server, same seeding: bench/vs_openbao.py's `Oncevault`) with DPoP-bound tokens "
        "(RFC 9449) and, in alternated rounds, with bearer tokens, from one asyncio load "
        "generator: wrk cannot replay DPoP requests, since a proof is single use and binds "
        "`htm`, `htu` and `ath`. It signs a fresh Ed25519 proof per request with one proof "
        "key for the client `kbank` (every token bound to it), over raw keep-alive "
        "HTTP/1.1 streams, with the proof's header and each token's fixed claims encoded "
        "once. A run is valid if nothing answered non-2xx, the audit tree grew by the 2xx "
        "count (plus at most one per connection), sampled `X-Audit-Seq` entries are `ok` "
        "`data.read` entries of `kbank`, and (DPoP) the replay store holds one row per "
        "accepted proof of the run. The generator runs on the same two cores; its own CPU "
        "time is reported.",
        "",
        *block_head(command_line(args), machine, config),
        "| tokens | req/s | p50 | p99 | errors | server CPU/req | generator CPU/req "
        "| generator cores | valid runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in (bearer, dpop):
        lines.append(
            f"| {LABELS[s.mode]} | {s.rate:,.0f} | {ms(s.p50)} | {ms(s.p99)} | {s.errors} "
            f"| {s.server_ms:.2f} ms | {s.generator_ms:.3f} ms | {s.generator_cores:.2f} "
            f"| {s.valid}/{s.runs} |"
        )
    lines += [
        "",
        f"DPoP costs the server **{extra:+.2f} ms of CPU per read** (median of the "
        f"per-round differences; medians {bearer.server_ms:.2f} → {dpop.server_ms:.2f} ms, "
        f"{100 * (dpop.server_ms / bearer.server_ms - 1):+.0f}%) and the client "
        f"{dpop.generator_ms - bearer.generator_ms:+.3f} ms of CPU per request for the "
        f"proof; DPoP reads run at {ratio:.2f}x the bearer rate with p99 {ms(dpop.p99)} "
        f"vs {ms(bearer.p99)}.",
        "",
        "Every run (1-minute load average at its start):",
        "",
        "| round | tokens | req/s | p50 | p99 | 2xx | errors | audit growth "
        "| proofs remembered | server CPU/req | generator CPU/req | load | valid |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in sorted(runs["bearer"] + runs["dpop"], key=lambda r: (r.round, r.mode)):
        r = run.result
        lines.append(
            f"| {run.round} | {LABELS[run.mode]} | {r.rate:,.0f} | {ms(r.p(0.5))} "
            f"| {ms(r.p(0.99))} | {r.ok2xx:,} | {r.errors} | {run.audit_growth:,} "
            f"| {'' if run.remembered is None else f'{run.remembered:,}'} "
            f"| {run.server_ms:.2f} ms | {r.cpu_ms_per_request:.3f} ms | {run.load:.2f} "
            f"| {'yes' if run.valid else 'NO: ' + '; '.join(run.problems)} |"
        )
    return lines


def command_line(args: argparse.Namespace) -> str:
    return ".venv/bin/python bench/dpop_reads.py " + " ".join(args.argv)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--citizens", type=int, default=100)
    parser.add_argument("--duration", type=int, default=20, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load before each run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    add_oncevault_arguments(parser)
    parser.add_argument("--write-doc", action="store_true", help="update docs/performance.md")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= args.duration <= MAX_DURATION or args.warmup < 0:
        parser.error(f"--duration must be 1..{MAX_DURATION} s (proofs are remembered 90 s)")
    if args.citizens < 1 or args.connections < 1 or args.rounds < 1:
        parser.error("need at least one citizen, one connection and one round")
    # SIGTERM unwinds like Ctrl-C, so the finally block stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with workspace(args.keep, "vs_openbao_") as workdir:
        (workdir / "oncevault").mkdir()
        ours = Oncevault.from_args(workdir / "oncevault", args)
        if args.probe is not None:
            ours.use_probe(args.probe, workdir / "probe_site")
        signer = ProofSigner()
        runs: dict[str, list[Run]] = {"bearer": [], "dpop": []}
        try:
            started = time.monotonic()
            ours.start()
            ours.seed()
            print(f"seeded {args.citizens} citizens in {time.monotonic() - started:.0f} s")
            loop = f"uvloop {version('uvloop')}" if uvloop else "asyncio's default loop"
            machine = (
                f"Machine: CPU {cpu_model()}, {os.cpu_count()} cores, Python "
                f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}, cryptography "
                f"{version('cryptography')}, load generator on {loop} in one process sharing "
                f"the cores; oncevault at {git_revision()}; "
                f"load avg {', '.join(f'{x:.2f}' for x in os.getloadavg())} after seeding."
            )
            config = (
                f"Configuration: {args.citizens} citizens, ~{RECORD_BYTES} B record each, "
                f"one consent-bound token per citizen per run; {args.connections} "
                f"connections, {args.duration} s runs (+{args.warmup} s warm-up), "
                f"{args.rounds} alternated rounds, medians. oncevault: serve --workers "
                f"{args.workers} (ONCEVAULT_WORKER_AFFINITY={args.worker_affinity}), SQLite ({ours.sqlite_synchronous()}), local KEK, DEK cache "
                f"{args.dek_cache:g} s, rate limit {args.rate_limit:,}/min. DPoP: EdDSA "
                "proofs, one key for the client, a fresh proof per request."
            )
            print(machine)
            print(config, flush=True)
            for number in range(1, args.rounds + 1):
                for mode in MODES if number % 2 else tuple(reversed(MODES)):
                    runs[mode].append(one_run(ours, mode, number, signer, workdir, args))
        finally:
            ours.stop()
        publish(
            report(args, machine, config, runs), write=args.write_doc, begin=DOC_BEGIN, end=DOC_END
        )
        return 0 if all(r.valid for r in runs["bearer"] + runs["dpop"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
