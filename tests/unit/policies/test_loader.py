"""policies.loader: the shipped catalogue, the version, and one case per kind of bad file."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from policies import (
    DEFAULT_CATALOGUE_DIR,
    CatalogueError,
    FieldType,
    Purpose,
    RecordType,
    catalogue_version,
    load_catalogue,
)
from policies.loader import CATALOGUE_FILES
from tests.unit.policies.builders import BASELINE, write_catalogue

RT, PU, LC = "record_types.toml", "purposes.toml", "lifecycle.toml"
WHOLE = object()  # replace the whole file
DELETE = None  # leave the file out

# --------------------------------------------------------------------------
# Bad catalogues: (file, old, new, expected message prefix)
# `old` is replaced once in the baseline file; WHOLE replaces the file; new=None deletes it.
# --------------------------------------------------------------------------

BAD: dict[str, tuple[str, object, str | None, str]] = {
    # reading and parsing
    "missing-file": (PU, WHOLE, DELETE, "purposes.toml: missing file (looked in "),
    "toml-syntax": (
        RT,
        'title = "Income certificate"',
        'title = "Income certificate',
        "record_types.toml: line 2, column ",
    ),
    "toml-duplicate-key": (
        PU,
        "max_valid_days = 30",
        "max_valid_days = 30\nmax_valid_days = 31",
        "purposes.toml: line 7, column 20: invalid TOML: Cannot overwrite a value",
    ),
    "not-utf8": (LC, "[rules.", "# caf\udce9\n[rules.", "lifecycle.toml: line 1: not valid UTF-8"),
    # top level
    "unknown-top-level-key": (
        RT,
        WHOLE,
        BASELINE[RT] + "\n[colours]\nred = 1\n",
        "record_types.toml: colours: unknown key (expected one of: record_types)",
    ),
    "unknown-top-level-key-lifecycle": (
        LC,
        WHOLE,
        "version = 2\n" + BASELINE[LC],
        "lifecycle.toml: version: unknown key (expected one of: rules)",
    ),
    "missing-top-level": (PU, WHOLE, "", "purposes.toml: purposes: missing required key"),
    "top-level-not-table": (
        RT,
        WHOLE,
        "record_types = 3\n",
        "record_types.toml: record_types: expected a table, got integer",
    ),
    "entry-not-table": (
        RT,
        WHOLE,
        "[record_types]\naddress = 3\n",
        "record_types.toml: record_types.address: expected a table, got integer",
    ),
    # record_types.toml
    "unknown-entry-key": (
        RT,
        "retention_days = 0\nfields = { year",
        'retention_days = 0\ncolour = "red"\nfields = { year',
        "record_types.toml: record_types.income_certificate.colour: unknown key (expected one of: ",
    ),
    "missing-title": (
        RT,
        'title = "Address"\n',
        "",
        "record_types.toml: record_types.address.title: missing required key",
    ),
    "missing-fields": (
        RT,
        'fields = { road_address = "string" }\n',
        "",
        "record_types.toml: record_types.address.fields: missing required key",
    ),
    "empty-title": (
        RT,
        'title = "Address"',
        'title = "  "',
        "record_types.toml: record_types.address.title: must not be empty",
    ),
    "title-not-string": (
        RT,
        'title = "Address"',
        "title = 1",
        "record_types.toml: record_types.address.title: expected a string, got integer",
    ),
    "title-ko-not-string": (
        RT,
        'title_ko = "소득금액증명"',
        "title_ko = true",
        "record_types.toml: record_types.income_certificate.title_ko: expected a string, got"
        " boolean",
    ),
    "self-asserted-not-bool": (
        RT,
        "self_asserted = false",
        'self_asserted = "no"',
        "record_types.toml: record_types.income_certificate.self_asserted: expected a boolean,"
        " got string",
    ),
    "retention-bool": (
        RT,
        "retention_days = 0",
        "retention_days = true",
        "record_types.toml: record_types.income_certificate.retention_days: expected an integer,"
        " got boolean",
    ),
    "retention-float": (
        RT,
        "retention_days = 0",
        "retention_days = 1.5",
        "record_types.toml: record_types.income_certificate.retention_days: expected an integer,"
        " got float",
    ),
    "retention-negative": (
        RT,
        "retention_days = 0",
        "retention_days = -1",
        "record_types.toml: record_types.income_certificate.retention_days: must be at least 0",
    ),
    "retention-huge": (
        RT,
        "retention_days = 0",
        "retention_days = 100000",
        "record_types.toml: record_types.income_certificate.retention_days: must be at most 36500",
    ),
    "issuers-not-array": (
        RT,
        'issuers = ["nts"]',
        'issuers = "nts"',
        "record_types.toml: record_types.income_certificate.issuers: expected an array, got string",
    ),
    "issuers-duplicate": (
        RT,
        'issuers = ["nts"]',
        'issuers = ["nts", "nts"]',
        "record_types.toml: record_types.income_certificate.issuers[1]: duplicate entry 'nts'",
    ),
    "issuers-bad-client-id": (
        RT,
        'issuers = ["nts"]',
        'issuers = ["national tax"]',
        "record_types.toml: record_types.income_certificate.issuers[0]: invalid client id",
    ),
    "issuers-not-string": (
        RT,
        'issuers = ["nts"]',
        "issuers = [1]",
        "record_types.toml: record_types.income_certificate.issuers[0]: expected a string, got"
        " integer",
    ),
    "type-name-uppercase": (
        RT,
        "[record_types.address]",
        "[record_types.Address]",
        "record_types.toml: record_types.Address: invalid record type name (must match"
        " [a-z0-9_]{1,64})",
    ),
    "type-name-dash": (
        RT,
        "[record_types.address]",
        "[record_types.home-address]",
        "record_types.toml: record_types.home-address: invalid record type name",
    ),
    "type-name-quoted-dot": (
        RT,
        "[record_types.address]",
        '[record_types."home.address"]',
        'record_types.toml: record_types."home.address": invalid record type name',
    ),
    "type-name-too-long": (
        RT,
        "[record_types.address]",
        "[record_types." + "a" * 65 + "]",
        "record_types.toml: record_types." + "a" * 65 + ": invalid record type name",
    ),
    "field-name-invalid": (
        RT,
        'fields = { road_address = "string" }',
        'fields = { RoadAddress = "string" }',
        "record_types.toml: record_types.address.fields.RoadAddress: invalid field name",
    ),
    "bad-field-type": (
        RT,
        'year = "integer"',
        'year = "int"',
        "record_types.toml: record_types.income_certificate.fields.year: unknown field type 'int'"
        " (expected one of: string, integer, number, boolean, date, list, object)",
    ),
    "field-type-not-string": (
        RT,
        'year = "integer"',
        "year = 4",
        "record_types.toml: record_types.income_certificate.fields.year: expected a field type"
        " string,"
        " got integer",
    ),
    "fields-not-table": (
        RT,
        'fields = { road_address = "string" }',
        'fields = ["road_address"]',
        "record_types.toml: record_types.address.fields: expected a table, got array",
    ),
    "fields-empty": (
        RT,
        'fields = { road_address = "string" }',
        "fields = {}",
        "record_types.toml: record_types.address.fields: no fields declared",
    ),
    "subfields-unknown-field": (
        RT,
        "subfields = { children = {",
        "subfields = { kids = {",
        "record_types.toml: record_types.family_relations.subfields.kids: unknown field 'kids'",
    ),
    "subfields-on-scalar": (
        RT,
        "subfields = { children = {",
        "subfields = { name = {",
        "record_types.toml: record_types.family_relations.subfields.name: field 'name' is a string,"
        " not a list or object",
    ),
    "subfields-bad-type": (
        RT,
        'birth_date = "date"',
        'birth_date = "datetime"',
        "record_types.toml: record_types.family_relations.subfields.children.birth_date:"
        " unknown field type 'datetime'",
    ),
    "subfields-empty": (
        RT,
        'subfields = { children = { name = "string", birth_date = "date" } }',
        "subfields = { children = {} }",
        "record_types.toml: record_types.family_relations.subfields.children: no fields declared",
    ),
    # purposes.toml
    "purpose-name-invalid": (
        PU,
        "[purposes.child_allowance]",
        "[purposes.child-allowance]",
        "purposes.toml: purposes.child-allowance: invalid purpose name",
    ),
    "purpose-unknown-key": (
        PU,
        "max_valid_days = 30",
        "max_valid_days = 30\nretention = 3",
        "purposes.toml: purposes.mortgage_screening.retention: unknown key",
    ),
    "purpose-missing-title": (
        PU,
        'title = "Mortgage loan screening"\n',
        "",
        "purposes.toml: purposes.mortgage_screening.title: missing required key",
    ),
    "purpose-missing-access": (
        PU,
        'access = ["once"]\n',
        "",
        "purposes.toml: purposes.income_tax_audit.access: missing required key",
    ),
    "items-unknown-type": (
        PU,
        'address = ["*"] }',
        'address = ["*"], passport = ["*"] }',
        "purposes.toml: purposes.mortgage_screening.items.passport: unknown record type 'passport'",
    ),
    "items-unknown-field": (
        PU,
        '["year", "total_income"]',
        '["year", "salary"]',
        "purposes.toml: purposes.mortgage_screening.items.income_certificate: unknown field"
        " 'salary'",
    ),
    "items-empty-fields": (
        PU,
        '["year", "total_income"]',
        "[]",
        "purposes.toml: purposes.mortgage_screening.items.income_certificate: empty field list",
    ),
    "items-star-not-alone": (
        PU,
        '["year", "total_income"]',
        '["*", "year"]',
        "purposes.toml: purposes.mortgage_screening.items.income_certificate: '*' must be the"
        " only entry",
    ),
    "items-duplicate-field": (
        PU,
        '["year", "total_income"]',
        '["year", "year"]',
        "purposes.toml: purposes.mortgage_screening.items.income_certificate[1]: duplicate entry"
        " 'year'",
    ),
    "items-empty-table": (
        PU,
        'items = { family_relations = ["*"] }',
        "items = {}",
        "purposes.toml: purposes.child_allowance.items: no items",
    ),
    "items-not-table": (
        PU,
        'items = { family_relations = ["*"] }',
        'items = ["family_relations"]',
        "purposes.toml: purposes.child_allowance.items: expected a table, got array",
    ),
    "legal-basis-unknown": (
        PU,
        'legal_basis = "consent"',
        'legal_basis = "contract"',
        "purposes.toml: purposes.mortgage_screening.legal_basis: unknown legal basis 'contract'",
    ),
    "legal-basis-not-string": (
        PU,
        'legal_basis = "consent"',
        "legal_basis = ['consent']",
        "purposes.toml: purposes.mortgage_screening.legal_basis: expected a string, got array",
    ),
    "statute-missing": (
        PU,
        'statute = "Framework Act on National Taxes, Article 81-6"\n',
        "",
        "purposes.toml: purposes.income_tax_audit.statute: missing required key"
        " (legal_basis is 'statute')",
    ),
    "statute-empty": (
        PU,
        'statute = "Framework Act on National Taxes, Article 81-6"',
        'statute = ""',
        "purposes.toml: purposes.income_tax_audit.statute: must not be empty",
    ),
    "statute-on-consent": (
        PU,
        'legal_basis = "consent"',
        'legal_basis = "consent"\nstatute = "Some Act"',
        "purposes.toml: purposes.mortgage_screening.statute: only allowed when legal_basis ="
        " 'statute'",
    ),
    "max-valid-days-zero": (
        PU,
        "max_valid_days = 30",
        "max_valid_days = 0",
        "purposes.toml: purposes.mortgage_screening.max_valid_days: must be a positive integer",
    ),
    "max-valid-days-negative": (
        PU,
        "max_valid_days = 30",
        "max_valid_days = -30",
        "purposes.toml: purposes.mortgage_screening.max_valid_days: must be a positive integer",
    ),
    "max-valid-days-string": (
        PU,
        "max_valid_days = 30",
        'max_valid_days = "30"',
        "purposes.toml: purposes.mortgage_screening.max_valid_days: expected an integer, got"
        " string",
    ),
    "max-valid-days-float": (
        PU,
        "max_valid_days = 30",
        "max_valid_days = 30.0",
        "purposes.toml: purposes.mortgage_screening.max_valid_days: expected an integer, got float",
    ),
    "access-empty": (
        PU,
        'access = ["once"]',
        "access = []",
        "purposes.toml: purposes.income_tax_audit.access: must name at least one of 'once',"
        " 'standing'",
    ),
    "access-unknown": (
        PU,
        'access = ["once"]',
        'access = ["once", "forever"]',
        "purposes.toml: purposes.income_tax_audit.access[1]: unknown access 'forever'",
    ),
    "access-duplicate": (
        PU,
        'access = ["once"]',
        'access = ["once", "once"]',
        "purposes.toml: purposes.income_tax_audit.access[1]: duplicate entry 'once'",
    ),
    "access-not-array": (
        PU,
        'access = ["once"]',
        'access = "once"',
        "purposes.toml: purposes.income_tax_audit.access: expected an array, got string",
    ),
    "clients-not-array": (
        PU,
        'clients = ["kbank"]',
        'clients = "kbank"',
        "purposes.toml: purposes.mortgage_screening.clients: expected an array, got string",
    ),
    # lifecycle.toml
    "rule-name-invalid": (
        LC,
        "[rules.newborn_child_allowance]",
        "[rules.Newborn]",
        "lifecycle.toml: rules.Newborn: invalid rule name",
    ),
    "rule-unknown-key": (
        LC,
        "when = {",
        'title = "Newborn"\nwhen = {',
        "lifecycle.toml: rules.newborn_child_allowance.title: unknown key (expected one of: when,"
        " if,"
        " suggest)",
    ),
    "rule-missing-suggest": (
        LC,
        'suggest = { client = "bokjiro", purpose = "child_allowance", access = "standing",'
        " valid_days = 365 }\n",
        "",
        "lifecycle.toml: rules.newborn_child_allowance.suggest: missing required key",
    ),
    "rule-when-not-table": (
        LC,
        'when = { type = "family_relations", event = "record.updated" }',
        'when = "family_relations"',
        "lifecycle.toml: rules.newborn_child_allowance.when: expected a table, got string",
    ),
    "rule-when-missing-event": (
        LC,
        ', event = "record.updated" }',
        " }",
        "lifecycle.toml: rules.newborn_child_allowance.when.event: missing required key",
    ),
    "rule-unknown-type": (
        LC,
        'type = "family_relations"',
        'type = "birth_certificate"',
        "lifecycle.toml: rules.newborn_child_allowance.when.type: unknown record type"
        " 'birth_certificate'",
    ),
    "rule-bad-event": (
        LC,
        'event = "record.updated"',
        'event = "record.created"',
        "lifecycle.toml: rules.newborn_child_allowance.when.event: unknown event 'record.created'"
        " (expected 'record.updated')",
    ),
    "rule-field-unknown": (
        LC,
        'field = "children[].birth_date"',
        'field = "children[].birthday"',
        "lifecycle.toml: rules.newborn_child_allowance.if.field: 'children[].birthday' is not a"
        " field"
        " of record type 'family_relations'",
    ),
    "rule-field-list-without-brackets": (
        LC,
        'field = "children[].birth_date"',
        'field = "children.birth_date"',
        "lifecycle.toml: rules.newborn_child_allowance.if.field: 'children.birth_date' is not a"
        " field",
    ),
    "rule-field-brackets-on-scalar": (
        LC,
        'field = "children[].birth_date"',
        'field = "name[].birth_date"',
        "lifecycle.toml: rules.newborn_child_allowance.if.field: 'name[].birth_date' is not a"
        " field",
    ),
    "rule-field-not-date": (
        LC,
        'field = "children[].birth_date"',
        'field = "children[].name"',
        "lifecycle.toml: rules.newborn_child_allowance.if.field: 'children[].name' is a string"
        " field;"
        " a rule needs a date field",
    ),
    "rule-within-days-zero": (
        LC,
        "within_days = 365",
        "within_days = 0",
        "lifecycle.toml: rules.newborn_child_allowance.if.within_days: must be a positive integer",
    ),
    "rule-unknown-purpose": (
        LC,
        'purpose = "child_allowance"',
        'purpose = "parental_leave"',
        "lifecycle.toml: rules.newborn_child_allowance.suggest.purpose: unknown purpose"
        " 'parental_leave'",
    ),
    "rule-unknown-client": (
        LC,
        'client = "bokjiro"',
        'client = "welfare"',
        "lifecycle.toml: rules.newborn_child_allowance.suggest.client: unknown client 'welfare'",
    ),
    "rule-client-not-allowed": (
        LC,
        'client = "bokjiro"',
        'client = "kbank"',
        "lifecycle.toml: rules.newborn_child_allowance.suggest.client: client 'kbank' may not use"
        " purpose 'child_allowance'",
    ),
    "rule-access-unknown": (
        LC,
        'access = "standing"',
        'access = "forever"',
        "lifecycle.toml: rules.newborn_child_allowance.suggest.access: unknown access 'forever'",
    ),
    "rule-access-not-allowed": (
        PU,
        'max_valid_days = 365\naccess = ["once", "standing"]',
        'max_valid_days = 365\naccess = ["once"]',
        "lifecycle.toml: rules.newborn_child_allowance.suggest.access: access 'standing' is not"
        " allowed by purpose 'child_allowance'",
    ),
    "rule-valid-days-over-max": (
        LC,
        "valid_days = 365",
        "valid_days = 400",
        "lifecycle.toml: rules.newborn_child_allowance.suggest.valid_days: must be at most 365"
        " (max_valid_days of purpose 'child_allowance')",
    ),
    "rule-valid-days-zero": (
        LC,
        "valid_days = 365",
        "valid_days = 0",
        "lifecycle.toml: rules.newborn_child_allowance.suggest.valid_days: must be a positive"
        " integer",
    ),
}


def _mutated(file: str, old: object, new: str | None) -> dict[str, str | None]:
    files: dict[str, str | None] = dict(BASELINE)
    if new is None or old is WHOLE:
        files[file] = new
        return files
    assert isinstance(old, str)
    text = BASELINE[file]
    assert old in text, f"baseline lacks {old!r}"
    files[file] = text.replace(old, new, 1)
    return files


def test_baseline_loads(tmp_path: Path) -> None:
    catalogue = load_catalogue(write_catalogue(tmp_path))
    assert set(catalogue.record_types) == {"income_certificate", "family_relations", "address"}
    assert catalogue.clients == {"nts", "court", "kbank", "bokjiro"}


@pytest.mark.parametrize(("file", "old", "new", "expected"), BAD.values(), ids=BAD.keys())
def test_bad_catalogue(
    tmp_path: Path, file: str, old: object, new: str | None, expected: str
) -> None:
    directory = write_catalogue(tmp_path / "catalogue", _mutated(file, old, new))
    with pytest.raises(CatalogueError) as excinfo:
        load_catalogue(directory)
    message = str(excinfo.value)
    assert message.startswith(expected), message
    assert "\n" not in message
    assert excinfo.value.code == "catalogue_invalid"
    assert excinfo.value.file == expected.split(":", 1)[0]


def test_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    files = _mutated(RT, 'title = "Income certificate"', 'title = "Income certificate')
    with pytest.raises(CatalogueError) as excinfo:
        load_catalogue(write_catalogue(tmp_path, files))
    assert str(excinfo.value).startswith("record_types.toml: line 2, column ")
    assert ": invalid TOML: " in str(excinfo.value)
    assert "(at line" not in str(excinfo.value)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match=r"^record_types\.toml: missing file \(looked in "):
        load_catalogue(tmp_path / "nowhere")


def test_file_is_a_directory(tmp_path: Path) -> None:
    files: dict[str, str | None] = {**BASELINE, LC: None}
    write_catalogue(tmp_path, files)
    (tmp_path / LC).mkdir()
    with pytest.raises(CatalogueError, match=r"^lifecycle\.toml: is a directory"):
        load_catalogue(tmp_path)


def test_lifecycle_may_hold_no_rules(tmp_path: Path) -> None:
    catalogue = load_catalogue(write_catalogue(tmp_path, {**BASELINE, LC: ""}))
    assert dict(catalogue.rules) == {}
    assert catalogue.clients == {"nts", "court", "kbank", "bokjiro"}


def test_optional_keys_take_safe_defaults(tmp_path: Path) -> None:
    text = BASELINE[RT].replace("issuers = []\nself_asserted = true\nretention_days = 0\n", "")
    catalogue = load_catalogue(write_catalogue(tmp_path, {**BASELINE, RT: text}))
    address = catalogue.record_types["address"]
    assert (address.issuers, address.self_asserted, address.retention_days) == (
        frozenset(),
        False,
        0,
    )
    assert address.title_ko is None
    assert catalogue.record_types["income_certificate"].title_ko == "소득금액증명"


def test_star_is_expanded_and_items_sorted(tmp_path: Path) -> None:
    catalogue = load_catalogue(write_catalogue(tmp_path))
    mortgage = catalogue.purposes["mortgage_screening"]
    assert dict(mortgage.items) == {
        "income_certificate": ("total_income", "year"),
        "address": ("road_address",),
    }
    assert catalogue.purposes["income_tax_audit"].items["income_certificate"] == (
        "employer",
        "total_income",
        "year",
    )


def test_catalogue_is_read_only(tmp_path: Path) -> None:
    catalogue = load_catalogue(write_catalogue(tmp_path))
    with pytest.raises(TypeError):
        catalogue.purposes["x"] = catalogue.purposes["child_allowance"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        catalogue.version = "x"  # type: ignore[misc]
    assert hash(catalogue) == hash(load_catalogue(tmp_path))


# --------------------------------------------------------------------------
# Version
# --------------------------------------------------------------------------


def test_version_is_the_documented_hash(tmp_path: Path) -> None:
    directory = write_catalogue(tmp_path)
    expected = hashlib.sha256()
    for name in ("record_types.toml", "purposes.toml", "lifecycle.toml"):
        data = (directory / name).read_bytes()
        expected.update(f"{name} {len(data)}\n".encode() + data)
    assert load_catalogue(directory).version == expected.hexdigest()


def test_version_is_stable(tmp_path: Path) -> None:
    first = load_catalogue(write_catalogue(tmp_path / "a")).version
    assert first == load_catalogue(write_catalogue(tmp_path / "b")).version
    assert len(first) == 64
    assert first == first.lower()


@pytest.mark.parametrize("changed", CATALOGUE_FILES)
def test_version_changes_with_any_file(tmp_path: Path, changed: str) -> None:
    before = load_catalogue(write_catalogue(tmp_path / "a")).version
    after = load_catalogue(
        write_catalogue(tmp_path / "b", {**BASELINE, changed: BASELINE[changed] + "# reviewed\n"})
    ).version
    assert before != after


def test_version_is_unambiguous_across_file_boundaries() -> None:
    """Moving bytes from the end of one file to the start of the next changes the version."""
    a = {RT: b"ab", PU: b"c", LC: b""}
    b = {RT: b"a", PU: b"bc", LC: b""}
    assert catalogue_version(a) != catalogue_version(b)


# --------------------------------------------------------------------------
# The shipped catalogue
# --------------------------------------------------------------------------

REQUIRED_TYPES = {
    "resident_registration",
    "family_relations",
    "income_certificate",
    "real_estate_title",
    "sale_contract",
    "address",
    "bank_account",
}
PURPOSE_CLIENTS = {
    "mortgage_screening": "kbank",
    "acquisition_tax": "wetax",
    "property_registration": "registry",
    "real_estate_transfer_tax": "nts",
    "child_allowance": "bokjiro",
    "income_tax_audit": "nts",
}
ISSUERS = {
    "resident_registration": "mois",
    "family_relations": "mois",
    "address": "mois",
    "income_certificate": "nts",
    "real_estate_title": "court",
    "sale_contract": "court",
    "bank_account": "kbank",
}


def test_shipped_catalogue_loads() -> None:
    catalogue = load_catalogue()
    assert catalogue == load_catalogue(DEFAULT_CATALOGUE_DIR)
    assert set(catalogue.record_types) >= REQUIRED_TYPES
    assert set(catalogue.purposes) >= set(PURPOSE_CLIENTS)
    assert "newborn_child_allowance" in catalogue.rules
    assert catalogue.clients >= {"mois", "court", "nts", "wetax", "kbank", "bokjiro", "registry"}


def test_shipped_catalogue_parties() -> None:
    catalogue = load_catalogue()
    for purpose, client in PURPOSE_CLIENTS.items():
        assert client in catalogue.purposes[purpose].clients, purpose
    for type_name, issuer in ISSUERS.items():
        assert issuer in catalogue.record_types[type_name].issuers, type_name
    for type_name in ("address", "bank_account"):
        assert catalogue.record_types[type_name].self_asserted
    for type_name in REQUIRED_TYPES - {"address", "bank_account"}:
        assert not catalogue.record_types[type_name].self_asserted


def test_shipped_catalogue_legal_bases() -> None:
    catalogue = load_catalogue()
    audit = catalogue.purposes["income_tax_audit"]
    assert audit.legal_basis == "statute"
    assert audit.statute is not None
    assert "국세기본법" in audit.statute
    assert "Framework Act on National Taxes" in audit.statute
    for name in set(PURPOSE_CLIENTS) - {"income_tax_audit"}:
        assert catalogue.purposes[name].legal_basis == "consent"
        assert catalogue.purposes[name].statute is None


def test_shipped_catalogue_titles_are_bilingual() -> None:
    catalogue = load_catalogue()
    entries: list[RecordType | Purpose] = [
        *catalogue.record_types.values(),
        *catalogue.purposes.values(),
    ]
    for entry in entries:
        assert entry.title.isascii(), entry.name
        assert entry.title_ko is not None
        assert any("\uac00" <= ch <= "\ud7a3" for ch in entry.title_ko), entry.name
    assert catalogue.record_types["income_certificate"].title == "Income certificate"
    assert catalogue.record_types["income_certificate"].title_ko == "소득금액증명"


def test_shipped_newborn_rule_and_children() -> None:
    catalogue = load_catalogue()
    family = catalogue.record_types["family_relations"]
    assert family.fields["children"] is FieldType.LIST
    assert family.subfields["children"]["birth_date"] is FieldType.DATE
    rule = catalogue.rules["newborn_child_allowance"]
    assert (rule.when_type, rule.when_event) == ("family_relations", "record.updated")
    assert (rule.if_field, rule.within_days) == ("children[].birth_date", 365)
    assert (rule.suggest_client, rule.suggest_purpose) == ("bokjiro", "child_allowance")
    assert (rule.suggest_access, rule.suggest_valid_days) == ("standing", 365)


def test_shipped_catalogue_keeps_something_by_statute() -> None:
    catalogue = load_catalogue()
    kept = {name for name, t in catalogue.record_types.items() if t.retention_days > 0}
    assert "sale_contract" in kept
    assert catalogue.record_types["address"].retention_days == 0


def test_shipped_catalogue_version_changes_when_copied_and_edited(tmp_path: Path) -> None:
    copy = tmp_path / "catalogue"
    shutil.copytree(DEFAULT_CATALOGUE_DIR, copy)
    assert load_catalogue(copy).version == load_catalogue().version
    with (copy / "purposes.toml").open("a", encoding="utf-8") as handle:
        handle.write("\n")
    assert load_catalogue(copy).version != load_catalogue().version
