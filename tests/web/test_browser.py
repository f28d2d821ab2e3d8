"""The citizen pages in Debian's Chromium (Playwright) against a real ``oncevault serve``.

A citizen signs in through the development IdP's form, finds the bank's pending
request (made over the API), approves it from the keyboard, sees the bank's read
appear in the access log and turn "verified" by the browser's own checks, revokes,
and the bank is refused. A tampered proof turns its row "not verified". The
page's verification script is also checked against the Python RFC 9162 reference.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from audit.merkle import MemoryTree
from tests.helpers.home import INCOME
from tests.web.conftest import ARTIFACTS, Served

JOURNEY_NID = "900101-1234567"
TAMPER_NID = "870303-1456789"


def _issue(served: Served, nid: str) -> None:
    response = httpx.post(
        served.base + "/v1/records",
        json={"subject": {"nid": nid}, "type": "income_certificate", "data": INCOME},
        headers=served.bearer("nts"),
        timeout=10,
    )
    assert response.status_code in (200, 201), response.text


def _request_consent(served: Served, nid: str) -> str:
    response = httpx.post(
        served.base + "/v1/consent-requests",
        json={
            "subject": {"nid": nid},
            "purpose": "mortgage_screening",
            "items": [{"type": "income_certificate", "fields": ["year", "total_income"]}],
            "access": "standing",
            "valid_days": 30,
        },
        headers=served.bearer("kbank"),
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["consent_id"])


def _sign_in(page: Any, served: Served, nid: str) -> None:
    """Through the development IdP's own form (its red banner says so)."""
    page.goto(served.base + "/my")
    page.click("#sign-in")
    page.wait_for_url("**/dev-idp/authorize?**")
    assert "개발용 로그인" in page.inner_text(".banner")
    page.fill("#nid", nid)
    page.click("button[type=submit]")
    page.wait_for_url(served.base + "/my")


def test_the_dev_idp_form_signs_in_from_chromium_unaided(served: Served, browser: Any) -> None:
    page = browser.new_page()
    page.goto(served.base + "/my")
    page.click("#sign-in")
    page.wait_for_url("**/dev-idp/authorize?**")
    page.fill("#nid", JOURNEY_NID)
    page.click("button[type=submit]")
    page.wait_for_url(served.base + "/my", timeout=3_000)


def _console_errors(page: Any) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def _wait_verified(page: Any) -> None:
    """Wait until the page's script has checked every row (or given up)."""
    try:
        page.wait_for_selector("#access-log[data-done='true']", state="attached", timeout=30_000)
    except Exception as exc:
        _shot(page, "failure-access-log.png")
        if not page.locator("#log-status").count():
            raise AssertionError(
                f"not the access log: {page.url} {page.inner_text('body')[:800]!r}"
            ) from exc
        status = page.inner_text("#log-status")
        titles = page.eval_on_selector_all(
            "#access-log td.verify", "cells => cells.map(c => c.dataset.state + ' ' + c.title)"
        )
        raise AssertionError(f"access log not checked: {status!r} {titles!r}") from exc


