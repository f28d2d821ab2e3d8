"""The home purchase's records (shared by the HTTP tests and the demo checks)."""

from __future__ import annotations

from typing import Any

BUYER_NID = "900101-1234567"

TITLE: dict[str, Any] = {
    "unique_number": "1146-2008-012345",
    "address": "서울특별시 마포구 월드컵북로 396, 101동 1201호",
    "property_kind": "apartment",
    "area_m2": 84.97,
    "registered_on": "2012-05-14",
    "owners": [{"name": "김매도", "share": "1/1"}],
    "mortgages": [],
}
CONTRACT: dict[str, Any] = {
    "report_number": "2026-MAPO-00812",
    "property_unique_number": "1146-2008-012345",
    "property_address": "서울특별시 마포구 월드컵북로 396, 101동 1201호",
    "price": 1_150_000_000,
    "contract_date": "2026-10-02",
    "balance_date": "2026-12-15",
    "seller_name": "김매도",
    "buyer_name": "홍길동",
}
INCOME: dict[str, Any] = {
    "year": 2025,
    "total_income": 86_400_000,
    "tax_paid": 9_120_000,
    "employer": "한빛전자",
}
MORTGAGE_ITEMS = [
    {"type": "income_certificate", "fields": ["year", "total_income"]},
    {"type": "real_estate_title", "fields": ["unique_number", "address", "area_m2"]},
]


def mortgage_request(subject: dict[str, str], **fields: Any) -> dict[str, Any]:
    """The bank's standing ``mortgage_screening`` request body for ``subject``
    (``fields`` replace the defaults: ``items``, ``access``, ``valid_days``, ...)."""
    return {
        "subject": subject,
        "purpose": "mortgage_screening",
        "items": MORTGAGE_ITEMS,
        "access": "standing",
        "valid_days": 30,
        **fields,
    }
