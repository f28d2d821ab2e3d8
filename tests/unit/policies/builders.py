"""Shared builders for the policies tests: a small valid catalogue trio, and
catalogues built in memory (for Hypothesis, which cannot take function fixtures)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from policies import Catalogue, FieldType, LifecycleRule, Purpose, RecordType

# A minimal valid catalogue; test cases mutate it with string replacements.
BASELINE = {
    "record_types.toml": """\
[record_types.income_certificate]
title = "Income certificate"
title_ko = "소득금액증명"
issuers = ["nts"]
self_asserted = false
retention_days = 0
fields = { year = "integer", total_income = "integer", employer = "string" }

[record_types.family_relations]
title = "Family relations certificate"
issuers = ["court"]
self_asserted = false
retention_days = 0
fields = { name = "string", children = "list" }
subfields = { children = { name = "string", birth_date = "date" } }

[record_types.address]
title = "Address"
issuers = []
self_asserted = true
retention_days = 0
fields = { road_address = "string" }
""",
    "purposes.toml": """\
[purposes.mortgage_screening]
title = "Mortgage loan screening"
legal_basis = "consent"
clients = ["kbank"]
items = { income_certificate = ["year", "total_income"], address = ["*"] }
max_valid_days = 30
access = ["once", "standing"]

[purposes.child_allowance]
title = "Child allowance"
legal_basis = "consent"
clients = ["bokjiro"]
items = { family_relations = ["*"] }
max_valid_days = 365
access = ["once", "standing"]

[purposes.income_tax_audit]
title = "Income tax audit"
legal_basis = "statute"
statute = "Framework Act on National Taxes, Article 81-6"
clients = ["nts"]
items = { income_certificate = ["*"] }
max_valid_days = 90
access = ["once"]
""",
    "lifecycle.toml": """\
[rules.newborn_child_allowance]
when = { type = "family_relations", event = "record.updated" }
if = { field = "children[].birth_date", within_days = 365 }
suggest = { client = "bokjiro", purpose = "child_allowance", access = "standing", valid_days = 365 }
""",
}


def write_catalogue(directory: Path, files: Mapping[str, str | None] = BASELINE) -> Path:
    """Write the trio (None = leave the file out). Lone surrogates become raw bytes,
    so a test can write invalid UTF-8."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        if text is not None:
            (directory / name).write_bytes(text.encode("utf-8", "surrogateescape"))
    return directory


def record_type(
    name: str,
    fields: Mapping[str, FieldType],
    subfields: Mapping[str, Mapping[str, FieldType]] | None = None,
    *,
    issuers: Sequence[str] = (),
    self_asserted: bool = False,
) -> RecordType:
    return RecordType(
        name=name,
        title=name,
        title_ko=None,
        issuers=frozenset(issuers),
        self_asserted=self_asserted,
        retention_days=0,
        fields=MappingProxyType(dict(fields)),
        subfields=MappingProxyType(
            {k: MappingProxyType(dict(v)) for k, v in (subfields or {}).items()}
        ),
    )


def catalogue_with(
    types: Mapping[str, Sequence[str]],
    purpose_items: Mapping[str, Sequence[str]],
    *,
    purpose: str = "p",
    client: str = "c",
) -> Catalogue:
    """One purpose over string-typed record types, built without files."""
    record_types = {
        name: record_type(name, dict.fromkeys(fields, FieldType.STRING))
        for name, fields in types.items()
    }
    the_purpose = Purpose(
        name=purpose,
        title=purpose,
        title_ko=None,
        legal_basis="consent",
        statute=None,
        clients=frozenset({client}),
        items=MappingProxyType({k: tuple(sorted(v)) for k, v in purpose_items.items()}),
        max_valid_days=30,
        access=frozenset({"once", "standing"}),
    )
    rules: dict[str, LifecycleRule] = {}
    return Catalogue(
        record_types=MappingProxyType(record_types),
        purposes=MappingProxyType({purpose: the_purpose}),
        rules=MappingProxyType(rules),
        clients=frozenset({client}),
        version="0" * 64,
    )
