"""``oncevault demo``: the home purchase of DESIGN.md, end to end, in one command.

On a throwaway data directory the demo

1. sets the platform up with the real CLI (``init``, ``clients add`` for the Ministry
   of the Interior, the court, the National Tax Service, the bank, the local tax office
   and the registry office, ``dev-token`` for the buyer) and starts ``oncevault serve``
   on a free loopback port;
2. has the issuers put the papers in the buyer's vault once (resident registration,
   real estate title, sale contract, income certificate);
3. has the bank (mortgage screening), the local tax office (acquisition tax) and the
   registry office (ownership registration) ask for consent;
4. has the buyer approve each request once, with a development-IdP token;
5. has each recipient fetch its data, and checks that it received exactly the fields
   it was granted (one ``recipient ... received TYPE: f1, f2`` line per record type);
6. prints today's route against oncevault's;
7. verifies the latest checkpoint's signature against the platform JWKS, and the bank's
   read in that tree with an RFC 9162 inclusion proof (``audit.merkle``: hashlib only).

Everything talks HTTP to a real server, as a bank or an agency would. The server is
always stopped, and the data directory removed, also on errors; ``--serve`` keeps both
and prints the citizen page and how to sign in, until Ctrl-C. Exit code 0 when every
check held, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final, TextIO

import httpx

from audit import merkle
from vault import crypto
from vault.errors import InvalidJWS

__all__ = ["BUYER_NID", "DemoFailed", "run_demo"]

BUYER_NID: Final = "900101-1234567"
"""The buyer's resident registration number (a made-up one; the development IdP takes it)."""

TODAY_SITE_VISITS: Final = 9
TODAY_PAYMENTS: Final = 4

HTTP_TIMEOUT: Final = 10.0
"""Seconds for any one HTTP call."""
START_TIMEOUT: Final = 30.0
"""Seconds for the server to answer /healthz."""
OPERATOR_TIMEOUT: Final = 120.0
"""Seconds for the operator's CLI commands together."""
CHECKPOINT_TIMEOUT: Final = 10.0
"""Seconds to wait for a checkpoint that covers the reads (made about every second)."""
STOP_TIMEOUT: Final = 15.0

DATA: Final = "data"
KEYS: Final = "clients"
_MARK: Final = "@@ oncevault-demo command "


class DemoFailed(Exception):
    """A step of the demo did not go as the contract says; the message names it."""


# -- the home purchase ------------------------------------------------------------


@dataclass(frozen=True)
class Party:
    client_id: str
    name: str
    kind: str
    role: str
    alg: crypto.ClientAlg


PARTIES: Final = (
    Party("mois", "Ministry of the Interior and Safety", "agency", "issuer", "EdDSA"),
    Party("court", "Supreme Court registry", "agency", "issuer", "EdDSA"),
    Party("nts", "National Tax Service", "agency", "issuer", "ES256"),
    Party("kbank", "K Bank mortgage lending", "private", "consumer", "EdDSA"),
    Party("wetax", "Local tax office (Wetax)", "agency", "consumer", "EdDSA"),
    Party("registry", "Court registry office", "agency", "consumer", "ES256"),
)

RESIDENT: Final[Mapping[str, Any]] = {
    "name": "홍길동",
    "birth_date": "1990-01-01",
    "address": "서울특별시 은평구 통일로 684, 3층",
    "moved_in_on": "2019-03-02",
    "household_head": True,
    "household_members": 3,
}
TITLE: Final[Mapping[str, Any]] = {
    "unique_number": "1146-2008-012345",
    "address": "서울특별시 마포구 월드컵북로 396, 101동 1201호",
    "property_kind": "apartment",
    "area_m2": 84.97,
    "registered_on": "2012-05-14",
    "owners": [{"name": "김매도", "share": "1/1"}],
    "mortgages": [],
}
CONTRACT: Final[Mapping[str, Any]] = {
    "report_number": "2026-MAPO-00812",
    "property_unique_number": "1146-2008-012345",
    "property_address": "서울특별시 마포구 월드컵북로 396, 101동 1201호",
    "price": 1_150_000_000,
    "contract_date": "2026-10-02",
    "balance_date": "2026-12-15",
    "seller_name": "김매도",
    "buyer_name": "홍길동",
}
INCOME: Final[Mapping[str, Any]] = {
    "year": 2025,
    "total_income": 86_400_000,
    "tax_paid": 9_120_000,
    "employer": "한빛전자",
}

