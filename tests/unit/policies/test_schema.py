"""policies.schema.validate_record: strict types, paths in messages, never a value."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies import (
    FieldType,
    RecordInvalid,
    RecordType,
    load_catalogue,
    parse_date,
    validate_record,
)
from policies.schema import MAX_DEPTH, MAX_NODES, MAX_SAFE_INTEGER, MAX_STRING_LENGTH
from tests.unit.policies.builders import record_type

CATALOGUE = load_catalogue()
FAMILY = CATALOGUE.record_types["family_relations"]
INCOME = CATALOGUE.record_types["income_certificate"]

# One field of every type; `children` has declared subfields, `extra`/`meta` do not.
EVERYTHING = record_type(
    "everything",
    {
        "name": FieldType.STRING,
        "count": FieldType.INTEGER,
        "ratio": FieldType.NUMBER,
        "active": FieldType.BOOLEAN,
        "born": FieldType.DATE,
        "children": FieldType.LIST,
        "extra": FieldType.LIST,
        "meta": FieldType.OBJECT,
        "home": FieldType.OBJECT,
    },
    {
        "children": {"name": FieldType.STRING, "birth_date": FieldType.DATE},
        "home": {"city": FieldType.STRING},
    },
)


def valid_everything() -> dict[str, Any]:
    return {
        "name": "홍길동",
        "count": 3,
        "ratio": 0.5,
        "active": True,
        "born": "1990-01-31",
        "children": [{"name": "A", "birth_date": "2024-02-29"}],
        "extra": [1, "two", None, [True, 2.5], {"k": "v"}],
        "meta": {"note": "x", "nested": {"deeper": [1, 2]}},
        "home": {"city": "Seoul"},
    }


SAMPLES: dict[str, dict[str, Any]] = {
    "resident_registration": {
        "name": "홍길동",
        "birth_date": "1988-01-01",
        "address": "서울특별시 종로구 세종대로 209",
        "moved_in_on": "2020-03-02",
        "household_head": True,
        "household_members": 3,
    },
    "family_relations": {
        "name": "홍길동",
        "birth_date": "1988-01-01",
        "marital_status": "married",
        "children": [{"name": "홍아기", "birth_date": "2025-05-05"}],
    },
    "income_certificate": {
        "year": 2024,
        "total_income": 52_000_000,
        "tax_paid": 3_100_000,
        "employer": "주식회사 예시",
    },
    "real_estate_title": {
        "unique_number": "1146-2010-012345",
        "address": "서울특별시 강서구 예시로 1, 101동 1001호",
        "property_kind": "집합건물",
        "area_m2": 84.97,
        "registered_on": "2010-06-30",
        "owners": [{"name": "김매도", "share": "1/1"}],
        "mortgages": [{"creditor": "kbank", "max_amount": 120_000_000}],
    },
    "sale_contract": {
        "report_number": "2025-11500-000123",
        "property_unique_number": "1146-2010-012345",
        "property_address": "서울특별시 강서구 예시로 1, 101동 1001호",
        "price": 850_000_000,
        "contract_date": "2025-03-01",
        "balance_date": "2025-05-30",
        "seller_name": "김매도",
        "buyer_name": "홍길동",
    },
    "address": {
        "road_address": "서울특별시 종로구 세종대로 209",
        "detail": "101호",
        "postal_code": "03154",
    },
    "bank_account": {
        "bank_code": "089",
        "bank_name": "케이뱅크",
        "account_number": "100-123-456789",
        "holder_name": "홍길동",
    },
}


@pytest.mark.parametrize("type_name", sorted(SAMPLES))
def test_shipped_types_accept_a_realistic_record(type_name: str) -> None:
    data = SAMPLES[type_name]
    result = validate_record(CATALOGUE.record_types[type_name], data)
    assert result == data
    assert result is not data


def test_every_shipped_type_has_a_sample() -> None:
    assert set(SAMPLES) == set(CATALOGUE.record_types)


def test_result_is_a_deep_copy() -> None:
    data = valid_everything()
    result = validate_record(EVERYTHING, data)
    assert result == data
    result["extra"][3].append("changed")
    result["meta"]["nested"]["deeper"].append(3)
    assert data == valid_everything()


def test_number_accepts_integers_and_floats() -> None:
    for ratio in (0, -7, 1e300, MAX_SAFE_INTEGER):
        data = valid_everything() | {"ratio": ratio}
        assert validate_record(EVERYTHING, data)["ratio"] == ratio


def _with(**changes: Any) -> dict[str, Any]:
    data = valid_everything()
    for key, value in changes.items():
        if value is _DROP:
            del data[key]
        else:
            data[key] = value
    return data


_DROP = object()
DEEP: Any = "leaf"
for _ in range(MAX_DEPTH):
    DEEP = [DEEP]

BAD: dict[str, tuple[object, str]] = {
    "not-an-object": (["name"], "data: expected a JSON object"),
    "none": (None, "data: expected a JSON object"),
    "unknown-field": (
        _with(nickname="x"),
        "data: unknown field (allowed fields: name, count, ratio, active, born, children, extra,"
        " meta, home)",
    ),
    "missing-field": (_with(count=_DROP), "data.count: missing required field"),
    "null-field": (_with(count=None), "data.count: expected an integer"),
    "string-as-int": (_with(name=1), "data.name: expected a string"),
    "string-too-long": (
        _with(name="x" * (MAX_STRING_LENGTH + 1)),
        "data.name: string longer than 4096 characters",
    ),
    "string-surrogate": (_with(name="a\ud800b"), "data.name: string is not valid Unicode"),
    "int-bool": (_with(count=True), "data.count: expected an integer"),
    "int-float": (_with(count=3.0), "data.count: expected an integer"),
    "int-string": (_with(count="3"), "data.count: expected an integer"),
    "int-too-big": (_with(count=MAX_SAFE_INTEGER + 1), "data.count: integer out of range"),
    "int-too-small": (_with(count=-MAX_SAFE_INTEGER - 1), "data.count: integer out of range"),
    "number-bool": (_with(ratio=False), "data.ratio: expected a number"),
    "number-nan": (_with(ratio=float("nan")), "data.ratio: expected a finite number"),
    "number-inf": (_with(ratio=float("-inf")), "data.ratio: expected a finite number"),
    "number-big-int": (_with(ratio=2**60), "data.ratio: number out of range"),
    "number-string": (_with(ratio="0.5"), "data.ratio: expected a number"),
    "bool-int": (_with(active=1), "data.active: expected a boolean"),
    "bool-string": (_with(active="true"), "data.active: expected a boolean"),
    "date-invalid-day": (_with(born="2023-02-29"), "data.born: expected a date (YYYY-MM-DD)"),
    "date-month-13": (_with(born="2023-13-01"), "data.born: expected a date (YYYY-MM-DD)"),
    "date-year-0": (_with(born="0000-01-01"), "data.born: expected a date (YYYY-MM-DD)"),
    "date-short": (_with(born="2023-1-01"), "data.born: expected a date (YYYY-MM-DD)"),
    "date-datetime": (_with(born="2023-01-01T00:00:00"), "data.born: expected a date (YYYY-MM-DD)"),
    "date-basic-format": (_with(born="20230101"), "data.born: expected a date (YYYY-MM-DD)"),
    "date-fullwidth-digits": (
        _with(born="\uff12\uff10\uff12\uff13-01-01"),
        "data.born: expected a date (YYYY-MM-DD)",
    ),
    "date-not-string": (_with(born=20230101), "data.born: expected a date (YYYY-MM-DD)"),
    "list-not-list": (_with(children={"name": "A"}), "data.children: expected a list"),
    "list-tuple": (_with(extra=(1, 2)), "data.extra: expected a list"),
    "list-element-not-object": (_with(children=["A"]), "data.children[0]: expected a JSON object"),
    "list-element-unknown-key": (
        _with(children=[{"name": "A", "birth_date": "2024-01-01", "rrn": "x"}]),
        "data.children[0]: unknown field (allowed fields: name, birth_date)",
    ),
    "list-element-missing-key": (
        _with(children=[{"name": "A", "birth_date": "2024-01-01"}, {"name": "B"}]),
        "data.children[1].birth_date: missing required field",
    ),
    "list-element-bad-date": (
        _with(children=[{"name": "A", "birth_date": "2024-02-30"}]),
        "data.children[0].birth_date: expected a date (YYYY-MM-DD)",
    ),
    "object-not-object": (_with(meta=[1]), "data.meta: expected an object"),
    "object-shape-unknown-key": (
        _with(home={"city": "Seoul", "zip": "1"}),
        "data.home: unknown field (allowed fields: city)",
    ),
    "object-shape-bad-value": (_with(home={"city": 1}), "data.home.city: expected a string"),
    "json-too-deep": (_with(extra=DEEP), "data.extra: nested deeper than 16 levels"),
    "json-nan": (_with(meta={"a": [float("nan")]}), "data.meta: contains a number out of range"),
    "json-big-int": (_with(extra=[2**53]), "data.extra: contains a number out of range"),
    "json-long-string": (
        _with(extra=["x" * (MAX_STRING_LENGTH + 1)]),
        "data.extra: contains a string that is too long or not valid Unicode",
    ),
    "json-non-str-key": (_with(meta={1: "a"}), "data.meta: contains an object key that is not a"),
    "json-long-key": (
        _with(meta={"k" * (MAX_STRING_LENGTH + 1): 1}),
        "data.meta: contains an object key that is not a valid string",
    ),
    "json-bytes": (_with(extra=[b"raw"]), "data.extra: contains a value that is not JSON"),
    "json-set": (_with(meta={"a": {1, 2}}), "data.meta: contains a value that is not JSON"),
    "too-many-values": (_with(extra=[0] * MAX_NODES), f"data: more than {MAX_NODES} values"),
    "too-much-text": (
        _with(extra=["x" * MAX_STRING_LENGTH] * 300),
        "data: more than 1048576 characters of text",
    ),
}


@pytest.mark.parametrize(("data", "expected"), BAD.values(), ids=BAD.keys())
def test_bad_record(data: object, expected: str) -> None:
    with pytest.raises(RecordInvalid) as excinfo:
        validate_record(EVERYTHING, data)
    assert str(excinfo.value).startswith(expected), str(excinfo.value)
    assert excinfo.value.code == "validation_error"
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__context__ is None


def test_nesting_limit_boundary() -> None:
    ok: Any = "leaf"
    for _ in range(MAX_DEPTH - 1):  # the record object is level 1
        ok = [ok]
    assert validate_record(EVERYTHING, _with(extra=ok))["extra"] == ok
    with pytest.raises(RecordInvalid, match="nested deeper than 16 levels"):
        validate_record(EVERYTHING, _with(extra=[ok]))


def test_self_referencing_input_is_refused_not_recursed() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(RecordInvalid, match=r"^data\.extra: nested deeper than 16 levels$"):
        validate_record(EVERYTHING, _with(extra=loop))


def test_integer_bounds_are_inclusive() -> None:
    for count in (MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 0):
        assert validate_record(EVERYTHING, _with(count=count))["count"] == count


def test_empty_lists_and_objects_are_values() -> None:
    data = _with(children=[], extra=[], meta={})
    assert validate_record(EVERYTHING, data) == data


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-02-29", (2024, 2, 29)),
        ("0001-01-01", (1, 1, 1)),
        ("9999-12-31", (9999, 12, 31)),
        ("2023-02-29", None),
        ("2024-04-31", None),
        ("2024-00-10", None),
        ("2024-01-00", None),
        (" 2024-01-01", None),
        ("2024-01-01\n", None),
        ("", None),
        (None, None),
        (20240101, None),
    ],
)
def test_parse_date(text: object, expected: tuple[int, int, int] | None) -> None:
    parsed = parse_date(text)
    assert (None if parsed is None else (parsed.year, parsed.month, parsed.day)) == expected


# --------------------------------------------------------------------------
# Never echo a value (or a submitted key)
# --------------------------------------------------------------------------

CANARY = "Zq9CANARY880101"


def error_of(record: RecordType, data: object) -> RecordInvalid | None:
    """The RecordInvalid that validation raises, or None when the data is valid."""
    try:
        validate_record(record, data)
    except RecordInvalid as exc:
        return exc
    return None


canary_text = st.builds(lambda a, b: a + CANARY + b, st.text(max_size=5), st.text(max_size=5))
canary_scalars = st.one_of(
    canary_text,
    canary_text.map(lambda s: s * (MAX_STRING_LENGTH // len(s) + 1)),  # too long
    canary_text.map(lambda s: s + "\ud800"),  # lone surrogate
    st.just(f"{CANARY}-01-01"),
    st.just(CANARY.encode()),
)
canary_json = st.recursive(
    st.one_of(canary_scalars, st.integers(), st.floats(), st.booleans(), st.none()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(canary_text, st.sampled_from(["name", "birth_date"])), inner, max_size=3
        ),
    ),
    max_leaves=8,
)
field_names = st.sampled_from([*EVERYTHING.fields, *FAMILY.fields, *INCOME.fields])


@given(
    base=st.sampled_from(["everything", "family", "income"]),
    changes=st.dictionaries(
        st.one_of(field_names, canary_text), canary_json, min_size=1, max_size=4
    ),
)
def test_errors_never_echo_submitted_values(base: str, changes: dict[str, object]) -> None:
    record, data = {
        "everything": (EVERYTHING, valid_everything()),
        "family": (FAMILY, copy.deepcopy(SAMPLES["family_relations"])),
        "income": (INCOME, copy.deepcopy(SAMPLES["income_certificate"])),
    }[base]
    data.update(changes)
    exc = error_of(record, data)
    if exc is not None:
        assert CANARY not in str(exc)
        assert CANARY not in repr(exc.args)
        assert CANARY not in exc.path
        assert exc.__context__ is None
        assert exc.__cause__ is None


@given(
    deep=st.recursive(
        canary_json,
        lambda inner: st.one_of(
            st.lists(inner, min_size=1, max_size=2),
            st.dictionaries(canary_text, inner, min_size=1, max_size=2),
        ),
        max_leaves=40,
    )
)
def test_nested_schemaless_values_never_echo(deep: object) -> None:
    exc = error_of(EVERYTHING, _with(meta={CANARY: deep}, extra=[deep]))
    if exc is not None:
        assert CANARY not in str(exc)
        assert exc.path in {"data.meta", "data.extra"}


def test_children_canary_in_each_position() -> None:
    for child in (
        {"name": "A", "birth_date": CANARY},
        {"name": "A", CANARY: "2024-01-01"},
        {"name": 5, "birth_date": CANARY},
        CANARY,
    ):
        data = copy.deepcopy(SAMPLES["family_relations"]) | {"children": [child]}
        with pytest.raises(RecordInvalid) as excinfo:
            validate_record(FAMILY, data)
        assert CANARY not in str(excinfo.value)
        assert str(excinfo.value).startswith("data.children[0]")
