"""oncevault policies: the catalogue (record types, purposes, lifecycle rules) and
pure decisions over it (DESIGN §8, §9).

Load once at start-up, decide per request::

    catalogue = load_catalogue(settings.policy_dir)        # CatalogueError stops start-up
    may_request(catalogue, client_id=..., purpose=..., items=..., access=..., valid_days=...)
    released_fields(catalogue, consent.purpose, consent.items)
    validate_record(catalogue.record_types[type_name], data)   # RecordInvalid -> 422

Nothing here imports Litestar or does I/O except ``load_catalogue``.
"""

from policies.decisions import (
    ALLOW,
    AllOf,
    AnyOf,
    ConsentRequest,
    Decision,
    IssueRequest,
    MayIssue,
    MayRequest,
    MaySelfAssert,
    Policy,
    SelfAssertRequest,
    expand_items,
    lifecycle_suggestions,
    may_issue,
    may_request,
    may_self_assert,
    released_fields,
)
from policies.errors import CatalogueError, PolicyDenied, PolicyError, RecordInvalid
from policies.loader import DEFAULT_CATALOGUE_DIR, catalogue_version, load_catalogue
from policies.models import (
    Access,
    Catalogue,
    FieldType,
    LegalBasis,
    LifecycleRule,
    Purpose,
    RecordType,
    Suggestion,
)
from policies.schema import parse_date, validate_record

__all__ = [
    "ALLOW",
    "DEFAULT_CATALOGUE_DIR",
    "Access",
    "AllOf",
    "AnyOf",
    "Catalogue",
    "CatalogueError",
    "ConsentRequest",
    "Decision",
    "FieldType",
    "IssueRequest",
    "LegalBasis",
    "LifecycleRule",
    "MayIssue",
    "MayRequest",
    "MaySelfAssert",
    "Policy",
    "PolicyDenied",
    "PolicyError",
    "Purpose",
    "RecordInvalid",
    "RecordType",
    "SelfAssertRequest",
    "Suggestion",
    "catalogue_version",
    "expand_items",
    "lifecycle_suggestions",
    "load_catalogue",
    "may_issue",
    "may_request",
    "may_self_assert",
    "parse_date",
    "released_fields",
    "validate_record",
]