#: (issuer, record type, data), in the order they are put.
RECORDS: Final = (
    ("mois", "resident_registration", RESIDENT),
    ("court", "real_estate_title", TITLE),
    ("court", "sale_contract", CONTRACT),
    ("nts", "income_certificate", INCOME),
)


@dataclass(frozen=True)
class Ask:
    """What one recipient asks for: a purpose and, per record type, the fields."""

    client_id: str
    purpose: str
    items: tuple[tuple[str, tuple[str, ...]], ...]


ASKS: Final = (
    Ask(
        "kbank",
        "mortgage_screening",
        (
            ("resident_registration", ("name", "birth_date", "address", "household_members")),
            ("income_certificate", ("year", "total_income", "employer")),
            ("real_estate_title", ("unique_number", "address", "area_m2", "mortgages")),
            ("sale_contract", ("property_unique_number", "price", "balance_date")),
        ),
    ),
    Ask(
        "wetax",
        "acquisition_tax",
        (
            ("resident_registration", ("name", "address", "household_members")),
            ("sale_contract", ("*",)),
            ("real_estate_title", ("unique_number", "address", "property_kind", "area_m2")),
        ),
    ),
    Ask(
        "registry",
        "property_registration",
        (
            ("resident_registration", ("name", "birth_date", "address")),
            ("sale_contract", ("*",)),
            ("real_estate_title", ("unique_number", "address", "owners")),
        ),
    ),
)


# -- output -----------------------------------------------------------------------


def _width(text: str) -> int:
    """Columns ``text`` takes on a terminal (Hangul and other wide characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


class Console:
    """Colour and box characters on a terminal (unless NO_COLOR is set), plain ASCII otherwise."""

    def __init__(self, out: TextIO, *, rich: bool | None = None) -> None:
        self.out = out
        if rich is None:
            try:
                rich = out.isatty() and not os.environ.get("NO_COLOR")
            except (AttributeError, ValueError, OSError):
                rich = False
        self.rich = rich

    def _sgr(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.rich else text

    def bold(self, text: str) -> str:
        return self._sgr(text, "1")

    def dim(self, text: str) -> str:
        return self._sgr(text, "2")

    def green(self, text: str) -> str:
        return self._sgr(text, "32")

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def heading(self, number: int, title: str) -> None:
        if self.rich:
            rule = "━" * max(4, 72 - _width(title) - 6)
            self.line("\n" + self._sgr(f"━━ {number}. {title} {rule}", "1;36"))
        else:
            self.line(f"\n== {number}. {title} ==")

    def command(self, argv: Sequence[str]) -> None:
        self.line(self._sgr("$ " + shlex.join(argv), "33"))

    def ok(self, text: str) -> None:
        self.line(("  " + self._sgr("✓", "1;32") if self.rich else "  ok") + " " + text)

    def fail(self, text: str) -> None:
        self.line(self._sgr("✗ " + text, "1;31") if self.rich else "FAILED: " + text)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        widths = [max(_width(row[i]) for row in (header, *rows)) for i in range(len(header))]
        if self.rich:
            h, v, corners = "─", "│", ("┌┬┐", "├┼┤", "└┴┘")
        else:
            h, v, corners = "-", "|", ("+++", "+++", "+++")

        def rule(ends: str) -> str:
            return "  " + ends[0] + ends[1].join(h * (w + 2) for w in widths) + ends[2]

        def cells(row: Sequence[str], *, strong: bool = False) -> str:
            text = [f" {_pad(cell, w)} " for cell, w in zip(row, widths, strict=True)]
            if strong:
                text = [self.bold(t) for t in text]
            return "  " + v + v.join(text) + v

        self.line(rule(corners[0]))
        self.line(cells(header, strong=True))
        self.line(rule(corners[1]))
        for row in rows:
            self.line(cells(row))
        self.line(rule(corners[2]))


# -- processes --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _child_env() -> dict[str, str]:
    """The caller's environment minus its oncevault and Vault settings: the demo's
    platform is its own (SQLite, local keys, development IdP), whatever the shell says."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ONCEVAULT_", "VAULT_"))}
    # `python -m api.cli` must find this very package, installed or not.
    here = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env


