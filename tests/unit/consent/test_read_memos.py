"""What the read decision remembers, and what it may not: inside the batch's
transaction a read copies its consent with the new fetch count
(``Consent.counted``: one ``msgspec.structs.replace``) and takes the released fields
from a memo per purpose and items that the next catalogue replaces at once."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from consent import service as service_module
from consent.models import Consent, Status
from consent.service import RELEASED_MEMO, ConsentService
from policies import Catalogue
from tests.unit.policies.builders import catalogue_with

TYPES = {"a": ["f1", "f2", "f3"], "b": ["g1", "g2"]}


def consent(**changes: Any) -> Consent:
    base = Consent(
        consent_id="cs_1",
        citizen_id="c_1",
        client_id="kbank",
        purpose="p",
        items=(("a", ("f1", "f2")), ("b", ("g1",))),
        access="standing",
        max_fetches=3,
        valid_days=30,
        valid_from=1,
        valid_until=2,
        legal_basis="consent",
        case_reference=None,
        created_at=1,
        policy_version="v1",
        status=Status.ACTIVE,
        fetch_count=1,
        receipt_version=4,
    )
    return msgspec.structs.replace(base, **changes)


def test_counted_is_replace_of_the_count_and_status() -> None:
    original = consent()
    counted = original.counted(3, Status.EXHAUSTED)
    assert (counted.fetch_count, counted.status) == (3, Status.EXHAUSTED)
    others = [name for name in Consent.__struct_fields__ if name not in ("fetch_count", "status")]
    assert len(others) == 15
    assert all(getattr(counted, name) == getattr(original, name) for name in others)
    assert type(counted) is Consent
    assert (original.fetch_count, original.status) == (1, Status.ACTIVE)  # untouched
    with pytest.raises(AttributeError):
        counted.fetch_count = 9  # type: ignore[misc]


class Catalogues:
    def __init__(self, first: Catalogue) -> None:
        self.current = first

    def __call__(self) -> Catalogue:
        return self.current


def service(catalogues: Catalogues) -> ConsentService:
    # Only the catalogue is used by the memo.
    return ConsentService(
        repo=None,  # type: ignore[arg-type]
        audit=None,  # type: ignore[arg-type]
        clock=None,  # type: ignore[arg-type]
        catalogue=catalogues,
        sign_receipt=lambda claims: "",
        controller="test",
        suggestions=None,  # type: ignore[arg-type]
        events=None,  # type: ignore[arg-type]
    )


def test_the_released_fields_follow_a_new_catalogue_at_once() -> None:
    catalogues = Catalogues(catalogue_with(TYPES, {"a": ["f1", "f2"], "b": ["g1"]}))
    consents = service(catalogues)
    assert consents._released_fields(consent()) == {"a": ("f1", "f2"), "b": ("g1",)}
    catalogues.current = catalogue_with(TYPES, {"a": ["f1"]})  # narrowed
    assert consents._released_fields(consent()) == {"a": ("f1",)}


def test_a_caller_changing_its_answer_does_not_change_the_memo() -> None:
    consents = service(Catalogues(catalogue_with(TYPES, {"a": ["f1", "f2"], "b": ["g1"]})))
    first = consents._released_fields(consent())
    first.pop("a")
    assert consents._released_fields(consent()) == {"a": ("f1", "f2"), "b": ("g1",)}


def test_other_items_or_purpose_get_their_own_answer() -> None:
    consents = service(Catalogues(catalogue_with(TYPES, {"a": ["f1", "f2"], "b": ["g1"]})))
    assert consents._released_fields(consent()) == {"a": ("f1", "f2"), "b": ("g1",)}
    # Same items, another purpose (remembered after the first): not the first's answer.
    assert consents._released_fields(consent(purpose="unknown")) == {}
    assert consents._released_fields(consent(items=(("b", ("g1", "g2")),))) == {"b": ("g1",)}


def test_the_memo_holds_at_most_released_memo_pairs() -> None:
    consents = service(Catalogues(catalogue_with(TYPES, {"a": ["f1", "f2"], "b": ["g1"]})))
    for n in range(RELEASED_MEMO):
        consents._released_fields(consent(items=(("a", (f"x{n}",)),)))
    assert len(consents._released) == RELEASED_MEMO
    assert consents._released_fields(consent()) == {"a": ("f1", "f2"), "b": ("g1",)}
    assert len(consents._released) == 1  # full: started again


def test_a_read_decision_computes_released_fields_once_per_pair(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    real = service_module.released_fields

    def counting(*args: Any) -> Any:
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(service_module, "released_fields", counting)
    consents = service(Catalogues(catalogue_with(TYPES, {"a": ["f1", "f2"], "b": ["g1"]})))
    for _ in range(3):
        consents._released_fields(consent())
    assert calls == ["p"]
