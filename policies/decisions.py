"""Pure policy decisions: may this client issue, request, or receive these fields?

Every function here is a pure function of a ``Catalogue`` and a request: no I/O,
no clock (``today`` is passed in), and no exception on bad input: a malformed
request is denied with a reason. A ``Decision`` carries reason codes from DESIGN
§10 (``reasons[0]`` is the one an API answers with) and, in ``details``, one
human-readable line per reason that names the request field but never echoes a
value the caller sent.

Composition follows sigstore-python's verification policies: a ``Policy`` is
anything with ``check(request) -> Decision``; ``AllOf`` allows when every policy
allows and denies when it holds none (``no_policy``); ``AnyOf`` allows when one
policy allows and also denies when empty.

Reason codes::

    type_not_issuable     may_issue: unknown type, or the client is not one of its issuers
    not_self_asserted     may_self_assert: unknown type, or the citizen may not write it
    purpose_not_allowed   may_request: unknown purpose, or the client is not one of its clients
    items_not_allowed     may_request: no items, a type or field the purpose does not allow,
                          a repeated type or field, an empty field list, '*' not alone
    validation_error      may_request: malformed items, access the purpose does not allow,
                          valid_days outside 1..max_valid_days, bad max_fetches,
                          case_reference missing/malformed (statute) or present (consent)
    no_policy             AllOf/AnyOf holding no policy
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from policies.errors import PolicyDenied
from policies.models import ACCESS_MODES, Catalogue, FieldType, Purpose, RecordType, Suggestion
from policies.schema import parse_date

__all__ = [
    "ALLOW",
    "CASE_REFERENCE_PATTERN",
    "MAX_FETCHES",
    "AllOf",
    "AnyOf",
    "ConsentRequest",
    "Decision",
    "IssueRequest",
    "MayIssue",
    "MayRequest",
    "MaySelfAssert",
    "Policy",
    "SelfAssertRequest",
    "expand_items",
    "lifecycle_suggestions",
    "may_issue",
    "may_request",
    "may_self_assert",
    "released_fields",
]

CASE_REFERENCE_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MAX_FETCHES = 1_000_000

Items = tuple[tuple[str, tuple[str, ...]], ...]
"""Normalised consent items: ``((type, (field, ...)), ...)``, types and fields sorted."""


@dataclass(frozen=True, slots=True)
class Decision:
    """Allow, or deny with reason codes (and one detail line per reason)."""

    allowed: bool
    reasons: tuple[str, ...] = ()
    details: tuple[str, ...] = ()

    @classmethod
    def deny(cls, reason: str, detail: str) -> Decision:
        return cls(False, (reason,), (detail,))

    def require(self) -> None:
        """Return if allowed; otherwise raise ``PolicyDenied`` carrying the reasons."""
        if not self.allowed:
            raise PolicyDenied(self.reasons or ("forbidden",), self.details)


ALLOW = Decision(True)

RequestT_contra = TypeVar("RequestT_contra", contravariant=True)
RequestT = TypeVar("RequestT")


class Policy(Protocol[RequestT_contra]):
    """Anything that decides on a request."""

    def check(self, request: RequestT_contra, /) -> Decision: ...


def _merge(decisions: Iterable[Decision]) -> Decision:
    reasons: list[str] = []
    details: list[str] = []
    for decision in decisions:
        reasons.extend(decision.reasons or ("forbidden",))
        details.extend(decision.details)
    return Decision(False, tuple(reasons), tuple(details))


class AllOf(Generic[RequestT]):
    """Allows when every policy allows; denies with the reasons of every denial.

    An ``AllOf`` with no policy denies (``no_policy``): forgetting to configure a
    check must never mean "allow".
    """

    def __init__(self, *policies: Policy[RequestT]) -> None:
        self.policies = policies

    def check(self, request: RequestT, /) -> Decision:
        if not self.policies:
            return Decision.deny("no_policy", "no policy configured")
        denials = [d for d in (p.check(request) for p in self.policies) if not d.allowed]
        return _merge(denials) if denials else ALLOW


class AnyOf(Generic[RequestT]):
    """Allows when at least one policy allows; an empty ``AnyOf`` denies (``no_policy``)."""

    def __init__(self, *policies: Policy[RequestT]) -> None:
        self.policies = policies

    def check(self, request: RequestT, /) -> Decision:
        if not self.policies:
            return Decision.deny("no_policy", "no policy configured")
        denials: list[Decision] = []
        for policy in self.policies:
            decision = policy.check(request)
            if decision.allowed:
                return ALLOW
            denials.append(decision)
        return _merge(denials)


# --------------------------------------------------------------------------
# Issuing and self-assertion
# --------------------------------------------------------------------------


def _record_type(catalogue: Catalogue, name: object) -> RecordType | None:
    return catalogue.record_types.get(name) if isinstance(name, str) else None


def _purpose(catalogue: Catalogue, name: object) -> Purpose | None:
    return catalogue.purposes.get(name) if isinstance(name, str) else None


def may_issue(catalogue: Catalogue, client_id: str, record_type: str) -> Decision:
    """May ``client_id`` put records of ``record_type``? (``type_not_issuable``)"""
    found = _record_type(catalogue, record_type)
    if found is None:
        return Decision.deny("type_not_issuable", "type: unknown record type")
    if not isinstance(client_id, str) or client_id not in found.issuers:
        return Decision.deny(
            "type_not_issuable", f"type: this client may not issue record type '{found.name}'"
        )
    return ALLOW


def may_self_assert(catalogue: Catalogue, record_type: str) -> Decision:
    """May the citizen write ``record_type`` directly? (``not_self_asserted``)"""
    found = _record_type(catalogue, record_type)
    if found is None:
        return Decision.deny("not_self_asserted", "type: unknown record type")
    if not found.self_asserted:
        return Decision.deny(
            "not_self_asserted", f"type: record type '{found.name}' is not self-asserted"
        )
    return ALLOW


# --------------------------------------------------------------------------
# Consent requests
# --------------------------------------------------------------------------


def _item_pair(item: object) -> tuple[object, object] | None:
    """``(type, fields)`` from a pair or a ``{"type", "fields"}`` mapping, else None."""
    if isinstance(item, Mapping):
        if set(item) != {"type", "fields"}:
            return None
        return item["type"], item["fields"]
    if isinstance(item, tuple | list) and len(item) == 2:
        return item[0], item[1]
    return None


def _normalise_items(purpose: Purpose, items: object) -> tuple[Items, Decision]:
    """Check requested items against the purpose and expand ``["*"]``.

    Returns the normalised items and ``ALLOW``, or ``()`` and the first problem.
    """
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
        return (), Decision.deny("validation_error", "items: expected a list of {type, fields}")
    if not items:
        return (), Decision.deny("items_not_allowed", "items: no items requested")
    result: dict[str, tuple[str, ...]] = {}
    for index, item in enumerate(items):
        where = f"items[{index}]"
        pair = _item_pair(item)
        if pair is None:
            return (), Decision.deny("validation_error", f"{where}: expected {{type, fields}}")
        type_name, fields = pair
        if not isinstance(type_name, str):
            return (), Decision.deny("validation_error", f"{where}.type: expected a string")
        if isinstance(fields, str | bytes | Mapping) or not isinstance(fields, Sequence):
            return (), Decision.deny("validation_error", f"{where}.fields: expected a list")
        if not all(isinstance(field, str) for field in fields):
            return (), Decision.deny("validation_error", f"{where}.fields: expected strings")
        allowed = purpose.items.get(type_name)
        if allowed is None:
            return (), Decision.deny(
                "items_not_allowed",
                f"{where}.type: record type not allowed for purpose '{purpose.name}'",
            )
        if type_name in result:
            return (), Decision.deny("items_not_allowed", f"{where}.type: record type repeated")
        if not fields:
            return (), Decision.deny("items_not_allowed", f"{where}.fields: empty field list")
        if "*" in fields:
            if len(fields) > 1:
                return (), Decision.deny(
                    "items_not_allowed", f"{where}.fields: '*' must be the only entry"
                )
            result[type_name] = allowed
            continue
        seen: set[str] = set()
        for position, field in enumerate(fields):
            if field in seen:
                return (), Decision.deny(
                    "items_not_allowed", f"{where}.fields[{position}]: field repeated"
                )
            if field not in allowed:
                return (), Decision.deny(
                    "items_not_allowed",
                    f"{where}.fields[{position}]: field not allowed for purpose"
                    f" '{purpose.name}' and record type '{type_name}'",
                )
            seen.add(field)
        result[type_name] = tuple(sorted(seen))
    return tuple(sorted(result.items())), ALLOW


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def may_request(
    catalogue: Catalogue,
    *,
    client_id: str,
    purpose: str,
    items: Sequence[tuple[str, Sequence[str]]] | Sequence[Mapping[str, object]],
    access: str,
    valid_days: int,
    max_fetches: int | None = None,
    case_reference: str | None = None,
) -> Decision:
    """May ``client_id`` ask a citizen for ``items`` for ``purpose``?

    ``items`` is a sequence of ``(type, fields)`` pairs or ``{"type", "fields"}``
    mappings; ``fields == ["*"]`` means every field the purpose allows for the type.
    An unknown purpose or a client the purpose does not name is decided first
    (``purpose_not_allowed``, nothing else is checked); otherwise every problem
    is reported, items first.
    """
    found = _purpose(catalogue, purpose)
    if found is None:
        return Decision.deny("purpose_not_allowed", "purpose: unknown purpose")
    if not isinstance(client_id, str) or client_id not in found.clients:
        return Decision.deny(
            "purpose_not_allowed", f"purpose: this client may not use purpose '{found.name}'"
        )
    problems: list[Decision] = []
    _, items_decision = _normalise_items(found, items)
    if not items_decision.allowed:
        problems.append(items_decision)
    if not isinstance(access, str) or access not in ACCESS_MODES or access not in found.access:
        allowed = ", ".join(sorted(found.access))
        problems.append(
            Decision.deny(
                "validation_error",
                f"access: not allowed for purpose '{found.name}' (allowed: {allowed})",
            )
        )
    if not _is_int(valid_days) or not 1 <= valid_days <= found.max_valid_days:
        problems.append(
            Decision.deny(
                "validation_error",
                f"valid_days: must be an integer from 1 to {found.max_valid_days}",
            )
        )
    if max_fetches is not None:
        if not _is_int(max_fetches) or not 1 <= max_fetches <= MAX_FETCHES:
            problems.append(
                Decision.deny(
                    "validation_error",
                    f"max_fetches: must be null or an integer from 1 to {MAX_FETCHES}",
                )
            )
        elif access == "once" and max_fetches != 1:
            problems.append(
                Decision.deny(
                    "validation_error", "max_fetches: must be null or 1 for access 'once'"
                )
            )
    if found.legal_basis == "statute":
        if not isinstance(case_reference, str) or not CASE_REFERENCE_PATTERN.fullmatch(
            case_reference
        ):
            problems.append(
                Decision.deny(
                    "validation_error",
                    "case_reference: required for a statutory purpose"
                    " (1 to 64 characters of A-Z a-z 0-9 _ . : -)",
                )
            )
    elif case_reference is not None:
        problems.append(
            Decision.deny(
                "validation_error", "case_reference: only allowed for a statutory purpose"
            )
        )
    return _merge(problems) if problems else ALLOW


def expand_items(
    catalogue: Catalogue,
    purpose: str,
    items: Sequence[tuple[str, Sequence[str]]] | Sequence[Mapping[str, object]],
) -> Items:
    """The explicit items a consent stores: ``["*"]`` becomes the fields the purpose
    allows for that type; types and fields sorted.

    Raises:
        PolicyDenied: the purpose is unknown or the items fail ``may_request``'s item
            checks (call ``may_request`` first to get a ``Decision`` instead).
    """
    found = _purpose(catalogue, purpose)
    if found is None:
        raise PolicyDenied(("purpose_not_allowed",), ("purpose: unknown purpose",))
    normalised, decision = _normalise_items(found, items)
    decision.require()
    return normalised


def released_fields(
    catalogue: Catalogue,
    purpose: str,
    consented_items: Mapping[str, Sequence[str]]
    | Iterable[tuple[str, Sequence[str]]]
    | Iterable[Mapping[str, object]],
) -> dict[str, tuple[str, ...]]:
    """What a read releases now: the consented fields the current catalogue's purpose
    still allows, per type (sorted); types left with no field are dropped.

    A narrowed purpose applies at once; a widened one adds nothing, since only
    consented fields are ever released (a stored ``"*"`` matches no field). An
    unknown purpose or malformed items release nothing.
    """
    found = _purpose(catalogue, purpose)
    if found is None:
        return {}
    given: object = consented_items  # checked at run time: never raise on bad input
    if isinstance(given, Mapping):
        pairs: list[object] = list(given.items())
    elif isinstance(given, str | bytes) or not isinstance(given, Iterable):
        return {}
    else:
        pairs = list(given)
    released: dict[str, set[str]] = {}
    for item in pairs:
        pair = _item_pair(item)
        if pair is None:
            continue
        type_name, fields = pair
        if not isinstance(type_name, str) or isinstance(fields, str | bytes | Mapping):
            continue
        if not isinstance(fields, Iterable):
            continue
        allowed = found.items.get(type_name, ())
        kept = {field for field in fields if isinstance(field, str) and field in allowed}
        if kept:
            released.setdefault(type_name, set()).update(kept)
    return {name: tuple(sorted(fields)) for name, fields in sorted(released.items())}


# --------------------------------------------------------------------------
# Lifecycle rules
# --------------------------------------------------------------------------


def _dates_at(data: Mapping[str, object], path: str) -> list[dt.date]:
    """The valid dates at ``name``, ``list[].sub`` or ``object.sub``; malformed parts skipped."""
    if "[]." in path:
        head, _, sub = path.partition("[].")
        elements = data.get(head)
        if not isinstance(elements, list):
            return []
        values = [element.get(sub) for element in elements if isinstance(element, dict)]
    elif "." in path:
        head, _, sub = path.partition(".")
        inner = data.get(head)
        values = [inner.get(sub)] if isinstance(inner, dict) else []
    else:
        values = [data.get(path)]
    return [day for day in (parse_date(value) for value in values) if day is not None]


def lifecycle_suggestions(
    catalogue: Catalogue,
    *,
    record_type: str,
    event: str,
    data: object,
    today: dt.date,
) -> list[Suggestion]:
    """The suggestions the rules make for a new ``event`` on a record of ``record_type``.

    A rule fires when some date at its ``if_field`` lies in ``[today - within_days,
    today]`` (both ends included; a future date never fires). One suggestion per
    rule, in file order. Malformed data fires nothing.
    """
    if not isinstance(data, dict) or not isinstance(today, dt.date):
        return []
    if isinstance(today, dt.datetime):
        today = today.date()
    suggestions: list[Suggestion] = []
    for rule in catalogue.rules.values():
        if rule.when_type != record_type or rule.when_event != event:
            continue
        found = catalogue.record_types.get(rule.when_type)
        if found is None or found.field_type(rule.if_field) is not FieldType.DATE:
            continue
        newest = today.toordinal()
        oldest = newest - rule.within_days
        if any(oldest <= day.toordinal() <= newest for day in _dates_at(data, rule.if_field)):
            suggestions.append(
                Suggestion(
                    rule=rule.name,
                    client_id=rule.suggest_client,
                    purpose=rule.suggest_purpose,
                    access=rule.suggest_access,
                    valid_days=rule.suggest_valid_days,
                )
            )
    return suggestions


# --------------------------------------------------------------------------
# The same decisions as composable policies
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssueRequest:
    client_id: str
    record_type: str


@dataclass(frozen=True, slots=True)
class SelfAssertRequest:
    record_type: str


@dataclass(frozen=True, slots=True)
class ConsentRequest:
    client_id: str
    purpose: str
    items: Sequence[tuple[str, Sequence[str]]] | Sequence[Mapping[str, object]]
    access: str
    valid_days: int
    max_fetches: int | None = None
    case_reference: str | None = None


@dataclass(frozen=True, slots=True)
class MayIssue:
    """``may_issue`` as a ``Policy[IssueRequest]``."""

    catalogue: Catalogue

    def check(self, request: IssueRequest, /) -> Decision:
        return may_issue(self.catalogue, request.client_id, request.record_type)


@dataclass(frozen=True, slots=True)
class MaySelfAssert:
    """``may_self_assert`` as a ``Policy[SelfAssertRequest]``."""

    catalogue: Catalogue

    def check(self, request: SelfAssertRequest, /) -> Decision:
        return may_self_assert(self.catalogue, request.record_type)


@dataclass(frozen=True, slots=True)
class MayRequest:
    """``may_request`` as a ``Policy[ConsentRequest]``."""

    catalogue: Catalogue

    def check(self, request: ConsentRequest, /) -> Decision:
        return may_request(
            self.catalogue,
            client_id=request.client_id,
            purpose=request.purpose,
            items=request.items,
            access=request.access,
            valid_days=request.valid_days,
            max_fetches=request.max_fetches,
            case_reference=request.case_reference,
        )
