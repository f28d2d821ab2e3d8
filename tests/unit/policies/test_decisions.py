"""policies.decisions: every reason code, the combinators, released fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies import (
    ALLOW,
    AllOf,
    AnyOf,
    ConsentRequest,
    Decision,
    IssueRequest,
    MayIssue,
    MayRequest,
    MaySelfAssert,
    PolicyDenied,
    SelfAssertRequest,
    expand_items,
    load_catalogue,
    may_issue,
    may_request,
    may_self_assert,
    released_fields,
)
from tests.unit.policies.builders import catalogue_with

CATALOGUE = load_catalogue()
CANARY = "Zq9CANARY880101"


# --------------------------------------------------------------------------
# Decision and the combinators
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Fixed:
    decision: Decision

    def check(self, request: object, /) -> Decision:
        return self.decision


def fixed(allowed: bool, reason: str = "r") -> Fixed:
    return Fixed(ALLOW if allowed else Decision.deny(reason, f"{reason} detail"))


def test_require() -> None:
    ALLOW.require()
    with pytest.raises(PolicyDenied) as excinfo:
        Decision(False, ("items_not_allowed", "validation_error"), ("a", "b")).require()
    assert excinfo.value.code == "items_not_allowed"
    assert excinfo.value.reasons == ("items_not_allowed", "validation_error")
    assert str(excinfo.value) == "a; b"
    with pytest.raises(PolicyDenied) as bare:
        Decision(False).require()
    assert bare.value.code == "forbidden"


@given(st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers()), st.builds(object)))
def test_empty_all_of_denies_whatever_the_request(request: object) -> None:
    decision = AllOf[object]().check(request)
    assert not decision.allowed
    assert decision.reasons == ("no_policy",)


@given(st.one_of(st.none(), st.integers(), st.text()))
def test_empty_any_of_denies(request: object) -> None:
    decision = AnyOf[object]().check(request)
    assert not decision.allowed
    assert decision.reasons == ("no_policy",)


@given(st.lists(st.booleans(), min_size=1, max_size=8))
def test_all_of_is_logical_and(verdicts: list[bool]) -> None:
    policies = [fixed(v, f"r{i}") for i, v in enumerate(verdicts)]
    decision = AllOf(*policies).check(None)
    assert decision.allowed == all(verdicts)
    assert decision.reasons == tuple(f"r{i}" for i, v in enumerate(verdicts) if not v)
    assert len(decision.details) == len(decision.reasons)


@given(st.lists(st.booleans(), min_size=1, max_size=8))
def test_any_of_is_logical_or(verdicts: list[bool]) -> None:
    policies = [fixed(v, f"r{i}") for i, v in enumerate(verdicts)]
    decision = AnyOf(*policies).check(None)
    assert decision.allowed == any(verdicts)
    if decision.allowed:
        assert decision.reasons == ()
    else:
        assert decision.reasons == tuple(f"r{i}" for i in range(len(verdicts)))


tree = st.recursive(
    st.booleans().map(lambda v: (v, fixed(v))),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(
            lambda kids: (bool(kids) and all(k[0] for k in kids), AllOf(*(k[1] for k in kids)))
        ),
        st.lists(inner, max_size=4).map(
            lambda kids: (any(k[0] for k in kids), AnyOf(*(k[1] for k in kids)))
        ),
    ),
    max_leaves=12,
)


@given(tree)
def test_nested_combinators_match_boolean_logic(node: tuple[bool, Any]) -> None:
    expected, policy = node
    decision = policy.check(None)
    assert decision.allowed == expected
    assert decision.allowed == (decision.reasons == ())


def test_denial_without_reasons_still_has_a_code() -> None:
    decision = AllOf(Fixed(Decision(False))).check(None)
    assert decision.reasons == ("forbidden",)


def test_concrete_policies_compose() -> None:
    issue = AllOf(MayIssue(CATALOGUE))
    assert issue.check(IssueRequest("nts", "income_certificate")).allowed
    assert issue.check(IssueRequest("kbank", "income_certificate")).reasons == (
        "type_not_issuable",
    )
    self_assert = AnyOf(MaySelfAssert(CATALOGUE))
    assert self_assert.check(SelfAssertRequest("address")).allowed
    request = ConsentRequest(
        client_id="kbank",
        purpose="mortgage_screening",
        items=[("income_certificate", ["year"])],
        access="once",
        valid_days=30,
    )
    assert AllOf(MayRequest(CATALOGUE)).check(request).allowed
    denied = AllOf(MayRequest(CATALOGUE), fixed(False, "extra")).check(request)
    assert denied.reasons == ("extra",)


# --------------------------------------------------------------------------
# may_issue, may_self_assert
# --------------------------------------------------------------------------

ISSUE_CASES: list[tuple[object, object, str | None]] = [
    ("nts", "income_certificate", None),
    ("mois", "resident_registration", None),
    ("court", "family_relations", None),
    ("mois", "family_relations", None),
    ("court", "real_estate_title", None),
    ("court", "sale_contract", None),
    ("kbank", "bank_account", None),
    ("kbank", "income_certificate", "type_not_issuable"),
    ("nts", "passport", "type_not_issuable"),
    ("NTS", "income_certificate", "type_not_issuable"),
    ("", "income_certificate", "type_not_issuable"),
    (None, "income_certificate", "type_not_issuable"),
    ("nts", None, "type_not_issuable"),
    ("nts", ["income_certificate"], "type_not_issuable"),
    (["nts"], "income_certificate", "type_not_issuable"),
]


@pytest.mark.parametrize(("client_id", "record_type", "reason"), ISSUE_CASES)
def test_may_issue(client_id: Any, record_type: Any, reason: str | None) -> None:
    decision = may_issue(CATALOGUE, client_id, record_type)
    assert decision.allowed == (reason is None)
    assert decision.reasons == (() if reason is None else (reason,))


SELF_ASSERT_CASES: list[tuple[object, str | None]] = [
    ("address", None),
    ("bank_account", None),
    ("income_certificate", "not_self_asserted"),
    ("family_relations", "not_self_asserted"),
    ("passport", "not_self_asserted"),
    (None, "not_self_asserted"),
    ({"type": "address"}, "not_self_asserted"),
]


@pytest.mark.parametrize(("record_type", "reason"), SELF_ASSERT_CASES)
def test_may_self_assert(record_type: Any, reason: str | None) -> None:
    decision = may_self_assert(CATALOGUE, record_type)
    assert decision.allowed == (reason is None)
    assert decision.reasons == (() if reason is None else (reason,))


# --------------------------------------------------------------------------
# may_request
# --------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "client_id": "kbank",
    "purpose": "mortgage_screening",
    "items": [("income_certificate", ["year", "total_income"]), ("real_estate_title", ["*"])],
    "access": "once",
    "valid_days": 30,
    "max_fetches": None,
    "case_reference": None,
}
AUDIT: dict[str, Any] = {
    "client_id": "nts",
    "purpose": "income_tax_audit",
    "items": [("income_certificate", ["*"])],
    "access": "once",
    "valid_days": 90,
    "case_reference": "NTS-2025:audit_0042.a",
}
PA, IA, VE = "purpose_not_allowed", "items_not_allowed", "validation_error"

REQUEST_CASES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "ok": ({}, ()),
    "ok-standing": ({"access": "standing", "max_fetches": 5}, ()),
    "ok-once-max-fetches-1": ({"max_fetches": 1}, ()),
    "ok-valid-days-1": ({"valid_days": 1}, ()),
    "ok-dict-items": ({"items": [{"type": "income_certificate", "fields": ["year"]}]}, ()),
    "ok-statute": (AUDIT, ()),
    "ok-statute-64-chars": (AUDIT | {"case_reference": "A" * 64}, ()),
    # purpose_not_allowed
    "unknown-purpose": ({"purpose": "marketing"}, (PA,)),
    "purpose-not-string": ({"purpose": ["mortgage_screening"]}, (PA,)),
    "client-not-allowed": ({"client_id": "wetax"}, (PA,)),
    "client-not-string": ({"client_id": None}, (PA,)),
    "purpose-first-then-stop": ({"purpose": "marketing", "valid_days": 0}, (PA,)),
    # items_not_allowed
    "no-items": ({"items": []}, (IA,)),
    "type-not-in-purpose": ({"items": [("family_relations", ["name"])]}, (IA,)),
    "unknown-type": ({"items": [("passport", ["*"])]}, (IA,)),
    "field-not-allowed": ({"items": [("income_certificate", ["tax_paid"])]}, (IA,)),
    "unknown-field": ({"items": [("income_certificate", ["salary"])]}, (IA,)),
    "empty-fields": ({"items": [("income_certificate", [])]}, (IA,)),
    "duplicate-type": (
        {"items": [("income_certificate", ["year"]), ("income_certificate", ["employer"])]},
        (IA,),
    ),
    "duplicate-field": ({"items": [("income_certificate", ["year", "year"])]}, (IA,)),
    "star-not-alone": ({"items": [("income_certificate", ["*", "year"])]}, (IA,)),
    # validation_error
    "items-not-a-list": ({"items": "income_certificate"}, (VE,)),
    "items-a-mapping": ({"items": {"income_certificate": ["year"]}}, (VE,)),
    "item-triple": ({"items": [("income_certificate", ["year"], "x")]}, (VE,)),
    "item-dict-extra-key": ({"items": [{"type": "address", "fields": ["*"], "x": 1}]}, (VE,)),
    "item-type-not-string": ({"items": [(1, ["year"])]}, (VE,)),
    "item-fields-a-string": ({"items": [("income_certificate", "year")]}, (VE,)),
    "item-field-not-string": ({"items": [("income_certificate", [1])]}, (VE,)),
    "access-unknown": ({"access": "forever"}, (VE,)),
    "access-not-string": ({"access": None}, (VE,)),
    "access-not-in-purpose": (AUDIT | {"access": "standing"}, (VE,)),
    "valid-days-zero": ({"valid_days": 0}, (VE,)),
    "valid-days-over-max": ({"valid_days": 31}, (VE,)),
    "valid-days-bool": ({"valid_days": True}, (VE,)),
    "valid-days-string": ({"valid_days": "30"}, (VE,)),
    "valid-days-float": ({"valid_days": 30.0}, (VE,)),
    "max-fetches-zero": ({"access": "standing", "max_fetches": 0}, (VE,)),
    "max-fetches-huge": ({"access": "standing", "max_fetches": 10**7}, (VE,)),
    "max-fetches-bool": ({"access": "standing", "max_fetches": True}, (VE,)),
    "max-fetches-once-2": ({"max_fetches": 2}, (VE,)),
    "statute-without-case": (AUDIT | {"case_reference": None}, (VE,)),
    "statute-case-empty": (AUDIT | {"case_reference": ""}, (VE,)),
    "statute-case-65": (AUDIT | {"case_reference": "A" * 65}, (VE,)),
    "statute-case-space": (AUDIT | {"case_reference": "case 1"}, (VE,)),
    "statute-case-slash": (AUDIT | {"case_reference": "2025/1"}, (VE,)),
    "statute-case-hangul": (AUDIT | {"case_reference": "조사1"}, (VE,)),
    "statute-case-not-string": (AUDIT | {"case_reference": 42}, (VE,)),
    "consent-with-case": ({"case_reference": "X-1"}, (VE,)),
    # several problems: all reported, items first
    "items-and-days-and-access": (
        {"items": [], "valid_days": 0, "access": "x"},
        (IA, VE, VE),
    ),
}


@pytest.mark.parametrize(("changes", "reasons"), REQUEST_CASES.values(), ids=REQUEST_CASES.keys())
def test_may_request(changes: dict[str, Any], reasons: tuple[str, ...]) -> None:
    decision = may_request(CATALOGUE, **(BASE | changes))
    assert decision.reasons == reasons
    assert decision.allowed == (reasons == ())
    assert len(decision.details) == len(reasons)
    for detail in decision.details:
        assert detail.split(":", 1)[0] in {
            "purpose",
            "items",
            "access",
            "valid_days",
            "max_fetches",
            "case_reference",
        } or detail.startswith("items[")


@pytest.mark.parametrize(
    "changes",
    [
        {"purpose": CANARY},
        {"case_reference": CANARY + " x"},
        {"access": CANARY},
        {"items": [(CANARY, ["*"])]},
        {"items": [("income_certificate", [CANARY])]},
        {"items": [("income_certificate", ["year", "year", CANARY])]},
        {"client_id": CANARY},
        {"valid_days": CANARY},
    ],
)
def test_request_details_never_echo_input(changes: dict[str, Any]) -> None:
    decision = may_request(CATALOGUE, **(BASE | changes))
    assert not decision.allowed
    assert all(CANARY not in detail for detail in decision.details)


def test_detail_names_the_failing_item() -> None:
    decision = may_request(
        CATALOGUE,
        **BASE
        | {"items": [("income_certificate", ["year"]), ("income_certificate", ["tax_paid"])]},
    )
    assert decision.details == ("items[1].type: record type repeated",)
    decision = may_request(
        CATALOGUE, **BASE | {"items": [("income_certificate", ["year", "tax_paid"])]}
    )
    assert decision.details[0].startswith("items[0].fields[1]: field not allowed for purpose")


# --------------------------------------------------------------------------
# expand_items
# --------------------------------------------------------------------------


def test_expand_items_star_is_what_the_purpose_allows() -> None:
    items = expand_items(
        CATALOGUE,
        "mortgage_screening",
        [("real_estate_title", ["*"]), ("income_certificate", ["*"])],
    )
    assert items == (
        ("income_certificate", ("employer", "total_income", "year")),
        ("real_estate_title", tuple(sorted(CATALOGUE.record_types["real_estate_title"].fields))),
    )
    # the purpose allows only some income_certificate fields: "*" never means tax_paid
    assert "tax_paid" not in dict(items)["income_certificate"]


def test_expand_items_sorts_and_accepts_mappings() -> None:
    items = expand_items(
        CATALOGUE,
        "mortgage_screening",
        [
            {"type": "income_certificate", "fields": ["year", "employer"]},
            {"type": "bank_account", "fields": ["bank_name"]},
        ],
    )
    assert items == (("bank_account", ("bank_name",)), ("income_certificate", ("employer", "year")))


@pytest.mark.parametrize(
    ("purpose", "items", "code"),
    [
        ("marketing", [("address", ["*"])], PA),
        ("mortgage_screening", [("income_certificate", ["tax_paid"])], IA),
        ("mortgage_screening", [], IA),
        ("mortgage_screening", "income_certificate", VE),
    ],
)
def test_expand_items_raises_on_bad_items(purpose: str, items: Any, code: str) -> None:
    with pytest.raises(PolicyDenied) as excinfo:
        expand_items(CATALOGUE, purpose, items)
    assert excinfo.value.code == code


# --------------------------------------------------------------------------
# released_fields
# --------------------------------------------------------------------------

TYPES = {"a": ["f1", "f2", "f3"], "b": ["g1", "g2"], "c": ["h1"]}


def test_released_fields_is_the_intersection() -> None:
    catalogue = catalogue_with(TYPES, {"a": ["f1", "f2"], "b": ["g1"]})
    consented = [("a", ["f2", "f1"]), ("b", ["g1"])]
    assert released_fields(catalogue, "p", consented) == {"a": ("f1", "f2"), "b": ("g1",)}


def test_narrowing_applies_at_once() -> None:
    narrowed = catalogue_with(TYPES, {"a": ["f1"]})
    consented = [("a", ["f1", "f2"]), ("b", ["g1"])]
    assert released_fields(narrowed, "p", consented) == {"a": ("f1",)}


def test_widening_never_adds_fields() -> None:
    widened = catalogue_with(TYPES, {"a": ["f1", "f2", "f3"], "b": ["g1", "g2"], "c": ["h1"]})
    consented = {"a": ["f1"]}
    assert released_fields(widened, "p", consented) == {"a": ("f1",)}


def test_stored_star_releases_nothing() -> None:
    catalogue = catalogue_with(TYPES, {"a": ["f1", "f2", "f3"]})
    assert released_fields(catalogue, "p", [("a", ["*"])]) == {}


@pytest.mark.parametrize(
    "consented",
    [
        None,
        "a",
        42,
        [("a",)],
        [("a", "f1")],
        [(["a"], ["f1"])],
        [{"type": "a"}],
        [("a", [1, None])],
        [("a", None)],
    ],
)
def test_malformed_consent_releases_nothing(consented: Any) -> None:
    catalogue = catalogue_with(TYPES, {"a": ["f1"]})
    assert released_fields(catalogue, "p", consented) == {}


def test_released_fields_for_unknown_purpose_is_empty() -> None:
    catalogue = catalogue_with(TYPES, {"a": ["f1"]})
    assert released_fields(catalogue, "gone", [("a", ["f1"])]) == {}
    assert released_fields(catalogue, None, [("a", ["f1"])]) == {}  # type: ignore[arg-type]


def test_released_fields_accepts_stored_consent_items() -> None:
    stored = [{"type": "income_certificate", "fields": ["total_income", "year", "tax_paid"]}]
    assert released_fields(CATALOGUE, "mortgage_screening", stored) == {
        "income_certificate": ("total_income", "year")
    }


field_pool = st.sampled_from(["f1", "f2", "f3", "g1", "g2", "h1", "zz", "*"])
type_pool = st.sampled_from(["a", "b", "c", "d"])


@given(
    purpose_items=st.dictionaries(
        st.sampled_from(["a", "b", "c"]),
        st.lists(st.sampled_from(["f1", "f2", "f3", "g1", "g2", "h1"]), unique=True),
    ),
    consented=st.lists(st.tuples(type_pool, st.lists(field_pool, max_size=5)), max_size=5),
)
def test_released_fields_is_within_consent_and_purpose(
    purpose_items: dict[str, list[str]], consented: list[tuple[str, list[str]]]
) -> None:
    catalogue = catalogue_with(TYPES, purpose_items)
    released = released_fields(catalogue, "p", consented)
    consent_map: dict[str, set[str]] = {}
    for type_name, fields in consented:
        consent_map.setdefault(type_name, set()).update(fields)
    expected = {
        t: tuple(sorted(fs & set(purpose_items.get(t, ()))))
        for t, fs in consent_map.items()
        if fs & set(purpose_items.get(t, ()))
    }
    assert released == dict(sorted(expected.items()))
    for type_name, released_for_type in released.items():
        assert released_for_type
        assert set(released_for_type) <= consent_map[type_name]
        assert set(released_for_type) <= set(purpose_items[type_name])
        assert list(released_for_type) == sorted(set(released_for_type))