# Runs the real `oncevault` entry point once per command, in one interpreter (the
# imports cost more than the commands), marking where each command's output starts.
_OPERATOR_SCRIPT: Final = f"""\
import json, sys
from api.cli import main
for argv in json.loads(sys.argv[1]):
    print({_MARK!r} + json.dumps(argv), flush=True)
    code = main(argv)
    sys.stdout.flush()
    if code:
        sys.exit(code)
"""


def run_operator(
    commands: Sequence[Sequence[str]], *, cwd: Path, env: Mapping[str, str]
) -> list[tuple[list[str], list[str]]]:
    """Run ``oncevault`` commands in order; return each command with its output lines.

    Raises:
        DemoFailed: a command failed (its message is included) or they took too long.
    """
    try:
        done = subprocess.run(  # noqa: S603 -- our own interpreter and fixed arguments
            [sys.executable, "-c", _OPERATOR_SCRIPT, json.dumps([list(c) for c in commands])],
            cwd=cwd,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=OPERATOR_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DemoFailed(f"the operator commands took over {OPERATOR_TIMEOUT:.0f} s") from None
    results: list[tuple[list[str], list[str]]] = []
    for line in done.stdout.splitlines():
        if line.startswith(_MARK):
            results.append((json.loads(line[len(_MARK) :]), []))
        elif results:
            results[-1][1].append(line)
    if done.returncode != 0:
        failed = " ".join(results[-1][0]) if results else "python -m api.cli"
        detail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise DemoFailed(f"`oncevault {failed}` failed: {detail[0]}")
    return results


class Server:
    """``oncevault serve`` on a loopback port, in its own process group."""

    def __init__(self, root: Path, port: int, env: Mapping[str, str]) -> None:
        self.root = root
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = root / "serve.log"
        self.env = dict(env)
        self.argv = ["serve", "--data-dir", DATA, "--port", str(port)]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start and wait for /healthz; return the seconds it took.

        Raises:
            DemoFailed: the server exited or did not answer within START_TIMEOUT.
        """
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 -- our own interpreter, fixed arguments
                [sys.executable, "-m", "api.cli", *self.argv],
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = started + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DemoFailed(f"the server exited with {self.process.returncode}")
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise DemoFailed(f"the server did not answer /healthz within {START_TIMEOUT:.0f} s")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM to the server's process group (workers included), SIGKILL if it lingers."""
        if not self.running():
            return
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=STOP_TIMEOUT)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):  # slow, or a second Ctrl-C
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 15) -> list[str]:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]


# -- HTTP -------------------------------------------------------------------------


@dataclass
class Client:
    """A registered client holding its own private key, as a bank's system would."""

    party: Party
    private_pem: bytes
    kid: str

    @classmethod
    def create(cls, party: Party, keys_dir: Path) -> Client:
        pem, jwk = crypto.generate_client_keypair(party.alg)
        key_file = keys_dir / f"{party.client_id}.pem"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        (keys_dir / f"{party.client_id}.jwks.json").write_text(
            json.dumps({"keys": [jwk]}, indent=2), encoding="ascii"
        )
        return cls(party=party, private_pem=pem, kid=jwk["kid"])

    @property
    def client_id(self) -> str:
        return self.party.client_id

    def assertion(self, audience: str) -> str:
        """An RFC 7523 client assertion, valid two minutes, single use."""
        now = int(time.time())
        return crypto.sign_jws_with_pem(
            {
                "iss": self.client_id,
                "sub": self.client_id,
                "aud": audience,
                "iat": now,
                "exp": now + 120,
                "jti": secrets.token_urlsafe(18),
            },
            private_pem=self.private_pem,
            kid=self.kid,
            typ="JWT",
            alg=self.party.alg,
        )