def _shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def test_citizen_approves_sees_the_read_verified_then_revokes(served: Served, browser: Any) -> None:
    started = time.monotonic()
    _issue(served, JOURNEY_NID)
    consent_id = _request_consent(served, JOURNEY_NID)
    page = browser.new_page()
    errors = _console_errors(page)

    _sign_in(page, served, JOURNEY_NID)
    pending = page.locator(f"a[href='/my/consents/{consent_id}']").first
    assert pending.is_visible()
    _shot(page, "dashboard-ko.png")

    # The request, as the citizen decides on it.
    pending.click()
    page.wait_for_url(f"**/my/consents/{consent_id}")
    facts = page.inner_text(".consent-facts")
    for text in ("KBANK", "주택담보대출 심사", "본인 동의", "소득금액증명", "귀속 연도", "총소득"):
        assert text in facts, text
    assert "동의한 날부터 30일" in facts
    assert page.get_attribute("#consent-status", "data-status") == "pending"
    _shot(page, "consent-pending-ko.png")

    # Approve from the keyboard: Tab reaches the button, Enter submits.
    page.focus("#approve")
    assert page.evaluate("document.activeElement.id") == "approve"
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/my/consents/{consent_id}?notice=approved")
    assert page.get_attribute("#consent-status", "data-status") == "active"

    # The bank reads over the API; its read shows up in the access log, verified.
    bank = served.bearer("kbank", consent_id=consent_id)
    read = httpx.get(served.base + "/v1/data", headers=bank, timeout=10)
    assert read.status_code == 200, read.text
    bank_seq = int(read.headers["x-audit-seq"])

    page.goto(served.base + "/my/access-log")
    _wait_verified(page)
    row = page.locator(f"#entry-{bank_seq}")
    assert row.get_attribute("data-action") == "data.read"
    assert row.get_attribute("data-actor-id") == "kbank"
    assert "KBANK" in row.inner_text()
    assert "주택담보대출 심사" in row.inner_text()
    assert row.locator("td.verify").get_attribute("data-state") == "verified"
    assert "검증됨 ✓" in row.locator("td.verify").inner_text()
    states = page.eval_on_selector_all(
        "#access-log td.verify", "cells => cells.map(c => c.getAttribute('data-state'))"
    )
    assert states
    assert set(states) == {"verified"}
    # Newest first.
    seqs = page.eval_on_selector_all(
        "#access-log tbody tr", "rows => rows.map(r => Number(r.getAttribute('data-seq')))"
    )
    assert seqs == sorted(seqs, reverse=True)
    assert page.get_attribute("#cp-status", "data-state") == "verified"
    assert page.get_attribute("#consistency-status", "data-state") == "first"
    _shot(page, "access-log-ko.png")

    # The next visit checks consistency with the checkpoint this browser remembered.
    again = httpx.get(served.base + "/v1/data", headers=bank, timeout=10)  # the log grows
    assert again.status_code == 200
    page.goto(served.base + "/my/access-log?lang=en")
    _wait_verified(page)
    assert page.get_attribute("#consistency-status", "data-state") == "consistent"
    assert "Nothing was removed or changed" in page.inner_text("#consistency-status")
    assert "verified ✓" in page.inner_text(f"#entry-{bank_seq} td.verify")
    _shot(page, "access-log-en.png")

    # The signed receipt, downloaded as a file.
    page.goto(served.base + f"/my/consents/{consent_id}?lang=ko")
    with page.expect_download() as download:
        page.click("#receipt")
    saved = ARTIFACTS / download.value.suggested_filename
    download.value.save_as(str(saved))
    assert saved.name == f"consent-receipt-{consent_id}-v1.jws"
    assert saved.read_text().count(".") == 2

    # Revoke; the bank's still-valid token is refused over the API.
    page.click("#revoke")
    page.wait_for_url(f"**/my/consents/{consent_id}?notice=revoked")
    assert page.get_attribute("#consent-status", "data-status") == "revoked"
    refused = httpx.get(served.base + "/v1/data", headers=bank, timeout=10)
    assert refused.status_code == 403
    assert refused.json()["code"] == "consent_revoked"

    # Phone width: nothing overflows sideways.
    page.set_viewport_size({"width": 375, "height": 812})
    page.goto(served.base + "/my/access-log")
    _wait_verified(page)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    _shot(page, "access-log-phone-ko.png")
    page.goto(served.base + "/my/consents")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    _shot(page, "consents-phone-ko.png")

    assert errors == [], errors  # no CSP violation, no script error
    assert time.monotonic() - started < 90


