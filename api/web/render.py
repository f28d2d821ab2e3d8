"""Templates, formatting helpers and the security headers of every ``/my`` response."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar import Response
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.web.i18n import STRINGS, Lang, field_label, translate
from policies import Catalogue

__all__ = [
    "KST",
    "STATIC_DIR",
    "SecurityHeaders",
    "content_security_policy",
    "format_ms",
    "html_response",
    "make_environment",
    "purpose_title",
    "type_title",
]

TEMPLATE_DIR: Final = Path(__file__).parent / "templates"
STATIC_DIR: Final = Path(__file__).parent / "static"

KST: Final = timezone(timedelta(hours=9), "KST")
"""Korea Standard Time (no daylight saving): every time shown is in KST."""

HTML: Final = "text/html"


def make_environment() -> Environment:
    """The Jinja environment: autoescaped, strict about undefined names."""
    return Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )


def format_ms(ms: int | None) -> str:
    """``YYYY-MM-DD HH:MM`` in KST, or an em dash."""
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(KST).strftime("%Y-%m-%d %H:%M")


def type_title(catalogue: Catalogue, lang: Lang, name: str | None) -> str:
    if name is None:
        return "—"
    found = catalogue.record_types.get(name)
    if found is None:
        return name
    return (found.title_ko or found.title) if lang == "ko" else found.title


def purpose_title(catalogue: Catalogue, lang: Lang, name: str | None) -> str:
    if name is None:
        return "—"
    found = catalogue.purposes.get(name)
    if found is None:
        return name
    return (found.title_ko or found.title) if lang == "ko" else found.title


def helpers(lang: Lang, catalogue: Catalogue) -> dict[str, Callable[..., str]]:
    """The functions every template may call."""

    def t(key: str, **values: object) -> str:
        return translate(lang, key, **values)

    def action_label(action: str) -> str:
        key = "action." + action
        return translate(lang, key) if key in STRINGS else action

    return {
        "t": t,
        "action_label": action_label,
        "field_label": lambda name: field_label(lang, name),
        "when": format_ms,
        "type_title": lambda name: type_title(catalogue, lang, name),
        "purpose_title": lambda name: purpose_title(catalogue, lang, name),
    }


def html_response(
    body: str, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response[str]:
    return Response(body, status_code=status, media_type=HTML, headers=dict(headers or {}))


def content_security_policy(form_action_origins: tuple[str, ...] = ()) -> str:
    """The strict policy of every ``/my`` response: no inline script or style."""
    form_action = " ".join(("'self'", *form_action_origins))
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; "
        f"form-action {form_action}; base-uri 'none'"
    )


class SecurityHeaders:
    """ASGI middleware adding the security headers to every ``/my`` response.

    ``Cache-Control: no-store`` is added unless the handler set its own (static files).
    """

    def __init__(self, app: ASGIApp, csp: str) -> None:
        self.app = app
        self.headers: list[tuple[bytes, bytes]] = [
            (b"content-security-policy", csp.encode("ascii")),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() not in {h for h, _ in self.headers}
                ]
                headers.extend(self.headers)
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def render(env: Environment, template: str, context: Mapping[str, Any]) -> str:
    return env.get_template(template).render(**context)


def is_self_asserted(catalogue: Catalogue, record_type: str) -> bool:
    found = catalogue.record_types.get(record_type)
    return found is not None and found.self_asserted