def _describe(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = body.get("code") or body.get("error")
        detail = body.get("detail") or body.get("error_description") or ""
        return f"{response.status_code} {code}: {detail}".rstrip(": ")
    return f"{response.status_code} {response.text[:120]!r}"


@dataclass
class Api:
    """Every call bounded by HTTP_TIMEOUT; an unexpected status is a DemoFailed."""

    http: httpx.Client
    base: str

    def call(
        self, who: str, method: str, path: str, *, expect: int = 200, **kwargs: Any
    ) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise DemoFailed(f"{who}: {method} {path}: {exc.__class__.__name__}") from None
        if response.status_code != expect:
            raise DemoFailed(f"{who}: {method} {path}: {_describe(response)}")
        return response

    def token(self, client: Client, *, consent_id: str | None = None) -> dict[str, str]:
        """Authorization headers with a fresh access token (bound to a consent when given)."""
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": client.assertion(self.base + "/oauth/token"),
        }
        if consent_id is not None:
            form["authorization_details"] = json.dumps(
                [{"type": "oncevault_consent", "consent_id": consent_id}]
            )
        token = self.call(client.client_id, "POST", "/oauth/token", data=form).json()
        return {"Authorization": f"Bearer {token['access_token']}"}


# -- the walkthrough ----------------------------------------------------------------

Fields = dict[str, tuple[str, ...]]


@dataclass
class Outcome:
    """One recipient's consent, what it was granted and what it received."""

    ask: Ask
    consent_id: str
    granted: Fields = field(default_factory=dict)
    received: Fields = field(default_factory=dict)
    seq: int = -1


def _fields(items: Sequence[Mapping[str, Any]]) -> Fields:
    return {str(i["type"]): tuple(sorted(str(f) for f in i["fields"])) for i in items}


def _short(value: str, keep: int = 12) -> str:
    return value if len(value) <= keep else value[:keep] + "…"


