"""A draft is checked on its own fields (``EntryDraft.validate``), inside the batch's
transaction, without building the entry; the verdict must be exactly the contract's
check of the entry it becomes (``validate_entry``, DESIGN section 7): for valid
drafts and for drafts with one field wrong (Hypothesis, and one case per field and
kind of wrong value), with one stated exception: an item's fields must be a tuple or
a list."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from audit import models
from audit.models import (
    ACTOR_TYPES,
    MAX_INT,
    OUTCOMES,
    TOKEN_MAX,
    EntryDraft,
    InvalidEntry,
    Item,
    _is_token_text,
    is_token,
    validate_entry,
)
from tests.helpers.entries import TOKEN_ALPHABET, drafts, tokens

good_tokens = tokens
#: Strings the contract refuses (too long, outside the alphabet) and non-strings.
bad_values = (
    st.text(TOKEN_ALPHABET, min_size=129, max_size=140)
    | st.text(min_size=1).filter(lambda s: not is_token(s))
    | st.integers()
    | st.booleans()
    | st.binary(max_size=4)
)
maybe = st.one_of(st.none(), good_tokens, bad_values)
ints = st.one_of(
    st.integers(0, MAX_INT), st.integers(MAX_INT + 1), st.integers(max_value=-1), st.booleans()
)


@st.composite
def any_items(draw: st.DrawFn) -> Any:
    fields = st.lists(st.one_of(good_tokens, bad_values), max_size=3).map(tuple)
    item = st.builds(Item, type=st.one_of(good_tokens, bad_values), version=ints, fields=fields)
    return draw(st.none() | st.lists(item, max_size=3).map(tuple))


@st.composite
def one_field_wrong(draw: st.DrawFn) -> EntryDraft:
    """A valid draft with at most one field replaced by anything the contract may
    refuse (``action`` without items, so only its own check can refuse it)."""
    draft = draw(drafts())
    name = draw(
        st.sampled_from([None, "action", "actor_type", "outcome", "record_version", "items"])
        | st.sampled_from(NULLABLE_TOKENS)
    )
    if name is None:
        return draft
    if name == "action":
        return replace(draft, items=None, action=draw(st.none() | good_tokens | bad_values))
    if name == "actor_type":
        return replace(draft, actor_type=draw(st.text(max_size=8)))
    if name == "outcome":
        return replace(draft, outcome=draw(st.none() | st.text(max_size=8)))
    if name == "record_version":
        return replace(draft, record_version=draw(ints))
    if name == "items":
        return replace(draft, action="data.read", items=draw(any_items()))
    return replace(draft, **{name: draw(maybe)})


@st.composite
def any_drafts(draw: st.DrawFn) -> EntryDraft:
    return EntryDraft(
        action=draw(st.sampled_from(["data.read", "record.put"]) | good_tokens | bad_values),
        actor_type=draw(st.sampled_from(sorted(ACTOR_TYPES)) | st.just("robot")),
        actor_id=draw(maybe),
        outcome=draw(st.sampled_from(sorted(OUTCOMES)) | st.just("maybe")),
        citizen_id=draw(maybe),
        client_id=draw(maybe),
        consent_id=draw(maybe),
        purpose=draw(maybe),
        record_type=draw(maybe),
        record_version=draw(st.none() | ints),
        items=draw(any_items()),
        reason_code=draw(maybe),
        request_id=draw(maybe),
    )


def contract_verdict(draft: EntryDraft) -> bool:
    """True when the entry ``draft`` becomes passes ``validate_entry`` (an entry that
    cannot even be built counts as refused)."""
    try:
        entry = draft.to_entry(seq=0, ts=0, validate=False)
    except (TypeError, AttributeError):
        return False
    try:
        validate_entry(entry)
    except InvalidEntry:
        return False
    return True


def draft_verdict(draft: EntryDraft) -> bool:
    try:
        draft.validate()
    except InvalidEntry:
        return False
    return True


@given(draft=one_field_wrong())
def test_a_draft_is_refused_exactly_when_its_entry_would_be(draft: EntryDraft) -> None:
    assert draft_verdict(draft) == contract_verdict(draft)


@given(draft=any_drafts())
def test_drafts_wrong_anywhere_get_the_contracts_verdict(draft: EntryDraft) -> None:
    assert draft_verdict(draft) == contract_verdict(draft)


@given(draft=any_drafts())
def test_to_entry_validates_as_the_draft_check_does(draft: EntryDraft) -> None:
    if draft_verdict(draft):
        validate_entry(draft.to_entry(seq=3, ts=4))
    else:
        with pytest.raises(InvalidEntry):
            draft.to_entry(seq=3, ts=4)


VALID = EntryDraft(
    action="data.read",
    actor_type="client",
    actor_id="kbank",
    citizen_id="c_1",
    client_id="kbank",
    consent_id="cs_1",
    purpose="mortgage_screening",
    record_type="income_certificate",
    record_version=2,
    items=(Item("income_certificate", 2, ("year", "total_income")),),
    reason_code=None,
    request_id="req_1",
)
BAD = ["é", "a" * 129, 'a"b', 5, True, b"x", False, 0, b""]
NULLABLE_TOKENS = [
    "actor_id",
    "citizen_id",
    "client_id",
    "consent_id",
    "purpose",
    "record_type",
    "reason_code",
    "request_id",
]
ONE_FIELD_WRONG = (
    [(name, bad) for name in NULLABLE_TOKENS for bad in BAD]
    + [("actor_type", "robot"), ("outcome", "maybe"), ("outcome", None)]
    + [("record_version", bad) for bad in [-1, MAX_INT + 1, True, "2"]]
    + [("items", bad) for bad in ["abc", 5]]
    + [("items", (Item(bad, 1, ()),)) for bad in [*BAD, None]]
    + [("items", (Item("t", bad, ()),)) for bad in [-1, MAX_INT + 1, True, None, "1"]]
    + [("items", (Item("t", 1, (bad,)),)) for bad in [*BAD, None]]
    + [("items", ({"type": "t"},))]
)


def test_every_optional_string_of_a_draft_is_checked_alone() -> None:
    # EntryDraft.validate spells the optional tokens out (it runs inside the write
    # lock) beside validate_entry's _OPTIONAL_TOKENS. A string field added to the draft
    # must join both, and this list, whose fields are each refused alone above.
    optional = {name for name, kind in EntryDraft.__annotations__.items() if kind == "str | None"}
    assert optional == set(NULLABLE_TOKENS)
    assert optional == {"actor_id", *models._OPTIONAL_TOKENS}


def test_an_items_fields_must_be_a_list_or_tuple() -> None:
    # Stricter than the contract's check of the built entry, which sorts any
    # iterable of field names into a list: a draft's fields are a tuple.
    assert not draft_verdict(replace(VALID, items=(Item("t", 1, "abc"),)))  # type: ignore[arg-type]


def test_the_valid_draft_is_valid_both_ways() -> None:
    assert draft_verdict(VALID) and contract_verdict(VALID)
    assert draft_verdict(replace(VALID, items=None)) and contract_verdict(
        replace(VALID, items=None)
    )


@pytest.mark.parametrize(("name", "value"), ONE_FIELD_WRONG)
def test_each_wrong_field_alone_is_refused_both_ways(name: str, value: object) -> None:
    draft = replace(VALID, **{name: value})
    assert not draft_verdict(draft)
    assert not contract_verdict(draft)


@pytest.mark.parametrize("value", [*BAD, None])
def test_a_wrong_action_alone_is_refused_both_ways(value: object) -> None:
    # Without items: "items only on data.read" must not be what refuses it.
    draft = replace(VALID, items=None, action=value)
    assert not draft_verdict(draft)
    assert not contract_verdict(draft)


def test_items_belong_to_data_read_only() -> None:
    draft = replace(VALID, action="record.put")
    assert not draft_verdict(draft) and not contract_verdict(draft)
    assert draft_verdict(replace(draft, items=None))


@pytest.mark.parametrize("seq_ts", [(-1, 0), (0, MAX_INT + 1), (True, 0)])
def test_to_entry_still_checks_seq_and_ts(seq_ts: tuple[int, int]) -> None:
    seq, ts = seq_ts
    with pytest.raises(InvalidEntry):
        EntryDraft(action="record.put", actor_type="system", actor_id="x").to_entry(seq=seq, ts=ts)


def test_the_remembered_token_check_keeps_its_verdicts() -> None:
    # The same strings again (now remembered) get the same answer, and a str subclass
    # equal to a remembered string is judged by its text.
    class Text(str):
        pass

    for value in ["kbank", "a" * 128, "a" * 129, "é", "", "data.read"]:
        first = is_token(value)
        assert is_token(value) == first == is_token(Text(value))
    assert not is_token(None)
    assert not is_token(5)


def test_strings_too_long_to_be_tokens_are_not_remembered() -> None:
    # A caller's megabyte-long value must not stay in the memo (16,384 of them would).
    before = _is_token_text.cache_info().currsize
    for n in range(5):
        assert not is_token(str(n) * (TOKEN_MAX + 1))
        assert not is_token("a" * 1_000_000 + str(n))
    assert _is_token_text.cache_info().currsize == before
    assert is_token("a" * TOKEN_MAX)
