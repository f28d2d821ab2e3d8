"""Citizen tokens (api/idp.py): every claim rule, both IdPs, freshness, the dev IdP key."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

# pyjwt is an independent JOSE implementation: it forges genuine RS256 and HS256
# tokens, as an external IdP (or an attacker) would.
import jwt  # noqa: TID251
import pytest

from api.idp import (
    DEV_AUDIENCE,
    CitizenAuthError,
    CitizenPrincipal,
    CitizenTokenVerifier,
    DevIdP,
    StaleAuthentication,
    dev_issuer,
    dev_token,
    load_idp_jwks,
    require_fresh,
)
from api.settings import Settings, SettingsError, load_settings
from vault import crypto
from vault.errors import DecryptionError, InvalidSubject
from vault.models import Subject

NOW = 1_780_000_000
IDP = "https://idp.example.go.kr"
AUD = "oncevault-web"
PLATFORM = "http://127.0.0.1:8000"
NID = "850315-2345678"  # the canary: never in an error message, a repr or a log
NID_DIGITS = NID.replace("-", "")
CI = "Q0kxMjM0NTY3ODkwYWJjZGVm+/=="


@pytest.fixture(scope="module")
def ed_key() -> tuple[bytes, dict[str, str]]:
    return crypto.generate_client_keypair("EdDSA")


@pytest.fixture(scope="module")
def rsa_key() -> tuple[bytes, dict[str, str]]:
    pem, jwk = crypto.generate_client_keypair("PS256")
    return pem, {**jwk, "alg": "RS256"}  # as an OpenID provider publishes it


@pytest.fixture
def jwks_file(
    tmp_path: Path, ed_key: tuple[bytes, dict[str, str]], rsa_key: tuple[bytes, dict[str, str]]
) -> Path:
    path = tmp_path / "idp-jwks.json"
    path.write_text(json.dumps({"keys": [ed_key[1], rsa_key[1]]}), encoding="utf-8")
    return path


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path, jwks_file: Path) -> SettingsFactory:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700, exist_ok=True)

    def make(*, dev: bool = False, external: bool = True, **extra: str) -> Settings:
        flags: dict[str, str | None] = {"ONCEVAULT_ISSUER": PLATFORM}
        if external:
            flags.update(
                {
                    "ONCEVAULT_IDP_ISSUER": IDP,
                    "ONCEVAULT_IDP_JWKS_FILE": str(jwks_file),
                    "ONCEVAULT_IDP_AUDIENCE": AUD,
                }
            )
        flags["ONCEVAULT_DEV_IDP"] = "1" if dev else "0"
        flags.update(extra)
        return load_settings(flags, {}, data_dir_flag=str(data_dir))

    return make


@pytest.fixture
def verifier(make_settings: SettingsFactory) -> CitizenTokenVerifier:
    return CitizenTokenVerifier(make_settings())


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": IDP,
        "aud": AUD,
        "sub": NID,
        "iat": NOW - 10,
        "exp": NOW + 300,
        "auth_time": NOW - 20,
        "jti": "j-1",
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def b64json(value: object) -> str:
    return crypto.b64url_encode(json.dumps(value, separators=(",", ":")).encode())


@pytest.fixture
def ed_token(ed_key: tuple[bytes, dict[str, str]]) -> Callable[..., str]:
    pem, jwk = ed_key

    def sign(payload: dict[str, Any] | None = None, *, typ: str | None = None, **kw: Any) -> str:
        return crypto.sign_jws_with_pem(
            payload if payload is not None else claims(**kw),
            private_pem=pem,
            kid=jwk["kid"],
            typ=typ,
            alg="EdDSA",
        )

    return sign


@pytest.fixture
def rsa_token(rsa_key: tuple[bytes, dict[str, str]]) -> Callable[..., str]:
    pem, jwk = rsa_key

    def sign(payload: dict[str, Any] | None = None, *, alg: str = "RS256", **kw: Any) -> str:
        body = payload if payload is not None else claims(**kw)
        return jwt.encode(body, pem, algorithm=alg, headers={"kid": jwk["kid"], "typ": "JWT"})

    return sign


def refused(verifier: CitizenTokenVerifier, token: str, message: str, *, now: int = NOW) -> None:
    with pytest.raises(CitizenAuthError) as excinfo:
        verifier.verify(token, now=now)
    error = excinfo.value
    assert str(error) == message
    assert error.code == "invalid_token"
    assert NID not in str(error)
    assert NID_DIGITS not in str(error)
    assert error.__cause__ is None


# --------------------------------------------------------------------------
# Accepted tokens
# --------------------------------------------------------------------------


def test_ed25519_token_is_accepted(
    verifier: CitizenTokenVerifier, ed_token: Callable[..., str]
) -> None:
    principal = verifier.verify(ed_token(), now=NOW)
    assert principal == CitizenPrincipal(
        subject=Subject("nid", NID_DIGITS), issuer=IDP, auth_time=NOW - 20, expires_at=NOW + 300
    )
    assert NID_DIGITS not in repr(principal)
    assert NID_DIGITS not in str(principal)
    assert "kind='nid'" in repr(principal)


def test_rs256_token_is_accepted(
    verifier: CitizenTokenVerifier, rsa_token: Callable[..., str]
) -> None:
    principal = verifier.verify(rsa_token(), now=NOW)
    assert principal.subject == Subject("nid", NID_DIGITS)
    assert principal.issuer == IDP


def test_rsa_key_pins_rs256(verifier: CitizenTokenVerifier, rsa_token: Callable[..., str]) -> None:
    refused(verifier, rsa_token(alg="PS256"), "alg not allowed for this key")
    refused(verifier, rsa_token(alg="RS512"), "alg not allowed for this key")


@pytest.mark.parametrize("typ", [None, "JWT"])
def test_typ_absent_or_jwt(
    verifier: CitizenTokenVerifier, ed_token: Callable[..., str], typ: str | None
) -> None:
    assert verifier.verify(ed_token(typ=typ), now=NOW).issuer == IDP


@pytest.mark.parametrize("typ", ["at+jwt", "jwt", "JOSE", ""])
def test_other_typ_is_refused(
    verifier: CitizenTokenVerifier, ed_token: Callable[..., str], typ: str
) -> None:
    refused(verifier, ed_token(typ=typ), "wrong typ")


def test_auth_time_is_optional(
    verifier: CitizenTokenVerifier, ed_token: Callable[..., str]
) -> None:
    principal = verifier.verify(ed_token(claims(auth_time=None)), now=NOW)
    assert principal.auth_time is None


def test_dashless_nid_is_accepted(
    verifier: CitizenTokenVerifier, ed_token: Callable[..., str]
) -> None:
    assert verifier.verify(ed_token(sub=NID_DIGITS), now=NOW).subject.value == NID_DIGITS


# --------------------------------------------------------------------------
# Claims: issuer, audience, times, identifier
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"iss": "https://evil.example"}, "untrusted issuer"),
        ({"iss": IDP + "/"}, "untrusted issuer"),
        ({"iss": [IDP]}, "untrusted issuer"),
        ({"iss": None}, "untrusted issuer"),
        ({"iss": dev_issuer(PLATFORM)}, "untrusted issuer"),
        ({"aud": "someone-else"}, "wrong audience"),
        ({"aud": [AUD, "other"]}, "wrong audience"),
        ({"aud": ["other", AUD]}, "wrong audience"),
        ({"aud": []}, "wrong audience"),
        ({"aud": [[AUD]]}, "wrong audience"),
        ({"aud": None}, "wrong audience"),
        ({"exp": None}, "missing exp"),
        ({"iat": None}, "missing iat"),
        ({"exp": str(NOW + 300)}, "exp is not an integer"),
        ({"iat": str(NOW)}, "iat is not an integer"),
        ({"exp": float(NOW + 300)}, "exp is not an integer"),
        ({"iat": True}, "iat is not an integer"),
        ({"exp": -1}, "exp out of range"),
        ({"exp": 2**63}, "exp out of range"),
        ({"exp": NOW - 30}, "token expired"),
        ({"iat": NOW + 31, "exp": NOW + 600}, "token issued in the future"),
        ({"exp": NOW + 20, "iat": NOW + 20}, "exp is not after iat"),
        ({"iat": NOW - 3000, "exp": NOW + 601}, "token lifetime over 1 hour"),
        ({"nbf": NOW + 31}, "token not yet valid"),
        ({"nbf": "0"}, "nbf is not an integer"),
        ({"auth_time": str(NOW)}, "auth_time is not an integer"),
        ({"auth_time": NOW + 31}, "auth_time in the future"),
        ({"sub": None}, "no citizen identifier in the token"),
        ({"sub": "85031-52345678"}, "malformed citizen identifier"),
        ({"sub": NID + "0"}, "malformed citizen identifier"),
        ({"sub": int(NID_DIGITS)}, "malformed citizen identifier"),
        ({"sub": "user-" + NID}, "malformed citizen identifier"),
    ],
)
def test_claim_refusals(
    verifier: CitizenTokenVerifier,
    ed_token: Callable[..., str],
    changes: dict[str, Any],
    message: str,
) -> None:
    payload = claims()
    for name, value in changes.items():
        if value is None:
            payload.pop(name, None)
        else:
            payload[name] = value
    refused(verifier, ed_token(payload), message)


def test_single_element_audience_list_is_accepted(
    verifier: CitizenTokenVerifier, ed_token: Callable[..., str]
) -> None:
    assert verifier.verify(ed_token(aud=[AUD]), now=NOW).issuer == IDP


def test_expiry_boundary_with_30_seconds_of_skew(
    verifier: CitizenTokenVerifier, ed_token: Callable[..., str]
) -> None:
    token = ed_token(iat=NOW - 100, exp=NOW)
    assert verifier.verify(token, now=NOW + 29).expires_at == NOW
    refused(verifier, token, "token expired", now=NOW + 30)


def test_iat_boundary_with_30_seconds_of_skew(
    verifier: CitizenTokenVerifier, ed_token: Callable[..., str]
) -> None:
    assert verifier.verify(ed_token(iat=NOW + 30, exp=NOW + 300), now=NOW)
    refused(verifier, ed_token(iat=NOW + 31, exp=NOW + 300), "token issued in the future")


def test_lifetime_boundary_is_one_hour(
    verifier: CitizenTokenVerifier, ed_token: Callable[..., str]
) -> None:
    assert verifier.verify(ed_token(iat=NOW - 100, exp=NOW - 100 + 3600), now=NOW)
    refused(verifier, ed_token(iat=NOW - 100, exp=NOW - 100 + 3601), "token lifetime over 1 hour")


def test_custom_nid_claim(make_settings: SettingsFactory, ed_token: Callable[..., str]) -> None:
    verifier = CitizenTokenVerifier(make_settings(ONCEVAULT_IDP_NID_CLAIM="resident_no"))
    principal = verifier.verify(ed_token(sub="opaque-123", resident_no=NID), now=NOW)
    assert principal.subject == Subject("nid", NID_DIGITS)
    refused(verifier, ed_token(sub=NID), "no citizen identifier in the token")


def test_ci_claim_when_configured_and_present(
    make_settings: SettingsFactory, ed_token: Callable[..., str]
) -> None:
    verifier = CitizenTokenVerifier(make_settings(ONCEVAULT_IDP_CI_CLAIM="ci"))
    # Both: the resident number, with the CI to link to the same citizen.
    both = verifier.verify(ed_token(ci=CI), now=NOW)
    assert (both.subject, both.link) == (Subject("nid", NID_DIGITS), Subject("ci", CI))
    assert CI not in repr(both) and NID_DIGITS not in repr(both)
    # The CI alone decides when there is no resident number.
    alone = verifier.verify(ed_token(sub=None, ci=CI), now=NOW)
    assert (alone.subject, alone.link) == (Subject("ci", CI), None)
    # Absent CI: the nid claim decides.
    plain = verifier.verify(ed_token(), now=NOW)
    assert (plain.subject, plain.link) == (Subject("nid", NID_DIGITS), None)
    # Present but malformed CI: refused, not silently replaced by the nid.
    refused(verifier, ed_token(ci="not a ci!"), "malformed ci claim")
    refused(verifier, ed_token(ci=12345), "malformed ci claim")
    refused(verifier, ed_token(ci=CI + NID_DIGITS * 30), "malformed ci claim")
    refused(verifier, ed_token(sub=None), "no citizen identifier in the token")


def test_ci_claim_is_ignored_when_not_configured(
    verifier: CitizenTokenVerifier, ed_token: Callable[..., str]
) -> None:
    assert verifier.verify(ed_token(ci=CI), now=NOW).subject.kind == "nid"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"ONCEVAULT_IDP_NID_CLAIM": "iss"}, "ONCEVAULT_IDP_NID_CLAIM"),
        ({"ONCEVAULT_IDP_CI_CLAIM": "aud"}, "ONCEVAULT_IDP_CI_CLAIM"),
        ({"ONCEVAULT_IDP_CI_CLAIM": "sub"}, "ONCEVAULT_IDP_CI_CLAIM: must differ"),
    ],
)
def test_identifier_claim_settings_are_checked(
    make_settings: SettingsFactory, extra: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=f"^{message}"):
        CitizenTokenVerifier(make_settings(**extra))


# --------------------------------------------------------------------------
# Signature, header and size
# --------------------------------------------------------------------------


def test_bad_signature(verifier: CitizenTokenVerifier, ed_token: Callable[..., str]) -> None:
    header, _payload, signature = ed_token().split(".")
    forged = f"{header}.{b64json(claims(sub='900101-1234567'))}.{signature}"
    refused(verifier, forged, "bad signature")


def test_token_from_an_unknown_key(verifier: CitizenTokenVerifier) -> None:
    pem, jwk = crypto.generate_client_keypair("EdDSA")
    token = crypto.sign_jws_with_pem(
        claims(), private_pem=pem, kid=jwk["kid"], typ="JWT", alg="EdDSA"
    )
    refused(verifier, token, "unknown kid")


def test_signature_by_another_key_under_a_known_kid(
    verifier: CitizenTokenVerifier, ed_key: tuple[bytes, dict[str, str]]
) -> None:
    pem, _jwk = crypto.generate_client_keypair("EdDSA")
    token = crypto.sign_jws_with_pem(
        claims(), private_pem=pem, kid=ed_key[1]["kid"], typ="JWT", alg="EdDSA"
    )
    refused(verifier, token, "bad signature")


def test_alg_none_is_refused(
    verifier: CitizenTokenVerifier, ed_key: tuple[bytes, dict[str, str]]
) -> None:
    header = b64json({"alg": "none", "kid": ed_key[1]["kid"], "typ": "JWT"})
    body = b64json(claims())
    refused(verifier, f"{header}.{body}.", "malformed token")
    refused(verifier, f"{header}.{body}.AAAA", "alg not allowed for this key")


def test_hs256_with_the_public_key_as_secret_is_refused(
    verifier: CitizenTokenVerifier, rsa_key: tuple[bytes, dict[str, str]]
) -> None:
    # The classic confusion attack: HMAC keyed with the published key material.
    for secret in (json.dumps(rsa_key[1]).encode(), crypto.b64url_decode(rsa_key[1]["n"])):
        signing_input = (
            b64json({"alg": "HS256", "kid": rsa_key[1]["kid"]}) + "." + b64json(claims())
        )
        mac = crypto.hmac_sha256(secret, signing_input.encode())
        refused(
            verifier, f"{signing_input}.{crypto.b64url_encode(mac)}", "alg not allowed for this key"
        )


def test_missing_kid_and_embedded_key_headers(
    verifier: CitizenTokenVerifier, ed_key: tuple[bytes, dict[str, str]]
) -> None:
    pem, jwk = ed_key
    no_kid = crypto.sign_jws_with_pem(claims(), private_pem=pem, kid=None, typ=None, alg="EdDSA")
    refused(verifier, no_kid, "missing kid")
    with_jku = crypto.sign_jws_with_pem(
        claims(),
        private_pem=pem,
        kid=jwk["kid"],
        typ=None,
        alg="EdDSA",
        extra_headers={"jku": "https://evil.example/jwks"},
    )
    refused(verifier, with_jku, "forbidden header jku")


def test_oversized_token_is_refused_before_decoding(verifier: CitizenTokenVerifier) -> None:
    refused(verifier, "x" * 8193, "token too large")
    refused(verifier, "a." + "b" * 8190 + ".c", "token too large")


def test_padded_token_over_8_kib_is_refused(
    verifier: CitizenTokenVerifier, ed_token: Callable[..., str]
) -> None:
    token = ed_token(pad="p" * 6000)
    assert len(token) > 8192
    refused(verifier, token, "token too large")


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", "é.é.é", "..."])
def test_malformed_tokens(verifier: CitizenTokenVerifier, token: str) -> None:
    refused(verifier, token, "malformed token")


def test_non_string_token(verifier: CitizenTokenVerifier) -> None:
    refused(verifier, b"a.b.c", "token is not a string")  # type: ignore[arg-type]


def test_no_idp_configured_refuses_everything(
    make_settings: SettingsFactory, ed_token: Callable[..., str]
) -> None:
    verifier = CitizenTokenVerifier(make_settings(external=False))
    assert verifier.issuers == frozenset()
    refused(verifier, ed_token(), "no identity provider is configured")


def test_error_messages_never_carry_the_identifier(
    verifier: CitizenTokenVerifier, ed_token: Callable[..., str], rsa_token: Callable[..., str]
) -> None:
    """A canary nid in every claim and in the header: no refusal quotes any of it."""
    hostile = [
        ed_token(iss=NID),
        ed_token(aud=NID),
        ed_token(exp=NID),
        ed_token(iat=NID),
        ed_token(nbf=NID),
        ed_token(auth_time=NID),
        ed_token(exp=NOW - 1000, iat=NOW - 1100),
        ed_token(sub=NID + "x"),
        ed_token(sub=[NID]),
        ed_token(typ=NID),
        rsa_token(alg="PS256"),
        ed_token(aud=[NID, AUD]),
    ]
    for token in hostile:
        with pytest.raises(CitizenAuthError) as excinfo:
            verifier.verify(token, now=NOW)
        assert NID not in str(excinfo.value)
        assert NID_DIGITS not in str(excinfo.value)


# --------------------------------------------------------------------------
# The external JWKS file
# --------------------------------------------------------------------------


def _write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


def test_load_idp_jwks_strips_alg_and_skips_encryption_keys(
    tmp_path: Path, ed_key: tuple[bytes, dict[str, str]], rsa_key: tuple[bytes, dict[str, str]]
) -> None:
    enc = {**crypto.generate_client_keypair("ES256")[1], "use": "enc", "kid": "enc-1"}
    enc.pop("alg")
    keys = load_idp_jwks(_write(tmp_path, {"keys": [ed_key[1], rsa_key[1], enc]}))
    assert set(keys) == {ed_key[1]["kid"], rsa_key[1]["kid"]}
    assert all("alg" not in jwk for jwk in keys.values())


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{not json", "is not JSON"),
        ([], "must be a JWKS"),
        ({"keys": {}}, "must be a JWKS"),
        ({"keys": []}, "has no signing keys"),
        ({"keys": ["x"]}, "key 0 is not a JSON object"),
        ({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}, "private member 'k'"),
    ],
)
def test_load_idp_jwks_refusals(tmp_path: Path, document: object, message: str) -> None:
    with pytest.raises(SettingsError, match=f"^ONCEVAULT_IDP_JWKS_FILE: .*{message}"):
        load_idp_jwks(_write(tmp_path, document))


def test_load_idp_jwks_refuses_private_members_even_in_encryption_keys(
    tmp_path: Path, rsa_key: tuple[bytes, dict[str, str]]
) -> None:
    leaked = {**rsa_key[1], "d": "AQAB", "use": "enc"}
    with pytest.raises(SettingsError, match="private member 'd'"):
        load_idp_jwks(_write(tmp_path, {"keys": [leaked]}))


def test_load_idp_jwks_refuses_a_mismatched_alg(
    tmp_path: Path, rsa_key: tuple[bytes, dict[str, str]], ed_key: tuple[bytes, dict[str, str]]
) -> None:
    with pytest.raises(SettingsError, match="key 0 declares alg other than RS256"):
        load_idp_jwks(_write(tmp_path, {"keys": [{**rsa_key[1], "alg": "PS256"}]}))
    with pytest.raises(SettingsError, match="key 1 declares alg other than EdDSA"):
        load_idp_jwks(_write(tmp_path, {"keys": [rsa_key[1], {**ed_key[1], "alg": "RS256"}]}))


def test_load_idp_jwks_refuses_weak_or_duplicate_keys(
    tmp_path: Path, ed_key: tuple[bytes, dict[str, str]]
) -> None:
    with pytest.raises(SettingsError, match="duplicate kid"):
        load_idp_jwks(_write(tmp_path, {"keys": [ed_key[1], ed_key[1]]}))
    with pytest.raises(SettingsError, match="kid is required"):
        load_idp_jwks(
            _write(tmp_path, {"keys": [{k: v for k, v in ed_key[1].items() if k != "kid"}]})
        )


def test_unreadable_jwks_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot be read"):
        load_idp_jwks(tmp_path / "missing.json")


# --------------------------------------------------------------------------
# The development IdP: trusted only while ONCEVAULT_DEV_IDP is on
# --------------------------------------------------------------------------


def test_dev_token_is_refused_while_the_flag_is_off(make_settings: SettingsFactory) -> None:
    on = make_settings(dev=True)
    idp = DevIdP.load_or_create(on.data_dir, on.issuer)
    token = idp.mint(NID, now=NOW)
    assert (on.data_dir / "dev-idp" / "key.json").exists()
    # The key file exists and the very same DevIdP is even handed over: still refused.
    for verifier in (
        CitizenTokenVerifier(make_settings(dev=False)),
        CitizenTokenVerifier(make_settings(dev=False), dev_idp=idp),
        CitizenTokenVerifier(make_settings(dev=False, external=False), dev_idp=idp),
    ):
        assert dev_issuer(PLATFORM) not in verifier.issuers
        with pytest.raises(CitizenAuthError) as excinfo:
            verifier.verify(token, now=NOW)
        assert excinfo.value.code == "invalid_token"


def test_dev_token_is_accepted_while_the_flag_is_on(make_settings: SettingsFactory) -> None:
    settings = make_settings(dev=True)
    verifier = CitizenTokenVerifier(settings)  # loads (creates) the key from the data dir
    idp = DevIdP.load_or_create(settings.data_dir, settings.issuer)
    principal = verifier.verify(idp.mint(NID, now=NOW), now=NOW + 5)
    assert principal.subject == Subject("nid", NID_DIGITS)
    assert principal.issuer == PLATFORM + "/dev-idp"
    assert principal.auth_time == NOW
    assert principal.expires_at == NOW + 900
    assert verifier.issuers == {IDP, PLATFORM + "/dev-idp"}


def test_keys_are_bound_to_their_issuer(
    make_settings: SettingsFactory, ed_token: Callable[..., str]
) -> None:
    settings = make_settings(dev=True)
    verifier = CitizenTokenVerifier(settings)
    idp = DevIdP.load_or_create(settings.data_dir, settings.issuer)
    # The external IdP's key cannot speak for the dev IdP ...
    refused(verifier, ed_token(iss=idp.issuer, aud=DEV_AUDIENCE), "untrusted issuer")
    # ... nor the dev IdP's key for the external IdP.
    dev_claims = json.loads(crypto.b64url_decode(idp.mint(NID, now=NOW).split(".")[1]))
    dev_claims.update(iss=IDP, aud=AUD)
    forged = crypto.sign_jws(dev_claims, private_key=idp._seed, kid=idp.kid, typ="JWT")
    refused(verifier, forged, "untrusted issuer")


def test_dev_tokens_need_the_dev_audience(make_settings: SettingsFactory) -> None:
    settings = make_settings(dev=True)
    verifier = CitizenTokenVerifier(settings)
    idp = DevIdP.load_or_create(settings.data_dir, settings.issuer)
    refused(verifier, idp.mint_for(NID, now=NOW, audience=AUD), "wrong audience")


def test_dev_idp_for_another_platform_is_refused(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(dev=True)
    other = DevIdP.load_or_create(settings.data_dir, "http://127.0.0.1:9999")
    with pytest.raises(SettingsError, match="another issuer"):
        CitizenTokenVerifier(settings, dev_idp=other)


def test_dev_idp_issuer_may_not_be_the_external_issuer(make_settings: SettingsFactory) -> None:
    with pytest.raises(SettingsError, match="must differ from the development IdP"):
        CitizenTokenVerifier(make_settings(dev=True, ONCEVAULT_IDP_ISSUER=PLATFORM + "/dev-idp"))


def test_dev_idp_with_a_custom_nid_claim(make_settings: SettingsFactory) -> None:
    settings = make_settings(dev=True, ONCEVAULT_IDP_NID_CLAIM="resident_no")
    verifier = CitizenTokenVerifier(settings)
    idp = DevIdP.load_or_create(settings.data_dir, settings.issuer, nid_claim="resident_no")
    token = idp.mint(NID, now=NOW)
    payload = json.loads(crypto.b64url_decode(token.split(".")[1]))
    assert payload["resident_no"] == NID_DIGITS
    assert payload["nid"] == NID_DIGITS
    assert NID_DIGITS not in payload["sub"]
    assert payload["sub"].startswith("dev-")
    assert (
        payload["sub"]
        == json.loads(crypto.b64url_decode(idp.mint(NID, now=NOW).split(".")[1]))["sub"]
    )
    assert verifier.verify(token, now=NOW).subject == Subject("nid", NID_DIGITS)


# --------------------------------------------------------------------------
# DevIdP: the key file and minting
# --------------------------------------------------------------------------


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    idp = DevIdP.load_or_create(tmp_path, PLATFORM)
    directory = tmp_path / "dev-idp"
    path = directory / "key.json"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert idp.kid.startswith("dev-")
    assert idp.issuer == PLATFORM + "/dev-idp"
    again = DevIdP.load_or_create(tmp_path, PLATFORM + "/")
    assert again.kid == idp.kid
    assert again.issuer == idp.issuer
    assert [p.name for p in directory.iterdir()] == ["key.json"]  # no temporary files left
    assert "seed" not in repr(idp)
    assert json.loads(path.read_text())["seed"] not in repr(idp)


def test_jwks_is_public_only(tmp_path: Path) -> None:
    idp = DevIdP.load_or_create(tmp_path, PLATFORM)
    (jwk,) = idp.jwks()["keys"]
    assert jwk == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": jwk["x"],
        "kid": idp.kid,
        "use": "sig",
        "alg": "EdDSA",
    }
    assert crypto.validate_public_jwks(idp.jwks()) == {idp.kid: jwk}


@pytest.mark.parametrize(("target", "mode"), [("dev-idp/key.json", 0o644), ("dev-idp", 0o755)])
def test_loose_permissions_are_refused(tmp_path: Path, target: str, mode: int) -> None:
    DevIdP.load_or_create(tmp_path, PLATFORM)
    (tmp_path / target).chmod(mode)
    with pytest.raises(SettingsError, match="must be mode 0"):
        DevIdP.load_or_create(tmp_path, PLATFORM)


def test_corrupt_or_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "dev-idp"
    directory.mkdir(mode=0o700)
    path = directory / "key.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b'{"seed": "short"}')
    os.close(fd)
    with pytest.raises(SettingsError, match="not a development IdP key file"):
        DevIdP.load_or_create(tmp_path, PLATFORM)
    path.unlink()
    (tmp_path / "elsewhere.json").write_text("{}")
    path.symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(SettingsError, match="cannot be read"):
        DevIdP.load_or_create(tmp_path, PLATFORM)


def test_missing_data_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="run `oncevault init` first"):
        DevIdP.load_or_create(tmp_path / "nope", PLATFORM)
    assert not (tmp_path / "nope").exists()


def test_mint_claims(tmp_path: Path) -> None:
    idp = DevIdP.load_or_create(tmp_path, PLATFORM)
    token = idp.mint(NID, now=NOW, lifetime=120, auth_time=NOW - 50)
    header, payload = crypto.verify_jws(token, keys={idp.kid: idp.jwks()["keys"][0]}, typ="JWT")
    assert header == {"alg": "EdDSA", "kid": idp.kid, "typ": "JWT"}
    assert payload == {
        "iss": PLATFORM + "/dev-idp",
        "sub": NID_DIGITS,
        "nid": NID_DIGITS,
        "aud": DEV_AUDIENCE,
        "iat": NOW,
        "exp": NOW + 120,
        "auth_time": NOW - 50,
        "jti": payload["jti"],
    }
    other = crypto.verify_jws(
        idp.mint(NID, now=NOW), keys={idp.kid: idp.jwks()["keys"][0]}, typ="JWT"
    )
    assert other[1]["jti"] != payload["jti"]
    assert other[1]["auth_time"] == NOW


@pytest.mark.parametrize("nid", ["", "12345", NID + "1", "abcdef-1234567", " " + NID])
def test_mint_refuses_malformed_nids_without_echo(tmp_path: Path, nid: str) -> None:
    idp = DevIdP.load_or_create(tmp_path, PLATFORM)
    with pytest.raises(InvalidSubject) as excinfo:
        idp.mint(nid, now=NOW)
    assert str(excinfo.value) == "subject.nid: expected 13 digits (YYMMDD-NNNNNNN)"


@pytest.mark.parametrize("lifetime", [0, -1, 3601])
def test_mint_refuses_bad_lifetimes(tmp_path: Path, lifetime: int) -> None:
    idp = DevIdP.load_or_create(tmp_path, PLATFORM)
    with pytest.raises(ValueError, match="lifetime"):
        idp.mint(NID, now=NOW, lifetime=lifetime)


def test_sealed_values_are_bound_to_their_purpose(tmp_path: Path) -> None:
    idp = DevIdP.load_or_create(tmp_path, PLATFORM)
    sealed = idp.seal("code", {"a": 1})
    assert idp.unseal("code", sealed) == {"a": 1}
    with pytest.raises(DecryptionError):
        idp.unseal("form", sealed)
    other = DevIdP(seed=bytes(32), issuer=idp.issuer)  # another key, same issuer
    with pytest.raises(DecryptionError):
        other.unseal("code", sealed)
    elsewhere = DevIdP.load_or_create(tmp_path, "http://127.0.0.1:9999")  # same key, other issuer
    with pytest.raises(DecryptionError):
        elsewhere.unseal("code", sealed)
    for bad in ("", "!!", sealed[:-2], sealed + "A", "A" * 5000):
        with pytest.raises(DecryptionError):
            idp.unseal("code", bad)


# --------------------------------------------------------------------------
# dev_token (the CLI's `oncevault dev-token --nid NID`)
# --------------------------------------------------------------------------


def test_dev_token_needs_the_flag(make_settings: SettingsFactory) -> None:
    settings = make_settings(dev=False)
    with pytest.raises(SettingsError, match=r"^ONCEVAULT_DEV_IDP: the development IdP is off"):
        dev_token(settings, NID)
    assert not (settings.data_dir / "dev-idp").exists()


def test_dev_token_verifies(make_settings: SettingsFactory) -> None:
    settings = make_settings(dev=True)
    token = dev_token(settings, NID, now=NOW)
    principal = CitizenTokenVerifier(settings).verify(token, now=NOW + 60)
    assert principal.subject == Subject("nid", NID_DIGITS)
    require_fresh(principal, now=NOW + 60)


def test_dev_token_refuses_a_bad_nid_without_echo(make_settings: SettingsFactory) -> None:
    with pytest.raises(
        SettingsError, match=r"^--nid: expected a resident registration number"
    ) as excinfo:
        dev_token(make_settings(dev=True), "85031X-2345678")
    assert "85031X" not in str(excinfo.value)


# --------------------------------------------------------------------------
# Freshness: approve, accept and erase need auth_time within 10 minutes
# --------------------------------------------------------------------------


def _principal(auth_time: int | None) -> CitizenPrincipal:
    return CitizenPrincipal(
        subject=Subject("nid", NID_DIGITS), issuer=IDP, auth_time=auth_time, expires_at=NOW + 300
    )


@pytest.mark.parametrize("age", [0, 1, 599, 600])
def test_fresh_enough(age: int) -> None:
    require_fresh(_principal(NOW - age), now=NOW)


@pytest.mark.parametrize("auth_time", [None, NOW - 601, NOW - 86_400])
def test_stale(auth_time: int | None) -> None:
    with pytest.raises(StaleAuthentication) as excinfo:
        require_fresh(_principal(auth_time), now=NOW)
    assert excinfo.value.code == "insufficient_user_authentication"
    assert NID_DIGITS not in str(excinfo.value)


def test_custom_max_age() -> None:
    require_fresh(_principal(NOW - 60), now=NOW, max_age=60)
    with pytest.raises(StaleAuthentication, match="within the last 60 seconds"):
        require_fresh(_principal(NOW - 61), now=NOW, max_age=60)