class Walkthrough:
    def __init__(self, root: Path, console: Console) -> None:
        self.root = root
        self.console = console
        self.env = _child_env()
        self.clients: dict[str, Client] = {}
        self.citizen: dict[str, str] = {}
        self.outcomes: list[Outcome] = []

    # 1. the operator
    def setup(self, port: int) -> Server:
        c = self.console
        c.heading(1, "The operator sets up the platform")
        keys_dir = self.root / KEYS
        keys_dir.mkdir(mode=0o700)
        commands: list[list[str]] = [["init", "--data-dir", DATA]]
        for party in PARTIES:
            self.clients[party.client_id] = Client.create(party, keys_dir)
            add = ["clients", "add", "--data-dir", DATA, "--id", party.client_id]
            add += ["--name", party.name, "--kind", party.kind, "--role", party.role]
            add += ["--jwks", f"{KEYS}/{party.client_id}.jwks.json"]
            commands.append([*add, "--approved"] if party.kind == "private" else add)
        commands.append(["dev-token", "--data-dir", DATA, "--port", str(port), "--nid", BUYER_NID])
        c.line(c.dim(f"  in {self.root} (a throwaway directory); client keys in {KEYS}/"))
        for argv, output in run_operator(commands, cwd=self.root, env=self.env):
            c.command(["oncevault", *argv])
            if argv[0] == "dev-token":
                token = output[-1].strip() if output else ""
                self.citizen = {"Authorization": f"Bearer {token}"}
                c.line(c.dim(f"  {_short(token, 24)}  (the buyer's sign-in, development IdP)"))
            else:
                for line in output:
                    c.line(c.dim("  " + line))
        server = Server(self.root, port, self.env)
        c.command(["oncevault", *server.argv])
        seconds = server.start()
        c.line(c.dim(f"  serving on {server.base} (healthy after {seconds:.1f} s)"))
        return server

    def run(self, api: Api) -> None:
        self.issue(api)
        self.ask(api)
        self.approve(api)
        self.fetch(api)
        self.compare()
        self.verify(api)

    # 2. issuers
    def issue(self, api: Api) -> None:
        c = self.console
        c.heading(2, "The agencies put the papers in the buyer's vault, once")
        for issuer, record_type, data in RECORDS:
            response = api.call(
                issuer,
                "POST",
                "/v1/records",
                expect=201,
                json={"subject": {"nid": BUYER_NID}, "type": record_type, "data": data},
                headers={
                    **api.token(self.clients[issuer]),
                    "Idempotency-Key": f"demo-{issuer}-{record_type}",
                },
            )
            body = response.json()
            c.ok(
                f"{_pad(issuer, 9)} put {_pad(record_type, 22)} version {body['version']}, "
                f"{len(data)} fields (encrypted for this citizen)"
            )

    # 3. recipients ask
    def ask(self, api: Api) -> None:
        c = self.console
        c.heading(3, "Three recipients ask the buyer for consent")
        for ask in ASKS:
            body = {
                "subject": {"nid": BUYER_NID},
                "purpose": ask.purpose,
                "items": [{"type": t, "fields": list(f)} for t, f in ask.items],
                "access": "once",
                "valid_days": 30,
            }
            consent = api.call(
                ask.client_id,
                "POST",
                "/v1/consent-requests",
                expect=201,
                json=body,
                headers=api.token(self.clients[ask.client_id]),
            ).json()
            if consent["status"] != "pending":
                raise DemoFailed(f"{ask.client_id}: a new request is {consent['status']}")
            outcome = Outcome(ask=ask, consent_id=consent["consent_id"])
            outcome.granted = _fields(consent["items"])
            for record_type, fields in ask.items:
                asked = tuple(sorted(fields))
                if fields != ("*",) and outcome.granted.get(record_type) != asked:
                    raise DemoFailed(f"{ask.client_id}: the request for {record_type} was changed")
            self.outcomes.append(outcome)
            count = sum(len(f) for f in outcome.granted.values())
            c.ok(
                f"{_pad(ask.client_id, 9)} asks for {_pad(ask.purpose, 22)} {count} fields "
                f"of {len(outcome.granted)} papers, once, 30 days  ({outcome.consent_id})"
            )

    # 4. the citizen
    def approve(self, api: Api) -> None:
        c = self.console
        c.heading(4, "The buyer approves each request, once")
        pending = api.call(
            "citizen", "GET", "/v1/me/consents?status=pending", headers=self.citizen
        ).json()["consents"]
        waiting = {p["consent_id"]: p for p in pending}
        c.line(c.dim(f"  the buyer's inbox shows {len(waiting)} pending requests"))
        keys = self._jwks(api, "rc-")
        for outcome in self.outcomes:
            shown = waiting.get(outcome.consent_id)
            if shown is None:
                raise DemoFailed(f"the buyer does not see {outcome.ask.client_id}'s request")
            approved = api.call(
                "citizen",
                "POST",
                f"/v1/me/consents/{outcome.consent_id}/approve",
                headers=self.citizen,
            ).json()
            if approved["status"] != "active":
                raise DemoFailed(f"{outcome.consent_id} is {approved['status']} after approval")
            receipt = api.call(
                "citizen",
                "GET",
                f"/v1/me/consents/{outcome.consent_id}/receipt",
                headers=self.citizen,
            ).json()
            try:
                _, claims = crypto.verify_jws(
                    receipt["receipt"],
                    keys=keys,
                    typ="consent-receipt+jwt",
                    allowed_kid_prefix="rc-",
                )
            except InvalidJWS as exc:
                raise DemoFailed(f"the receipt of {outcome.consent_id}: {exc}") from None
            c.ok(
                f"approved {_pad(shown['client_name'], 27)} {shown['purpose_title']}; "
                f"signed receipt v{claims['version']} ({claims['status']})"
            )

    # 5. reads
    def fetch(self, api: Api) -> None:
        c = self.console
        c.heading(5, "Each recipient fetches its data: only the fields it was granted")
        total = sum(len(data) for _, _, data in RECORDS)
        failures: list[str] = []
        for outcome in self.outcomes:
            who = outcome.ask.client_id
            headers = api.token(self.clients[who], consent_id=outcome.consent_id)
            response = api.call(who, "GET", "/v1/data", headers=headers)
            outcome.seq = int(response.headers["x-audit-seq"])
            outcome.received = {
                str(item["type"]): tuple(sorted(item["data"])) for item in response.json()["items"]
            }
            for record_type, fields in sorted(outcome.granted.items()):
                c.line(c.dim(f"recipient {who} consented {record_type}: {', '.join(fields)}"))
            for record_type, fields in sorted(outcome.received.items()):
                c.line(f"recipient {who} received {record_type}: {', '.join(fields)}")
            released = sum(len(f) for f in outcome.received.values())
            if outcome.received != outcome.granted:
                failures.append(who)
                c.fail(f"{who} did not receive exactly its consented fields")
            else:
                c.ok(
                    f"{who}: exactly its {released} consented fields; the other "
                    f"{total - released} stayed in the vault (audit seq {outcome.seq})"
                )
        if failures:
            raise DemoFailed("released fields differ from the consent for " + ", ".join(failures))

    # 6. before and after
    def compare(self) -> None:
        c = self.console
        c.heading(6, "Before and after")
        entries = sum(len(f) for o in self.outcomes for f in o.granted.values())
        facts = len({(t, f) for o in self.outcomes for t, fs in o.granted.items() for f in fs})
        n = len(self.outcomes)
        c.table(
            ("", "today", "with oncevault"),
            [
                ("site visits", str(TODAY_SITE_VISITS), "0"),
                ("payments for papers", str(TODAY_PAYMENTS), "0"),
                ("fields re-entered", f"{entries} (of {facts} distinct facts)", "0"),
                ("the buyer's part", "fetch, copy, carry, submit", f"{n} approvals, one each"),
                ("what each recipient gets", "whole documents", "only the consented fields"),
                ("reads the buyer can see", "none", f"{n} of {n}, in the access log"),
            ],
        )
        c.line(
            c.dim(
                "  today: each paper fetched and paid for at its office, then copied onto each "
                "recipient's forms"
            )
        )

    # 7. the log
    def verify(self, api: Api) -> None:
        c = self.console
        c.heading(7, "Anyone can check the log; the buyer sees every read")
        log = api.call(
            "citizen", "GET", "/v1/me/access-log?limit=100", headers=self.citizen
        ).json()["entries"]
        by_seq = {int(e["seq"]): e for e in log}
        for outcome in self.outcomes:
            served = by_seq.get(outcome.seq)
            entry = served["entry"] if served else {}
            released = _fields(entry.get("items") or [])
            if (entry.get("action"), entry.get("client_id"), entry.get("outcome")) != (
                "data.read",
                outcome.ask.client_id,
                "ok",
            ) or released != outcome.received:
                raise DemoFailed(f"{outcome.ask.client_id}'s read is not in the buyer's log")
        seqs = ", ".join(f"{o.ask.client_id} #{o.seq}" for o in self.outcomes)
        c.ok(f"access log: all {len(self.outcomes)} reads, with the fields released ({seqs})")

        bank = self.outcomes[0]
        checkpoint = self._checkpoint_covering(api, max(o.seq for o in self.outcomes))
        try:
            header, signed = crypto.verify_jws(
                checkpoint["jws"],
                keys=self._jwks(api, "cp-"),
                typ="checkpoint+jwt",
                allowed_kid_prefix="cp-",
            )
        except InvalidJWS as exc:
            raise DemoFailed(f"checkpoint signature: {exc}") from None
        if (signed["origin"], signed["tree_size"], signed["root_hash"]) != (
            api.base,
            checkpoint["tree_size"],
            checkpoint["root_hash"],
        ):
            raise DemoFailed("the checkpoint's signed payload differs from what was served")
        size, root = int(signed["tree_size"]), str(signed["root_hash"])
        c.ok(
            f"checkpoint: {size} entries, root {root[:16]}…, signature verified "
            f"({header['alg']}, {header['kid']} from /.well-known/jwks.json)"
        )

        entry = by_seq[bank.seq]
        leaf = json.dumps(entry["entry"], sort_keys=True, separators=(",", ":")).encode("ascii")
        leaf_hash = merkle.leaf_hash(leaf)
        if leaf_hash.hex() != entry["leaf_hash"]:
            raise DemoFailed(f"the leaf hash of entry {bank.seq} does not match its content")
        proof = api.call(
            "citizen",
            "GET",
            f"/v1/me/access-log/{bank.seq}/proof?tree_size={size}",
            headers=self.citizen,
        ).json()
        path = [bytes.fromhex(h) for h in proof["inclusion_path"]]
        try:
            merkle.verify_inclusion(leaf_hash, bank.seq, size, path, bytes.fromhex(root))
        except merkle.ProofError as exc:
            raise DemoFailed(f"inclusion proof of entry {bank.seq}: {exc}") from None
        c.ok(
            f"inclusion: {bank.ask.client_id}'s read (entry {bank.seq}) is in that signed tree "
            f"({len(path)} hashes, RFC 9162, checked with hashlib)"
        )

    def _jwks(self, api: Api, prefix: str) -> dict[str, dict[str, Any]]:
        keys = api.call("public", "GET", "/.well-known/jwks.json").json()["keys"]
        return {k["kid"]: k for k in keys if str(k.get("kid", "")).startswith(prefix)}

    def _checkpoint_covering(self, api: Api, seq: int) -> dict[str, Any]:
        deadline = time.monotonic() + CHECKPOINT_TIMEOUT
        while True:
            checkpoint: dict[str, Any] = api.call("public", "GET", "/v1/audit/checkpoint").json()
            if int(checkpoint["tree_size"]) > seq:
                return checkpoint
            if time.monotonic() > deadline:
                raise DemoFailed(f"no checkpoint covers entry {seq} after {CHECKPOINT_TIMEOUT} s")
            time.sleep(0.2)

    # --serve
    def leave_a_request(self, api: Api) -> str:
        """One more pending request for the buyer to answer on the citizen page."""
        bank = self.clients["kbank"]
        consent = api.call(
            "kbank",
            "POST",
            "/v1/consent-requests",
            expect=201,
            json={
                "subject": {"nid": BUYER_NID},
                "purpose": "mortgage_screening",
                "items": [{"type": "income_certificate", "fields": ["year", "total_income"]}],
                "access": "standing",
                "valid_days": 30,
            },
            headers=api.token(bank),
        ).json()
        return str(consent["consent_id"])


