"""policies.decisions.lifecycle_suggestions: the newborn rule, and nothing on bad data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies import Suggestion, lifecycle_suggestions, load_catalogue
from tests.unit.policies.builders import BASELINE, write_catalogue

CATALOGUE = load_catalogue()
TODAY = dt.date(2025, 6, 15)
NEWBORN = Suggestion(
    rule="newborn_child_allowance",
    client_id="bokjiro",
    purpose="child_allowance",
    access="standing",
    valid_days=365,
)


def family(*birth_dates: object, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "홍길동",
        "birth_date": "1988-01-01",
        "marital_status": "married",
        "children": [{"name": f"child{i}", "birth_date": d} for i, d in enumerate(birth_dates)],
    }
    data.update(overrides)
    return data


def suggest(
    data: object,
    *,
    record_type: str = "family_relations",
    event: str = "record.updated",
    today: Any = TODAY,
) -> list[Suggestion]:
    return lifecycle_suggestions(
        CATALOGUE, record_type=record_type, event=event, data=data, today=today
    )


def days_ago(n: int) -> str:
    return (TODAY - dt.timedelta(days=n)).isoformat()


@pytest.mark.parametrize(
    ("birth_dates", "fires"),
    [
        ((days_ago(10),), True),
        ((days_ago(0),), True),  # born today
        ((days_ago(365),), True),  # the first day of the window
        ((days_ago(366),), False),
        ((days_ago(-1),), False),  # tomorrow: a future date never fires
        ((days_ago(4000),), False),  # an older child
        ((days_ago(4000), days_ago(30)), True),  # an older sibling and a newborn
        ((days_ago(30), days_ago(60)), True),  # twins of a sort: still one suggestion
        ((), False),  # no children
    ],
)
def test_newborn_rule(birth_dates: tuple[str, ...], fires: bool) -> None:
    assert suggest(family(*birth_dates)) == ([NEWBORN] if fires else [])


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "children",
        family(children=None),
        family(children="2025-06-01"),
        family(children={"birth_date": days_ago(1)}),
        family(children=[days_ago(1)]),
        family(children=[{"name": "a"}]),
        family(children=[{"birth_date": None}]),
        family(children=[{"birth_date": 20250601}]),
        family("2025-02-30"),
        family("2025-6-1"),
        family(" " + days_ago(1)),
        family(days_ago(1) + "T00:00:00"),
    ],
    ids=repr,
)
def test_malformed_data_suggests_nothing(data: object) -> None:
    assert suggest(data) == []


def test_only_the_rules_type_and_event() -> None:
    data = family(days_ago(1))
    assert suggest(data, record_type="income_certificate") == []
    assert suggest(data, event="record.deleted") == []
    assert suggest(data, record_type=None) == []  # type: ignore[arg-type]


def test_today_as_datetime_or_garbage() -> None:
    data = family(days_ago(1))
    assert suggest(data, today=dt.datetime(2025, 6, 15, 23, 59, tzinfo=dt.UTC)) == [NEWBORN]
    assert suggest(data, today="2025-06-15") == []
    assert suggest(data, today=None) == []


def test_extremes_of_the_calendar_do_not_overflow() -> None:
    assert suggest(family("0001-01-01"), today=dt.date.min) == [NEWBORN]
    assert suggest(family("9999-12-31"), today=dt.date.max) == [NEWBORN]
    assert suggest(family("9999-12-31"), today=dt.date.min) == []


def test_a_plain_date_field_rule(tmp_path: Path) -> None:
    """A rule on a top-level date field (`name` paths), with its own window."""
    record_types = BASELINE["record_types.toml"].replace(
        'fields = { name = "string", children = "list" }',
        'fields = { name = "string", children = "list", married_on = "date" }',
    )
    lifecycle = BASELINE["lifecycle.toml"].replace(
        'field = "children[].birth_date", within_days = 365',
        'field = "married_on", within_days = 30',
    )
    catalogue = load_catalogue(
        write_catalogue(
            tmp_path, {**BASELINE, "record_types.toml": record_types, "lifecycle.toml": lifecycle}
        )
    )
    base = {"name": "x", "children": []}

    def run(data: object) -> list[str]:
        found = lifecycle_suggestions(
            catalogue,
            record_type="family_relations",
            event="record.updated",
            data=data,
            today=TODAY,
        )
        return [s.rule for s in found]

    assert run(base | {"married_on": days_ago(30)}) == ["newborn_child_allowance"]
    assert run(base | {"married_on": days_ago(31)}) == []
    assert run(base) == []


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=12),
        st.dates().map(str),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["children", "birth_date", "name"]), inner, max_size=3),
    ),
    max_leaves=10,
)


@given(data=json_values, today=st.dates())
def test_never_raises(data: object, today: dt.date) -> None:
    result = suggest(data, today=today)
    assert result in ([], [NEWBORN])


@given(birth=st.dates(), today=st.dates())
def test_fires_exactly_within_the_window(birth: dt.date, today: dt.date) -> None:
    fires = 0 <= (today - birth).days <= 365
    assert suggest(family(birth.isoformat()), today=today) == ([NEWBORN] if fires else [])


def test_an_object_subfield_rule(tmp_path: Path) -> None:
    """`object_field.sub` paths resolve through an object field's declared subfields."""
    record_types = BASELINE["record_types.toml"].replace(
        'fields = { name = "string", children = "list" }\n'
        'subfields = { children = { name = "string", birth_date = "date" } }',
        'fields = { name = "string", children = "list", marriage = "object" }\n'
        'subfields = { children = { name = "string", birth_date = "date" },'
        ' marriage = { registered_on = "date" } }',
    )
    lifecycle = BASELINE["lifecycle.toml"].replace(
        '"children[].birth_date"', '"marriage.registered_on"'
    )
    catalogue = load_catalogue(
        write_catalogue(
            tmp_path,
            {**BASELINE, "record_types.toml": record_types, "lifecycle.toml": lifecycle},
        )
    )
    assert catalogue.rules["newborn_child_allowance"].if_field == "marriage.registered_on"

    def run(data: object) -> int:
        return len(
            lifecycle_suggestions(
                catalogue,
                record_type="family_relations",
                event="record.updated",
                data=data,
                today=TODAY,
            )
        )

    base = {"name": "x", "children": []}
    assert run(base | {"marriage": {"registered_on": days_ago(3)}}) == 1
    assert run(base | {"marriage": {"registered_on": days_ago(400)}}) == 0
    assert run(base | {"marriage": [{"registered_on": days_ago(3)}]}) == 0
