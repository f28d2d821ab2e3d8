"""Tokens survive the well-known JWT and OAuth attacks (DESIGN section 6), on both engines."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from tests.e2e.conftest import Platform
from tests.helpers.clients import TestClient
from vault import crypto
from vault.clock import ManualClock
from vault.service import Actor
from vault.storage import Database

CONSENT_ROUTE = "/v1/consents/cns_doesnotexist"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"sig") -> str:
    return ".".join(
        (_b64(json.dumps(header).encode()), _b64(json.dumps(payload).encode()), _b64(signature))
    )


def _claims(platform: Platform, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": platform.issuer,
        "aud": platform.issuer,
        "sub": "kbank",
        "client_id": "kbank",
        "scope": "consumer",
        "iat": now,
        "exp": now + 300,
        "jti": "at_test" + str(now),
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(
    platform: Platform,
    *,
    typ: str = "at+jwt",
    use: str = "at",
    headers: dict[str, Any] | None = None,
    **overrides: Any,
) -> str:
    keyring = platform.runtime.keyring
    assert keyring is not None
    token = keyring.sign(use, _claims(platform, **overrides), typ=typ)  # type: ignore[arg-type]
    if headers:
        head, body, sig = token.split(".")
        merged = {**json.loads(crypto.b64url_decode(head)), **headers}
        token = ".".join((_b64(json.dumps(merged).encode()), body, sig))
    return token


async def _status(
    platform: Platform, token: str, scheme: str = "Bearer", **headers: str
) -> tuple[int, dict[str, Any], Any]:
    response = await platform.http.get(
        CONSENT_ROUTE, headers={"Authorization": f"{scheme} {token}", **headers}
    )
    return response.status_code, response.json(), response.headers


async def test_a_valid_token_reaches_the_route(platform: Platform) -> None:
    token = await platform.token("kbank")
    status, body, _ = await _status(platform, token)
    assert (status, body["code"]) == (404, "consent_not_found")  # authenticated, then not found
    header, claims = crypto.verify_jws(
        token, keys=platform.runtime.keyring.public_keys("at"), typ="at+jwt"
    )  # type: ignore[union-attr]
    assert header["alg"] == "EdDSA" and header["kid"].startswith("at-")
    assert claims["sub"] == claims["client_id"] == "kbank"
    assert claims["exp"] - claims["iat"] == 300
    assert claims["iss"] == claims["aud"] == platform.issuer


def _cases(platform: Platform) -> dict[str, str]:
    keyring = platform.runtime.keyring
    assert keyring is not None
    kid = keyring.current_kid("at")
    public = keyring.public_keys("at")[kid]
    other_private = crypto.generate_signing_key()
    good = _signed(platform)
    head, body, sig = good.split(".")
    tampered_body = _b64(json.dumps(_claims(platform, client_id="nts", sub="nts")).encode())
    public_bytes = crypto.b64url_decode(public["x"])
    hs_input = f"{_b64(json.dumps({'alg': 'HS256', 'kid': kid, 'typ': 'at+jwt'}).encode())}.{body}"
    hs256 = hs_input + "." + _b64(crypto.hmac_sha256(public_bytes + b"\x00" * 0, hs_input.encode()))
    return {
        "alg none": _forge({"alg": "none", "kid": kid, "typ": "at+jwt"}, _claims(platform), b""),
        "HS256 with the public key": hs256,
        "another key under the same kid": crypto.sign_jws(
            _claims(platform), private_key=other_private, kid=kid, typ="at+jwt"
        ),
        "tampered payload": f"{head}.{tampered_body}.{sig}",
        "expired": _signed(platform, iat=int(time.time()) - 400, exp=int(time.time()) - 100),
        "lifetime over 300 s": _signed(platform, exp=int(time.time()) + 301),
        "wrong iss": _signed(platform, iss="http://evil.example"),
        "wrong aud": _signed(platform, aud="http://evil.example"),
        "aud list": _signed(platform, aud=[platform.issuer]),
        "typ JWT": _signed(platform, typ="JWT"),
        "jku header": _signed(platform, headers={"jku": "http://evil.example/jwks"}),
        "x5u header": _signed(platform, headers={"x5u": "http://evil.example/cert"}),
        "jwk header": _signed(platform, headers={"jwk": public}),
        "x5c header": _signed(platform, headers={"x5c": ["MIIB"]}),
        "over 8 KiB": _signed(platform, padding="x" * 9000),
        "string exp": _signed(platform, exp=str(int(time.time()) + 200)),
        "receipt as token": _signed(platform, typ="consent-receipt+jwt", use="rc"),
        "checkpoint as token": _signed(platform, typ="checkpoint+jwt", use="cp"),
        "receipt key with at+jwt typ": _signed(platform, use="rc"),
        "client assertion": platform.clients["kbank"].assertion(platform.issuer + "/oauth/token"),
        "garbage": "not.a.token",
    }


CASE_NAMES = [
    "alg none",
    "HS256 with the public key",
    "another key under the same kid",
    "tampered payload",
    "expired",
    "lifetime over 300 s",
    "wrong iss",
    "wrong aud",
    "aud list",
    "typ JWT",
    "jku header",
    "x5u header",
    "jwk header",
    "x5c header",
    "over 8 KiB",
    "string exp",
    "receipt as token",
    "checkpoint as token",
    "receipt key with at+jwt typ",
    "client assertion",
    "garbage",
]


@pytest.mark.parametrize("case", CASE_NAMES)
async def test_invalid_tokens_are_401(platform: Platform, case: str) -> None:
    token = _cases(platform)[case]
    status, body, headers = await _status(platform, token)
    assert status == 401, case
    assert body["code"] == "invalid_token"
    assert headers["content-type"].startswith("application/problem+json")
    assert "www-authenticate" in headers
    assert token[:40] not in json.dumps(body)


async def test_citizen_token_and_revoked_jti(platform: Platform) -> None:
    token = await platform.token("kbank")
    form = platform.clients["kbank"].token_form(platform.issuer)
    form.pop("grant_type")
    form["token"] = token
    size = (await platform.runtime.audit.state()).size
    revoked = await platform.http.post("/oauth/revoke", data=form)
    assert revoked.status_code == 200
    status, body, _ = await _status(platform, token)
    assert (status, body["code"]) == (401, "invalid_token")
    # The revocation is a state change: one entry, committed with it (DESIGN section 7).
    entry = await platform.runtime.audit.repo.entry(size)
    assert entry is not None
    assert {k: entry.entry[k] for k in ("action", "actor", "client_id", "outcome")} == {
        "action": "token.revoked",
        "actor": {"type": "client", "id": "kbank"},
        "client_id": "kbank",
        "outcome": "ok",
    }
    assert entry.entry["request_id"] == revoked.headers["x-request-id"]
    # Revoking it again, or a token that is not kbank's, changes nothing: no entry.
    after = (await platform.runtime.audit.state()).size
    again = platform.clients["kbank"].token_form(platform.issuer)
    again.pop("grant_type")
    again["token"] = token
    assert (await platform.http.post("/oauth/revoke", data=again)).status_code == 200
    foreign = platform.clients["nts"].token_form(platform.issuer)
    foreign.pop("grant_type")
    foreign["token"] = await platform.token("kbank")
    assert (await platform.http.post("/oauth/revoke", data=foreign)).status_code == 200
    assert (await platform.runtime.audit.state()).size == after + 1  # kbank's token.issued


async def _token_error(platform: Platform, form: dict[str, str]) -> tuple[int, str]:
    response = await platform.http.post("/oauth/token", data=form)
    assert response.headers["cache-control"] == "no-store"
    return response.status_code, response.json()["error"]


async def test_invalid_client_cases(platform: Platform) -> None:
    kbank = platform.clients["kbank"]
    token_url = platform.issuer + "/oauth/token"
    stranger = TestClient("kbank")  # same id, another key
    unapproved = await platform.register(TestClient("fintech", kind="private"), approved=False)
    disabled = await platform.register(TestClient("oldbank"))
    assert platform.runtime.clients is not None
    await platform.runtime.clients.disable("oldbank", actor=Actor("operator", "test"))
    replayed = kbank.token_form(platform.issuer)
    assert (await platform.http.post("/oauth/token", data=replayed)).status_code == 200
    now = int(time.time())
    cases = {
        "jti replay": replayed,
        "foreign aud": kbank.token_form(platform.issuer, aud="http://evil.example/oauth/token"),
        "aud list": kbank.token_form(platform.issuer, aud=[token_url]),
        "exp more than 5 min ahead": kbank.token_form(platform.issuer, exp=now + 900),
        "another client's key": stranger.token_form(platform.issuer),
        "iss != sub": kbank.token_form(platform.issuer, sub="nts"),
        "alg none": {
            **kbank.token_form(platform.issuer),
            "client_assertion": _forge(
                {"alg": "none", "kid": kbank.public_jwk["kid"]},
                {"iss": "kbank", "sub": "kbank", "aud": token_url, "exp": now + 60, "jti": "x1"},
                b"",
            ),
        },
        "HS256": {
            **kbank.token_form(platform.issuer),
            "client_assertion": _forge(
                {"alg": "HS256", "kid": kbank.public_jwk["kid"]},
                {"iss": "kbank", "sub": "kbank", "aud": token_url, "exp": now + 60, "jti": "x2"},
            ),
        },
        "unknown client": TestClient("nobody").token_form(platform.issuer),
        "disabled client": disabled.token_form(platform.issuer),
        "unapproved private client": unapproved.token_form(platform.issuer),
        "expired assertion": kbank.token_form(platform.issuer, iat=now - 600, exp=now - 300),
        "no jti": kbank.token_form(platform.issuer, jti=None),
    }
    for name, form in cases.items():
        assert await _token_error(platform, form) == (401, "invalid_client"), name


async def test_scope_and_grant_errors(platform: Platform) -> None:
    kbank = platform.clients["kbank"]
    assert await _token_error(platform, kbank.token_form(platform.issuer, scope="auditor")) == (
        400,
        "invalid_scope",
    )
    form = kbank.token_form(platform.issuer)
    form["grant_type"] = "password"
    assert await _token_error(platform, form) == (400, "unsupported_grant_type")
    assert await _token_error(
        platform, kbank.token_form(platform.issuer, consent_id="cns_nope")
    ) == (400, "invalid_grant")
    # A repeated parameter is refused.
    body = (
        "&".join(f"{k}={v}" for k, v in kbank.token_form(platform.issuer).items())
        + "&scope=consumer&scope=consumer"
    )
    response = await platform.http.post(
        "/oauth/token",
        content=body.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


async def test_invalid_grant_for_consents_in_every_wrong_state(platform: Platform) -> None:
    consents = platform.runtime.consents
    assert consents is not None
    clock = platform.runtime.clock
    items = [{"type": "income_certificate", "fields": ["year"]}]

    async def new() -> str:
        consent, _ = await consents.request(
            citizen_id="cit_" + str(time.time_ns()),
            client_id="kbank",
            purpose="mortgage_screening",
            items=items,
            access="standing",
            valid_days=1,
            max_fetches=None,
            case_reference=None,
            actor=Actor("client", "kbank"),
        )
        return consent.consent_id

    pending = await new()
    rejected = await new()
    revoked = await new()
    active = await new()
    other_client = await new()
    for consent_id in (rejected,):
        c = await consents.repo.get(consent_id)
        assert c is not None
        await consents.reject(consent_id, citizen_id=c.citizen_id, actor=Actor("citizen", None))
    for consent_id in (revoked, active):
        c = await consents.repo.get(consent_id)
        assert c is not None
        await consents.approve(consent_id, citizen_id=c.citizen_id, actor=Actor("citizen", None))
    c = await consents.repo.get(revoked)
    assert c is not None
    await consents.revoke(revoked, citizen_id=c.citizen_id, actor=Actor("citizen", None))
    token = await platform.token("kbank", consent_id=active)
    assert (
        crypto.verify_jws(token, keys=platform.runtime.keyring.public_keys("at"), typ="at+jwt")[1][
            "consent_id"
        ]
        == active
    )  # type: ignore[union-attr]
    for consent_id in (pending, rejected, revoked):
        assert await _token_error(
            platform, platform.clients["kbank"].token_form(platform.issuer, consent_id=consent_id)
        ) == (400, "invalid_grant")
    nts_form = platform.clients["nts"].token_form(platform.issuer, consent_id=other_client)
    assert await _token_error(platform, nts_form) == (400, "invalid_grant")
    del clock


async def test_disabling_a_client_kills_its_token_at_once(platform: Platform) -> None:
    token = await platform.token("kbank")
    assert (await _status(platform, token))[0] == 404
    assert platform.runtime.clients is not None
    await platform.runtime.clients.disable("kbank", actor=Actor("operator", "test"))
    status, body, _ = await _status(platform, token)
    assert (status, body["code"]) == (401, "invalid_token")
    await platform.runtime.clients.enable("kbank", actor=Actor("operator", "test"))
    assert (await _status(platform, token))[0] == 404


async def test_role_not_held_is_403(platform: Platform) -> None:
    auditor = await platform.register(TestClient("bai", roles=("auditor",)))
    response = await platform.http.post("/oauth/token", data=auditor.token_form(platform.issuer))
    token = response.json()["access_token"]
    status, body, _ = await _status(platform, token)
    assert (status, body["code"]) == (403, "forbidden")


async def test_dpop(platform: Platform) -> None:
    bound = await platform.register(TestClient("secbank", dpop_required=True))
    token_url = platform.issuer + "/oauth/token"
    # The token endpoint insists on a proof for this client.
    assert await _token_error(platform, bound.token_form(platform.issuer)) == (
        400,
        "invalid_request",
    )
    response = await platform.http.post(
        "/oauth/token",
        data=bound.token_form(platform.issuer),
        headers={"DPoP": bound.dpop("POST", token_url)},
    )
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "DPoP"
    token = response.json()["access_token"]
    url = platform.issuer + CONSENT_ROUTE

    ok = await _status(platform, token, "DPoP", DPoP=bound.dpop("GET", url, token=token))
    assert ok[0] == 404
    assert (await _status(platform, token, "Bearer", DPoP=bound.dpop("GET", url, token=token)))[1][
        "code"
    ] == "invalid_token"
    proof = bound.dpop("GET", url, token=token)
    assert (await _status(platform, token, "DPoP", DPoP=proof))[0] == 404
    refusals = {
        "replayed proof": proof,
        "wrong htm": bound.dpop("POST", url, token=token),
        "wrong htu": bound.dpop("GET", "http://evil.example" + CONSENT_ROUTE, token=token),
        "stale iat": bound.dpop("GET", url, token=token, iat=int(time.time()) - 600),
        "ath mismatch": bound.dpop("GET", url, token=token + "x"),
        "another key": TestClient("x").dpop("GET", url, token=token),
    }
    for name, bad in refusals.items():
        status, body, headers = await _status(platform, token, "DPoP", DPoP=bad)
        assert (status, body["code"]) == (401, "invalid_dpop_proof"), name
        assert "DPoP" in headers["www-authenticate"]
    # Proof replay at the token endpoint too.
    replay = bound.dpop("POST", token_url)
    assert (
        await platform.http.post(
            "/oauth/token", data=bound.token_form(platform.issuer), headers={"DPoP": replay}
        )
    ).status_code == 200
    assert await _token_error_with(platform, bound.token_form(platform.issuer), replay) == (
        400,
        "invalid_dpop_proof",
    )


async def test_a_proof_dated_ahead_stays_single_use_while_it_is_accepted(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proof may be dated up to DPOP_WINDOW ahead (clock skew), and is then accepted
    until iat + DPOP_WINDOW: its use must be remembered that long, through sweeps of
    expired uses. Before the fix it was remembered until now + window + skew only, so
    a sweep in between let the same proof through twice."""
    tokens = platform.runtime.tokens
    assert tokens is not None
    bound = await platform.register(TestClient("aheadbank", dpop_required=True))
    token_url = platform.issuer + "/oauth/token"
    response = await platform.http.post(
        "/oauth/token",
        data=bound.token_form(platform.issuer),
        headers={"DPoP": bound.dpop("POST", token_url)},
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    url = platform.issuer + CONSENT_ROUTE
    clock = ManualClock(start_ms=platform.runtime.clock.now_ms())
    monkeypatch.setattr(tokens, "clock", clock)
    ahead = bound.dpop("GET", url, token=token, iat=clock.now_ms() // 1000 + 60)
    assert (await _status(platform, token, "DPoP", DPoP=ahead))[0] == 404  # accepted
    clock.advance(seconds=100)  # still inside the proof's window; a sweep is due
    sweeps: list[str] = []
    run = Database._run

    async def spied(db: Database, sql: str, args: Any, *shapes: Any) -> Any:
        if sql.startswith("DELETE FROM replay_guard"):
            sweeps.append(sql)
        return await run(db, sql, args, *shapes)

    monkeypatch.setattr(Database, "_run", spied)
    status, body, _ = await _status(platform, token, "DPoP", DPoP=ahead)
    assert (status, body["code"]) == (401, "invalid_dpop_proof")
    assert len(sweeps) == 1  # that use swept expired uses first, and the proof's survived


async def _token_error_with(platform: Platform, form: dict[str, str], dpop: str) -> tuple[int, str]:
    response = await platform.http.post("/oauth/token", data=form, headers={"DPoP": dpop})
    return response.status_code, response.json()["error"]


async def test_issuance_and_refusals_are_audited(platform: Platform) -> None:
    await platform.token("kbank")
    await platform.http.post(
        "/oauth/token", data=platform.clients["kbank"].token_form(platform.issuer, scope="auditor")
    )
    rows = await platform.runtime.database.fetch(
        "SELECT leaf FROM audit_entries WHERE action LIKE 'token.%' ORDER BY seq"
    )
    entries = [json.loads(bytes(r["leaf"])) for r in rows]
    assert [(e["action"], e["outcome"], e["reason_code"]) for e in entries] == [
        ("token.issued", "ok", None),
        ("token.refused", "denied", "invalid_scope"),
    ]
    assert all("eyJ" not in json.dumps(e) for e in entries)


async def test_metadata_and_jwks(platform: Platform) -> None:
    meta = (await platform.http.get("/.well-known/oauth-authorization-server")).json()
    assert meta["issuer"] == platform.issuer
    assert meta["token_endpoint"] == platform.issuer + "/oauth/token"
    keys = (await platform.http.get("/.well-known/jwks.json")).json()["keys"]
    assert {k["kid"][:3] for k in keys} == {"at-", "rc-", "cp-"}
    assert all(k["use"] == "sig" and "d" not in k for k in keys)


async def test_a_remembered_signature_never_outlives_revocation_or_expiry(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers remember verified signatures (consent/tokens.py), never authorization:
    a token already accepted is refused at once when revoked or expired (disabled
    clients: test_disabling_a_client_kills_its_token_at_once)."""
    tokens = platform.runtime.tokens
    assert tokens is not None
    revoked, expiring = await platform.token("kbank"), await platform.token("kbank")
    for token in (revoked, expiring):
        assert (await _status(platform, token))[0] == 404  # accepted: signature remembered

    form = platform.clients["kbank"].token_form(platform.issuer)
    form.pop("grant_type")
    form["token"] = revoked
    assert (await platform.http.post("/oauth/revoke", data=form)).status_code == 200
    status, body, _ = await _status(platform, revoked)
    assert (status, body["code"]) == (401, "invalid_token")

    assert (await _status(platform, expiring))[0] == 404
    later = ManualClock(start_ms=platform.runtime.clock.now_ms() + 301_000)
    monkeypatch.setattr(tokens, "clock", later)
    status, body, _ = await _status(platform, expiring)
    assert (status, body["code"]) == (401, "invalid_token")


async def test_the_signature_cache_is_bounded(platform: Platform) -> None:
    from consent.tokens import VERIFIED_SIGNATURES_CACHED  # noqa: PLC0415

    tokens = platform.runtime.tokens
    assert tokens is not None
    token = await platform.token("kbank")
    assert (await _status(platform, token))[0] == 404
    assert token in tokens._verified  # white box: the cache this test bounds
    for n in range(VERIFIED_SIGNATURES_CACHED + 10):  # fill it with other live tokens
        tokens._verified[f"x{n}"] = ("at-x", {"exp": 2**40})
    fresh = await platform.token("kbank")
    assert (await _status(platform, fresh))[0] == 404
    assert len(tokens._verified) <= VERIFIED_SIGNATURES_CACHED
    assert fresh in tokens._verified