@dataclass
class _Interrupts:
    """SIGTERM and SIGHUP end the demo like Ctrl-C, so the server is stopped either way."""

    previous: dict[int, Any] = field(default_factory=dict)

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            for name in ("SIGTERM", "SIGHUP"):
                number = getattr(signal, name, None)
                if number is not None:
                    self.previous[number] = signal.signal(number, _raise_interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _serve_until_interrupted(console: Console, server: Server, root: Path, waiting: str) -> int:
    c = console
    c.heading(8, "The platform keeps running")
    c.line(f"  citizen page   {c.bold(server.base + '/my')}")
    c.line(
        f"  sign in        development IdP: type the resident registration number "
        f"{c.bold(BUYER_NID)}"
    )
    c.line(f"  waiting there  kbank asks for standing access to the income certificate ({waiting})")
    c.line(f"  API            {server.base}  (docs/api.md); client keys in {root / KEYS}")
    c.line(f"  data dir       {root / DATA}  (kept; remove {root} when done)")
    c.line(c.dim("  Press Ctrl-C to stop the server."))
    while server.running():
        time.sleep(0.5)
    assert server.process is not None
    c.fail(f"the server exited with {server.process.returncode}; see {server.log_path}")
    return 1


def _timed(start: float) -> str:
    return f"{time.monotonic() - start:.1f} s"


def run_demo(*, serve: bool, out: TextIO = sys.stdout) -> int:
    """Run the home purchase end to end; return the exit code (0: every check held).

    ``serve=True`` keeps the server and its data directory after the walkthrough and
    returns when interrupted (Ctrl-C or SIGTERM), after stopping the server.
    """
    console = Console(out)
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="oncevault-demo-"))
    server: Server | None = None
    walked = False
    console.line(console.bold("oncevault demo: buying a home, with every paper submitted once"))
    try:
        with _Interrupts():
            try:
                walkthrough = Walkthrough(root, console)
                server = walkthrough.setup(_free_port())
                with httpx.Client(base_url=server.base, timeout=HTTP_TIMEOUT) as http:
                    api = Api(http, server.base)
                    walkthrough.run(api)
                    walked = True
                    console.line(
                        "\n"
                        + console.green(
                            f"demo passed: {len(walkthrough.outcomes)} recipients, each received "
                            f"exactly its consented fields ({_timed(started)})"
                        )
                    )
                    if not serve:
                        return 0
                    waiting = walkthrough.leave_a_request(api)
                return _serve_until_interrupted(console, server, root, waiting)
            except (DemoFailed, KeyError, TypeError, ValueError) as exc:
                what = str(exc) if isinstance(exc, DemoFailed) else f"unexpected answer ({exc!r})"
                console.fail(f"demo failed: {what}")
                if server is not None:
                    for line in server.log_tail():
                        console.line(console.dim("  server| " + line))
                return 1
            except KeyboardInterrupt:
                console.line("\nstopping the server" if walked else "\ninterrupted")
                return 0 if walked and serve else 130
    finally:
        if server is not None:
            server.stop()
        if not serve:
            shutil.rmtree(root, ignore_errors=True)