def test_a_tampered_proof_marks_its_row_not_verified(served: Served, browser: Any) -> None:
    _issue(served, TAMPER_NID)
    _request_consent(served, TAMPER_NID)
    page = browser.new_page()
    _sign_in(page, served, TAMPER_NID)

    tampered: list[int] = []

    def flip_first_proof(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        if not tampered:
            tampered.append(body["seq"])
            node = body["inclusion_path"][0]
            body["inclusion_path"][0] = ("0" if node[0] != "0" else "1") + node[1:]
        route.fulfill(response=response, json=body)

    page.route("**/my/api/access-log/*/proof*", flip_first_proof)
    page.goto(served.base + "/my/access-log")
    _wait_verified(page)
    assert tampered, "the page never asked for a proof"
    cell = page.locator(f"#entry-{tampered[0]} td.verify")
    assert cell.get_attribute("data-state") == "failed"
    assert "검증 안 됨" in cell.inner_text()
    assert "signed root" in (cell.get_attribute("title") or "")
    others = page.eval_on_selector_all(
        "#access-log tbody tr",
        "rows => rows.map(r => [Number(r.dataset.seq), r.querySelector('td.verify').dataset.state])",
    )
    assert len(others) >= 2
    assert all(state == "verified" for seq, state in others if seq != tampered[0])
    _shot(page, "access-log-tampered-ko.png")

    # A leaf that differs from what the row shows is caught too.
    def swap_leaf(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        entry = json.loads(base64.b64decode(body["leaf"]))
        entry["outcome"] = "denied" if entry["outcome"] == "ok" else "ok"
        leaf = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()
        body["leaf"] = base64.b64encode(leaf).decode()
        route.fulfill(response=response, json=body)

    other = browser.new_page()
    other.route("**/my/api/access-log/*/proof*", swap_leaf)
    other.goto(served.base + "/my/access-log")
    _wait_verified(other)
    states = other.eval_on_selector_all(
        "#access-log td.verify", "cells => cells.map(c => c.dataset.state)"
    )
    assert states
    assert set(states) == {"failed"}

    # A checkpoint whose signature does not verify: nothing is verified.
    def forge_checkpoint(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        header, payload, signature = body["jws"].split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        claims["tree_size"] += 1
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        body["jws"] = f"{header}.{forged}.{signature}"
        route.fulfill(response=response, json=body)

    third = browser.new_page()
    third.route("**/v1/audit/checkpoint", forge_checkpoint)
    third.goto(served.base + "/my/access-log")
    _wait_verified(third)
    assert third.get_attribute("#cp-status", "data-state") == "failed"
    states = third.eval_on_selector_all(
        "#access-log td.verify", "cells => cells.map(c => c.dataset.state)"
    )
    assert set(states) == {"failed"}


def _hexes(nodes: list[bytes]) -> list[str]:
    return [node.hex() for node in nodes]


@pytest.mark.parametrize("largest", [33])
def test_the_page_script_agrees_with_the_python_rfc9162_reference(
    served: Served, browser: Any, largest: int
) -> None:
    tree = MemoryTree()
    tree.append([f"leaf-{i}".encode() for i in range(largest)])
    inclusion = []
    for size in range(1, largest + 1):
        for index in range(size):
            inclusion.append(
                {
                    "leaf": tree.leaf_hash(index).hex(),
                    "index": index,
                    "size": size,
                    "path": _hexes(tree.inclusion_proof(index, size)),
                    "root": tree.root(size).hex(),
                }
            )
    consistency = []
    for second in range(1, largest + 1):
        for first in range(1, second + 1):
            consistency.append(
                {
                    "first": first,
                    "second": second,
                    "path": _hexes(tree.consistency_proof(first, second)),
                    "root1": tree.root(first).hex(),
                    "root2": tree.root(second).hex(),
                }
            )
    page = browser.new_page()
    page.goto(served.base + "/my")
    page.add_script_tag(url="/my/static/verify.js")
    result = page.evaluate(
        """async ({inclusion, consistency}) => {
          const V = self.OncevaultVerify;
          const h = V.hexToBytes;
          const flip = (hex) => (hex[0] === "0" ? "1" : "0") + hex.slice(1);
          const out = {inclusionOk: 0, inclusionBad: [], mutatedAccepted: [], consistencyOk: 0,
                       consistencyBad: [], consistencyMutatedAccepted: [], canonical: null};
          const reaches = async (v, path, index, size) => {
            try {
              const root = await V.rootFromInclusion(h(v.leaf), index, size, path.map(h));
              return V.equalBytes(root, h(v.root));
            } catch (e) { return false; }
          };
          for (const v of inclusion) {
            if (await reaches(v, v.path, v.index, v.size)) out.inclusionOk += 1;
            else out.inclusionBad.push([v.index, v.size]);
            for (let i = 0; i < v.path.length; i += 1) {
              const bad = v.path.slice(); bad[i] = flip(bad[i]);
              if (await reaches(v, bad, v.index, v.size)) out.mutatedAccepted.push([v.index, v.size, i]);
            }
            if (v.path.length && await reaches(v, v.path.slice(1), v.index, v.size)) out.mutatedAccepted.push([v.index, v.size, "short"]);
            if (await reaches(v, [...v.path, v.root], v.index, v.size)) out.mutatedAccepted.push([v.index, v.size, "long"]);
            if (v.size > 1 && await reaches(v, v.path, (v.index + 1) % v.size, v.size)) out.mutatedAccepted.push([v.index, v.size, "index"]);
          }
          const consistent = async (v, path, r1, r2) => {
            try { return await V.verifyConsistency(v.first, v.second, path.map(h), h(r1), h(r2)); }
            catch (e) { return false; }
          };
          for (const v of consistency) {
            if (await consistent(v, v.path, v.root1, v.root2)) out.consistencyOk += 1;
            else out.consistencyBad.push([v.first, v.second]);
            for (let i = 0; i < v.path.length; i += 1) {
              const bad = v.path.slice(); bad[i] = flip(bad[i]);
              if (await consistent(v, bad, v.root1, v.root2)) out.consistencyMutatedAccepted.push([v.first, v.second, i]);
            }
            if (await consistent(v, v.path, flip(v.root1), v.root2)) out.consistencyMutatedAccepted.push([v.first, v.second, "root1"]);
            if (await consistent(v, v.path, v.root1, flip(v.root2))) out.consistencyMutatedAccepted.push([v.first, v.second, "root2"]);
          }
          out.canonical = V.canonicalJson({b: [1, null, {d: "x", c: true}], a: "q\\"r"});
          return out;
        }""",
        {"inclusion": inclusion, "consistency": consistency},
    )
    assert result["inclusionBad"] == []
    assert result["inclusionOk"] == len(inclusion)
    assert result["mutatedAccepted"] == []
    assert result["consistencyBad"] == []
    assert result["consistencyOk"] == len(consistency)
    assert result["consistencyMutatedAccepted"] == []
    assert result["canonical"] == json.dumps(
        {"b": [1, None, {"d": "x", "c": True}], "a": 'q"r'},
        sort_keys=True,
        separators=(",", ":"),
    )
