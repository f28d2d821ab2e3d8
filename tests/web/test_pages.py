"""The citizen pages in-process: headers, sign-in redirects, CSRF, ownership, forms."""

from __future__ import annotations

import base64
import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from api.web.routes import safe_next
from tests.helpers.clients import TestClient
from tests.helpers.home import CONTRACT, INCOME
from tests.web.conftest import CITIZEN_NID, ISSUER, OTHER_NID, Site
from vault import crypto

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'"
)


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


async def _issue(
    site: Site, nid: str, record_type: str, data: dict[str, Any], *, issuer: str = "nts"
) -> None:
    token = await site.token(issuer)
    response = await site.http.post(
        "/v1/records",
        json={"subject": {"nid": nid}, "type": record_type, "data": data},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text


async def _status(site: Site, consent_id: str) -> str:
    assert site.runtime.consents is not None
    consent = await site.runtime.consents.repo.get(consent_id)
    assert consent is not None
    return consent.status.value


# -- headers and sign-in -------------------------------------------------------------------


async def test_every_page_carries_the_strict_security_headers(site: Site) -> None:
    await site.sign_in(CITIZEN_NID)
    for path in ("/my", "/my/records", "/my/access-log", "/my/static/style.css", "/my/login"):
        response = await site.http.get(path)
        assert response.headers["content-security-policy"] == CSP, path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-frame-options"] == "DENY"
    page = await site.http.get("/my")
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    # No inline script or style anywhere: CSP would block them.
    assert "<script>" not in page.text
    assert "<style" not in page.text
    assert " style=" not in page.text


async def test_signed_out_pages_send_the_citizen_to_sign_in(site: Site) -> None:
    welcome = await site.http.get("/my")
    assert welcome.status_code == 200
    assert 'href="/my/login"' in welcome.text
    response = await site.http.get("/my/consents?x=1")
    assert response.status_code == 303
    assert response.headers["location"] == "/my/login?next=%2Fmy%2Fconsents%3Fx%3D1"


async def test_login_redirects_to_the_idp_with_pkce_state_and_nonce(site: Site) -> None:
    response = await site.http.get("/my/login", params={"next": "/my/consents"})
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == (
        ISSUER + "/dev-idp/authorize"
    )
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["response_type"] == "code"
    assert query["client_id"] == "oncevault"
    assert query["redirect_uri"] == ISSUER + "/my/callback"
    assert query["code_challenge_method"] == "S256"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", query["code_challenge"])
    assert len(query["state"]) >= 43
    assert len(query["nonce"]) >= 43
    assert "prompt" not in query
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("oncevault_login=")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/my" in cookie
    assert "Secure" not in cookie  # the issuer is http here; https sets Secure
    # The sealed cookie reveals nothing of the state or the verifier.
    assert query["state"] not in cookie


async def test_callback_refuses_a_foreign_state_and_a_missing_sign_in(site: Site) -> None:
    started = await site.http.get("/my/login")
    assert started.status_code == 303
    wrong = await site.http.get("/my/callback", params={"state": "forged", "code": "x"})
    assert wrong.status_code == 400
    assert "oncevault_session" not in wrong.headers.get("set-cookie", "")
    site.http.cookies.clear()
    missing = await site.http.get("/my/callback", params={"state": "x", "code": "y"})
    assert missing.status_code == 400
    assert "oncevault_session" not in missing.headers.get("set-cookie", "")


def test_return_paths_stay_on_the_citizen_pages() -> None:
    assert safe_next("/my/consents/cns_1?notice=approved") == "/my/consents/cns_1?notice=approved"
    for bad in ("https://evil.example/my", "//evil.example/my", "/my//evil", "/v1/me", "/mya"):
        assert safe_next(bad) == "/my", bad


async def test_a_forged_session_cookie_is_not_a_session(site: Site) -> None:
    value, _ = await site.session_cookie(CITIZEN_NID)
    tampered = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    site.http.cookies.set("oncevault_session", tampered, domain="testserver.local", path="/my")
    response = await site.http.get("/my/records")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/my/login")


# -- CSRF and ownership --------------------------------------------------------------------------


async def test_a_post_without_the_csrf_token_is_refused(site: Site) -> None:
    consent = await site.request_consent(CITIZEN_NID)
    consent_id = consent["consent_id"]
    await site.sign_in(CITIZEN_NID)
    page = await site.http.get(f"/my/consents/{consent_id}")
    assert page.status_code == 200
    token = _csrf(page.text)
    url = f"/my/consents/{consent_id}/approve"

    no_token = await site.http.post(url, data={})
    assert no_token.status_code == 403
    assert "보안 확인 값" in no_token.text  # Korean by default
    wrong = await site.http.post(url, data={"csrf": token[:-1] + "x"})
    assert wrong.status_code == 403
    cross_site = await site.http.post(
        url, data={"csrf": token}, headers={"Origin": "https://evil.example"}
    )
    assert cross_site.status_code == 403
    fetch_cross_site = await site.http.post(
        url, data={"csrf": token}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert fetch_cross_site.status_code == 403
    as_json = await site.http.post(url, json={"csrf": token})
    assert as_json.status_code == 403
    assert await _status(site, consent_id) == "pending"

    # Without any session (a cross-site form carries no SameSite=Lax cookie): 403 too.
    anonymous = httpx.AsyncClient(transport=site.http._transport, base_url=ISSUER)
    async with anonymous:
        refused = await anonymous.post(url, data={"csrf": token})
    assert refused.status_code == 403
    assert await _status(site, consent_id) == "pending"

    approved = await site.http.post(url, data={"csrf": token})
    assert approved.status_code == 303
    assert approved.headers["location"] == f"/my/consents/{consent_id}?notice=approved"
    assert await _status(site, consent_id) == "active"


async def test_another_citizens_urls_are_refused(site: Site) -> None:
    theirs = await site.request_consent(OTHER_NID)
    other_id = theirs["consent_id"]
    assert site.runtime.consents is not None
    other_citizen = await site.citizen_id(OTHER_NID)
    entries = await site.runtime.audit.repo.entries(citizen_id=other_citizen, limit=10)
    their_seq = entries[0].seq

    await site.sign_in(CITIZEN_NID)
    token = _csrf((await site.http.get("/my")).text)
    page = await site.http.get(f"/my/consents/{other_id}")
    assert page.status_code == 404
    assert theirs["client_id"] not in page.text
    for action in ("approve", "reject", "revoke"):
        refused = await site.http.post(f"/my/consents/{other_id}/{action}", data={"csrf": token})
        assert refused.status_code == 404, action
    assert await _status(site, other_id) == "pending"
    receipt = await site.http.get(f"/my/consents/{other_id}/receipt")
    assert receipt.status_code == 404
    proof = await site.http.get(f"/my/api/access-log/{their_seq}/proof", params={"tree_size": 50})
    assert proof.status_code == 404
    assert proof.json()["code"] == "not_found"
    log = await site.http.get("/my/access-log")
    assert f'data-seq="{their_seq}"' not in log.text


async def test_the_page_json_needs_a_session(site: Site) -> None:
    proof = await site.http.get("/my/api/access-log/0/proof", params={"tree_size": 1})
    assert proof.status_code == 401
    assert proof.headers["content-type"].startswith("application/problem+json")
    consistency = await site.http.get("/my/api/audit/consistency?first=1&second=1")
    assert consistency.status_code == 401


# -- consents ------------------------------------------------------------------------------------


async def test_a_stale_sign_in_is_sent_through_a_fresh_one_before_approving(site: Site) -> None:
    consent_id = (await site.request_consent(CITIZEN_NID))["consent_id"]
    await site.sign_in(CITIZEN_NID, fresh=False)
    token = _csrf((await site.http.get(f"/my/consents/{consent_id}")).text)
    response = await site.http.post(f"/my/consents/{consent_id}/approve", data={"csrf": token})
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/my/login?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert query == {"fresh": "1", "next": f"/my/consents/{consent_id}"}
    assert await _status(site, consent_id) == "pending"
    to_idp = await site.http.get(location)
    idp_query = parse_qs(urlsplit(to_idp.headers["location"]).query)
    assert idp_query["prompt"] == ["login"]
    assert idp_query["max_age"] == ["0"]
    # Rejecting and revoking need no fresh sign-in.
    rejected = await site.http.post(f"/my/consents/{consent_id}/reject", data={"csrf": token})
    assert rejected.status_code == 303
    assert await _status(site, consent_id) == "rejected"


async def test_consent_page_shows_what_the_citizen_decides_on(site: Site) -> None:
    consent_id = (await site.request_consent(CITIZEN_NID))["consent_id"]
    await site.sign_in(CITIZEN_NID)
    korean = (await site.http.get(f"/my/consents/{consent_id}")).text
    for text in ("KBANK", "주택담보대출 심사", "본인 동의", "소득금액증명", "귀속 연도", "총소득"):
        assert text in korean, text
    assert "동의한 날부터 30일" in korean
    assert "기간 중 계속 제공" in korean
    english = (await site.http.get(f"/my/consents/{consent_id}?lang=en")).text
    for text in ("Mortgage loan screening", "Your consent", "Income certificate", "30 days"):
        assert text in english, text


async def test_receipt_downloads_as_a_signed_file(site: Site) -> None:
    consent_id = (await site.request_consent(CITIZEN_NID))["consent_id"]
    await site.sign_in(CITIZEN_NID)
    token = _csrf((await site.http.get(f"/my/consents/{consent_id}")).text)
    await site.http.post(f"/my/consents/{consent_id}/approve", data={"csrf": token})
    response = await site.http.get(f"/my/consents/{consent_id}/receipt")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/jose"
    assert response.headers["content-disposition"] == (
        f'attachment; filename="consent-receipt-{consent_id}-v1.jws"'
    )
    jwks = (await site.http.get("/.well-known/jwks.json")).json()
    keys = {k["kid"]: k for k in jwks["keys"] if k["kid"].startswith("rc-")}
    _, claims = crypto.verify_jws(
        response.text, keys=keys, typ="consent-receipt+jwt", allowed_kid_prefix="rc-"
    )
    assert claims["consent_id"] == consent_id
    assert claims["status"] == "active"


# -- records, language, dashboard, erasure ---------------------------------------------------------


async def test_records_list_view_and_self_asserted_edit(site: Site) -> None:
    await _issue(site, CITIZEN_NID, "income_certificate", INCOME)
    await site.sign_in(CITIZEN_NID)
    listing = (await site.http.get("/my/records")).text
    assert "소득금액증명" in listing
    assert "NTS" in listing  # the issuer's name as source
    assert "/my/records/address/edit" in listing  # a self-asserted type not yet entered

    before = (await site.runtime.audit.state()).size
    view = await site.http.get("/my/records/income_certificate")
    assert view.status_code == 200
    assert "86400000" in view.text
    assert "한빛전자" in view.text
    entries = await site.runtime.audit.repo.entries(after=before - 1, limit=10)
    read = [e.entry for e in entries if e.entry["action"] == "data.read"]
    assert read
    assert read[-1]["actor"]["type"] == "citizen"
    assert read[-1]["record_type"] == "income_certificate"

    assert (await site.http.get("/my/records/income_certificate/edit")).status_code == 404
    form = await site.http.get("/my/records/address/edit")
    assert form.status_code == 200
    assert 'for="f-road_address"' in form.text  # every control is labelled
    token = _csrf(form.text)
    saved = await site.http.post(
        "/my/records/address",
        data={
            "csrf": token,
            "f.road_address": "서울특별시 종로구 세종대로 209",
            "f.detail": "3층",
            "f.postal_code": "03171",
        },
    )
    assert saved.status_code == 303
    assert saved.headers["location"] == "/my/records?notice=saved"
    again = await site.http.get("/my/records/address")
    assert "세종대로 209" in again.text
    assert "본인 입력" in again.text


async def test_language_switch_is_remembered_and_korean_is_the_default(site: Site) -> None:
    await site.sign_in(CITIZEN_NID)
    korean = await site.http.get("/my")
    assert '<html lang="ko">' in korean.text
    assert "한눈에 보기" in korean.text
    english = await site.http.get("/my?lang=en")
    assert '<html lang="en">' in english.text
    assert "Overview" in english.text
    assert "oncevault_lang=en" in english.headers["set-cookie"]
    later = await site.http.get("/my/records")
    assert '<html lang="en">' in later.text
    back = await site.http.get("/my/records?lang=ko")
    assert '<html lang="ko">' in back.text


async def test_dashboard_counts_pending_active_and_recent_reads(site: Site) -> None:
    await _issue(site, CITIZEN_NID, "income_certificate", INCOME)
    pending = await site.request_consent(CITIZEN_NID)
    await site.sign_in(CITIZEN_NID)
    page = (await site.http.get("/my")).text
    assert f"/my/consents/{pending['consent_id']}" in page
    assert "답변을 기다리는 요청" in page
    assert "최근 30일 열람" in page
    assert "소득금액증명" in page


async def test_erasure_needs_the_typed_word_and_a_fresh_sign_in(site: Site) -> None:
    await _issue(site, CITIZEN_NID, "income_certificate", INCOME)
    await site.register(TestClient("court", roles=("issuer",)))
    await _issue(site, CITIZEN_NID, "sale_contract", CONTRACT, issuer="court")
    await site.sign_in(CITIZEN_NID)
    preview = await site.http.get("/my/erase")
    assert preview.status_code == 200
    will_erase = preview.text.split('id="will-erase"')[1].split("</ul>")[0]
    will_keep = preview.text.split('id="will-keep"')[1].split("</ul>")[0]
    assert 'data-type="income_certificate"' in will_erase
    assert 'data-type="sale_contract"' in will_keep
    assert "법정 보존 기간 1825일" in will_keep
    assert "'삭제'" in html.unescape(preview.text)
    token = _csrf(preview.text)
    wrong = await site.http.post("/my/erase", data={"csrf": token, "confirm": "yes"})
    assert wrong.status_code == 422
    assert site.runtime.vault is not None
    citizen_id = await site.citizen_id(CITIZEN_NID)
    assert await site.runtime.vault.list_records(citizen_id)

    await site.sign_in(CITIZEN_NID, fresh=False)
    stale_token = _csrf((await site.http.get("/my/erase")).text)
    stale = await site.http.post("/my/erase", data={"csrf": stale_token, "confirm": "삭제"})
    assert stale.status_code == 303
    assert stale.headers["location"].startswith("/my/login?fresh=1")
    assert await site.runtime.vault.list_records(citizen_id)

    await site.sign_in(CITIZEN_NID)
    token = _csrf((await site.http.get("/my/erase")).text)
    done = await site.http.post("/my/erase", data={"csrf": token, "confirm": "삭제"})
    assert done.status_code == 200
    assert 'data-type="income_certificate"' in done.text.split('id="erased"')[1].split("</ul>")[0]
    assert 'data-type="sale_contract"' in done.text.split('id="kept"')[1].split("</ul>")[0]
    assert 'oncevault_session=""' in done.headers["set-cookie"]
    kept = await site.runtime.vault.list_records(citizen_id)
    assert [r.record_type for r in kept] == ["sale_contract"]


async def test_access_log_rows_carry_what_the_script_checks(site: Site) -> None:
    await _issue(site, CITIZEN_NID, "income_certificate", INCOME)
    consent_id = (await site.request_consent(CITIZEN_NID))["consent_id"]
    await site.sign_in(CITIZEN_NID)
    token = _csrf((await site.http.get(f"/my/consents/{consent_id}")).text)
    await site.http.post(f"/my/consents/{consent_id}/approve", data={"csrf": token})
    bank = await site.token("kbank", consent_id=consent_id)
    read = await site.http.get("/v1/data", headers={"Authorization": f"Bearer {bank}"})
    assert read.status_code == 200
    seq = int(read.headers["x-audit-seq"])

    page = await site.http.get("/my/access-log")
    assert page.status_code == 200
    row = re.search(rf'<tr id="entry-{seq}" [^>]*>', page.text)
    assert row, page.text
    attributes = {
        name: html.unescape(value)
        for name, value in re.findall(r'data-([a-z-]+)="([^"]*)"', row.group(0))
    }
    assert attributes["action"] == "data.read"
    assert attributes["actor-type"] == "client"
    assert attributes["actor-id"] == "kbank"
    assert attributes["purpose"] == "mortgage_screening"
    assert attributes["items"] == (
        '[{"fields":["total_income","year"],"type":"income_certificate","version":1}]'
    )
    assert "KBANK" in page.text
    assert "소득금액증명: 총소득, 귀속 연도" in page.text
    assert '<script src="/my/static/verify.js"></script>' in page.text

    proof = await site.http.get(
        f"/my/api/access-log/{seq}/proof",
        params={"tree_size": (await site.runtime.audit.state()).size},
    )
    assert proof.status_code == 200
    body = proof.json()
    assert set(body) == {"seq", "tree_size", "leaf", "inclusion_path"}  # no root: never vouched
    stored = await site.runtime.audit.repo.entry(seq)
    assert stored is not None
    assert base64.b64decode(body["leaf"]) == stored.leaf


async def test_a_suggestion_is_accepted_in_one_click_after_a_fresh_sign_in(site: Site) -> None:
    await site.register(TestClient("court", roles=("issuer",)))
    await site.register(TestClient("bokjiro", roles=("consumer",)))
    born = datetime.fromtimestamp(site.clock.now_ms() / 1000, tz=UTC).date() - timedelta(days=20)
    family = {
        "name": "홍길동",
        "birth_date": "1990-01-01",
        "marital_status": "married",
        "children": [{"name": "홍아기", "birth_date": born.isoformat()}],
    }
    await _issue(site, CITIZEN_NID, "family_relations", family, issuer="court")
    await site.sign_in(CITIZEN_NID, fresh=False)
    listing = await site.http.get("/my/suggestions")
    assert "BOKJIRO: 아동수당" in listing.text
    suggestion_id = re.search(r'data-suggestion-id="([^"]+)"', listing.text)
    assert suggestion_id
    url = f"/my/suggestions/{suggestion_id.group(1)}/accept"
    stale = await site.http.post(url, data={"csrf": _csrf(listing.text)})
    assert stale.status_code == 303
    assert stale.headers["location"].startswith("/my/login?fresh=1")

    await site.sign_in(CITIZEN_NID)
    token = _csrf((await site.http.get("/my/suggestions")).text)
    accepted = await site.http.post(url, data={"csrf": token})
    assert accepted.status_code == 303
    consent_id = accepted.headers["location"].split("/my/consents/")[1].split("?")[0]
    assert await _status(site, consent_id) == "active"
    assert "신청함" in (await site.http.get("/my/suggestions")).text
