"""Strict request bodies: size limits, JSON media type, and a pre-parse JSON check.

``StrictJSONBodyMiddleware`` reads the body of every POST, PUT, PATCH and DELETE
request before the app sees it:

- over the route's limit -> 413 ``payload_too_large``: refused from
  ``Content-Length`` without reading, and by counting streamed bytes (chunked or
  a lying ``Content-Length``), reading at most ``limit + 1`` bytes;
- under ``/v1/`` a non-empty body must be ``application/json`` (optionally
  ``; charset=utf-8``, case-insensitive) -> else 415 ``unsupported_media_type``;
- under ``/v1/`` a non-empty body must be strict JSON -> else 400
  ``malformed_request``: valid UTF-8; nesting at most 32 deep (counted without
  recursion before parsing); no duplicate object keys at any level; no
  ``NaN``/``Infinity``; integers within +-(2**63 - 1); no float literal that
  overflows to infinity (``1e999``); no unpaired UTF-16 surrogate escape
  (``"\\ud800"``); a JSON object at the top level;
- under ``/v1/`` a body whose values fit the route's ``data`` type only by a lax
  conversion (``"30"`` for an integer) -> 422 ``validation_error``
  (:func:`check_body_types`).

A refused request is answered here, with problem+json, and never reaches the app.
An accepted one is replayed byte for byte, so Litestar's typed bodies (and the
OpenAPI document) keep working. Empty bodies pass untouched whatever their
``Content-Type`` (bodyless actions such as ``.../approve``); a route that needs
a body answers 400 through ``validation_exception_handler``. Paths outside
``/v1/`` (``/oauth/token``, form posts of the web pages) only get the size limit.

``validation_exception_handler`` turns Litestar's ``ValidationException`` into
422 ``validation_error`` (body schema: names the field by JSON path, never the
value) or 400 ``malformed_request`` (query, path, header or cookie parameters).
``recursion_error_handler`` answers 400 if a too-deep body ever gets past the
middleware. No detail ever quotes request content.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, NoReturn

import msgspec
from litestar import Request, Response
from litestar.enums import ScopeType
from litestar.exceptions import ValidationException
from litestar.types import (
    ASGIApp,
    HTTPRequestEvent,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    ReceiveMessage,
    Scope,
    Send,
)

from api.errors import problem

__all__ = [
    "BATCH_LIMIT",
    "DEFAULT_LIMIT",
    "DEFAULT_LIMITS",
    "MAX_DEPTH",
    "BodyRefused",
    "StrictJSONBodyMiddleware",
    "check_body_types",
    "check_json_body",
    "recursion_error_handler",
    "strict_json_bodies",
    "validation_exception_handler",
]

DEFAULT_LIMIT: Final = 1 << 20
BATCH_LIMIT: Final = 16 << 20
DEFAULT_LIMITS: Final[Mapping[tuple[str, str], int]] = MappingProxyType(
    {("POST", "/v1/records:batch"): BATCH_LIMIT}
)
MAX_DEPTH: Final = 32
JSON_PREFIXES: Final = ("/v1/",)
BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
INT_MAX: Final = (1 << 63) - 1


class BodyRefused(Exception):
    """A request body the API will not take: ``code`` and a content-free ``detail``."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


# ---------------------------------------------------------------------------
# The JSON check


# Only quotes and brackets matter for depth; "{" and "}" fold to "[" and "]".
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_FOLD = bytes.maketrans(b"{}", b"[]")
_QUOTED = re.compile(rb'"[^"]*"')
# \uD800-\uDFFF escapes: only then do strings need a look for unpaired surrogates.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_OBJECT: Final = object()
# json's own fixed messages -> ours (nothing from the input, whatever json says).
_JSON_REASONS = {
    "Expecting value": "expecting a value",
    "Extra data": "extra data after the document",
    "Expecting ',' delimiter": "expecting ','",
    "Expecting ':' delimiter": "expecting ':'",
    "Expecting property name enclosed in double quotes": "expecting a quoted property name",
    "Unterminated string starting at": "unterminated string",
    "Invalid control character at": "control character in a string",
    "Invalid \\escape": "invalid escape",
    "Invalid \\uXXXX escape": "invalid \\u escape",
    "Illegal trailing comma before end of object": "trailing comma",
    "Illegal trailing comma before end of array": "trailing comma",
    "Unexpected UTF-8 BOM (decode using utf-8-sig)": "byte order mark",
}


def _nesting(depth: int) -> re.Pattern[bytes]:
    """Matches exactly the balanced bracket sequences nested at most ``depth`` deep.

    Each level is deterministic and possessive, so matching is linear and stops at
    the first bracket that goes one level too deep: no recursion, no backtracking.
    """
    if not 1 <= depth <= 100:
        raise ValueError("max_depth must be between 1 and 100")
    level = rb"\[\]"
    for _ in range(depth - 1):
        level = rb"\[(?:" + level + rb")*+\]"
    return re.compile(rb"(?:" + level + rb")*+")


_NESTING: dict[int, re.Pattern[bytes]] = {}


def _nesting_pattern(depth: int) -> re.Pattern[bytes]:
    pattern = _NESTING.get(depth)
    if pattern is None:
        pattern = _NESTING[depth] = _nesting(depth)
    return pattern


def _brackets(body: bytes) -> bytes:
    """The ``[``/``]`` skeleton of ``body`` outside string literals, in C-speed steps."""
    # Escapes pair from the left: drop "\\" pairs, then escaped quotes.
    skeleton = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = skeleton.translate(_FOLD, _NOT_STRUCTURE)
    # Quotes now alternate open/close; an adjacent pair has no bracket between it.
    skeleton = skeleton.replace(b'""', b"")
    if b'"' in skeleton:
        skeleton = _QUOTED.sub(b"", skeleton).replace(b'"', b"")
    return skeleton


def _check_depth(body: bytes, max_depth: int) -> None:
    skeleton = _brackets(body)
    if not skeleton:
        return
    if _nesting_pattern(max_depth).fullmatch(skeleton):
        return
    if b"[" * (max_depth + 1) in skeleton or skeleton.count(b"[") == skeleton.count(b"]"):
        _refuse(f"the request body nests deeper than {max_depth} levels")
    _refuse("the request body is not valid JSON: unbalanced brackets")


def _refuse(detail: str) -> NoReturn:
    raise BodyRefused("malformed_request", detail)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> object:
    if len(pairs) > 1 and len({key for key, _ in pairs}) != len(pairs):
        _refuse("the request body has a duplicate object key")
    return _OBJECT


def _bounded_int(literal: str) -> int:
    if len(literal) > 20 or not -INT_MAX <= int(literal) <= INT_MAX:
        _refuse("the request body has an integer outside +-(2**63 - 1)")
    return 0


def _finite_float(literal: str) -> float:
    if not math.isfinite(float(literal)):
        _refuse("the request body has a number too large to represent")
    return 0.0


def _no_constants(_: str) -> NoReturn:
    _refuse("the request body has NaN or Infinity, which JSON does not allow")


def _has_unpaired_surrogate(text: str) -> bool:
    stack: list[Any] = [json.loads(text, object_pairs_hook=lambda pairs: pairs)]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def check_json_body(
    body: bytes, *, max_depth: int = MAX_DEPTH, require_object: bool = True
) -> None:
    """Raise ``BodyRefused`` (400 ``malformed_request``) unless ``body`` is strict JSON.

    Strict: UTF-8; nesting at most ``max_depth``; no duplicate keys; no
    NaN/Infinity; integers within +-(2**63 - 1); floats finite; no unpaired
    surrogate escapes; an object at the top when ``require_object``.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        _refuse(f"the request body is not valid UTF-8 (byte {exc.start})")
    _check_depth(body, max_depth)
    try:
        top = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_int=_bounded_int,
            parse_float=_finite_float,
            parse_constant=_no_constants,
        )
    except json.JSONDecodeError as exc:
        # Only json's own fixed texts; a position is not content.
        reason = _JSON_REASONS.get(exc.msg, "syntax error")
        _refuse(
            f"the request body is not valid JSON: {reason} at line {exc.lineno}, column {exc.colno}"
        )
    except RecursionError:  # max_depth set beyond the interpreter's limit
        _refuse("the request body nests too deeply")
    if require_object and top is not _OBJECT:
        _refuse("the request body must be a JSON object")
    if _SURROGATE_ESCAPE.search(body) and _has_unpaired_surrogate(text):
        _refuse("the request body has an unpaired UTF-16 surrogate escape")


#: A JSON path of field names and indexes only (msgspec writes a dict key as ``[...]``).
_SAFE_PATH = re.compile(r"\$(?:\.[A-Za-z_][A-Za-z0-9_]{0,63}|\[(?:\d{1,7}|\.\.\.)\]){0,16}")


def _body_type(handler: object) -> object:
    """The type of ``handler``'s ``data`` body, None when it takes none (Litestar keeps
    the parsed field on the handler)."""
    field = getattr(handler, "parsed_data_field", None)
    return None if field is None else field.annotation


def check_body_types(body: bytes, handler: object) -> None:
    """Raise ``BodyRefused`` (422 ``validation_error``) when ``body`` fits
    ``handler``'s ``data`` type only by a conversion of its JSON types.

    Litestar converts a body to its type with msgspec's lax rules (``strict=False``,
    meant for query and path strings), which take ``"30"`` or ``30.0`` for an integer
    and ``"true"`` for a boolean. A body is JSON, so its types are the client's: it is
    decoded to the same type with ``strict=True`` here. A body that fails the lax rules
    too is left to Litestar, whose validation names a bad parameter before a bad body
    (:func:`validation_exception_handler`). The detail names the JSON path and the
    expected type, as that handler does, never the value.
    """
    data_type = _body_type(handler)
    if data_type is None:
        return
    try:
        msgspec.json.decode(body, type=data_type, strict=True)
    except msgspec.ValidationError as exc:
        try:
            msgspec.json.decode(body, type=data_type, strict=False)
        except msgspec.ValidationError:
            return  # refused by Litestar in its own order
        match = _AT_PATH.search(str(exc))
        path = "$" + match.group("path") if match else "$"
        if not _SAFE_PATH.fullmatch(path):  # a key the client chose stays out of the detail
            path = "$"
        raise BodyRefused("validation_error", f"{path}: {_safe_message(str(exc))}") from None


# ---------------------------------------------------------------------------
# The middleware


def _is_json_media_type(value: str) -> bool:
    media_type, _, params = value.partition(";")
    if media_type.strip().lower() != "application/json":
        return False
    params = params.strip()
    if not params:
        return True
    name, sep, charset = params.partition("=")
    return (
        sep == "="
        and name.strip().lower() == "charset"
        and charset.strip().strip('"').lower() in ("utf-8", "utf8")
    )


def _normalise(path: str) -> str:
    path = re.sub(r"/{2,}", "/", path)
    return path.rstrip("/") or "/"


class StrictJSONBodyMiddleware:
    """Pure ASGI middleware: body size limits and strict JSON bodies (see the module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        default_limit: int = DEFAULT_LIMIT,
        limits: Mapping[tuple[str, str], int] = DEFAULT_LIMITS,
        json_prefixes: tuple[str, ...] = JSON_PREFIXES,
        max_depth: int = MAX_DEPTH,
    ) -> None:
        self.app = app
        self.default_limit = default_limit
        self.limits = {
            (method.upper(), _normalise(path)): n for (method, path), n in limits.items()
        }
        self.json_prefixes = json_prefixes
        self.max_depth = max_depth
        _nesting_pattern(max_depth)  # a bad max_depth fails here, not on a request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        path = _normalise(scope["path"])
        limit = self.limits.get((scope["method"], path), self.default_limit)
        is_json_api = path.startswith(self.json_prefixes) or path + "/" in self.json_prefixes
        try:
            body = await self._read(scope, receive, limit, is_json_api)
            if body is None:  # the client went away
                return
            if body and is_json_api:
                self._check_media_type(scope)
                check_json_body(body, max_depth=self.max_depth)
                check_body_types(body, scope.get("route_handler"))
        except BodyRefused as refused:
            await _send_problem(send, refused)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(
        self, scope: Scope, receive: Receive, limit: int, is_json_api: bool
    ) -> bytes | None:
        lengths = {value for name, value in scope["headers"] if name == b"content-length"}
        if lengths:
            raw = next(iter(lengths))
            if len(lengths) > 1 or not raw.isdigit():
                raise BodyRefused("malformed_request", "the Content-Length header is invalid")
            declared = int(raw) if len(raw) <= 18 else limit + 1
            if declared > limit:
                raise _too_large(limit)
            if declared and is_json_api:
                self._check_media_type(scope)  # refuse before reading
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    def _check_media_type(scope: Scope) -> None:
        types = [value for name, value in scope["headers"] if name == b"content-type"]
        if len(types) != 1 or not _is_json_media_type(types[0].decode("latin-1")):
            raise BodyRefused(
                "unsupported_media_type", "request bodies must be sent as application/json"
            )


def _too_large(limit: int) -> BodyRefused:
    return BodyRefused("payload_too_large", f"the request body is larger than {limit} bytes")


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> ReceiveMessage:
        nonlocal sent
        if sent:
            return await receive()  # http.disconnect, when it comes
        sent = True
        event: HTTPRequestEvent = {"type": "http.request", "body": body, "more_body": False}
        return event

    return replay


async def _send_problem(send: Send, refused: BodyRefused) -> None:
    response = problem(refused.code, refused.detail)
    content = msgspec.json.encode(response.content)
    headers = [
        (b"content-type", (response.media_type or "application/problem+json").encode("latin-1")),
        (b"content-length", str(len(content)).encode("ascii")),
    ]
    headers += [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()
    ]
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": response.status_code or 500,
        "headers": headers,
    }
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": content, "more_body": False}
    await send(start)
    await send(end)


def strict_json_bodies(
    *,
    default_limit: int = DEFAULT_LIMIT,
    limits: Mapping[tuple[str, str], int] = DEFAULT_LIMITS,
    json_prefixes: tuple[str, ...] = JSON_PREFIXES,
    max_depth: int = MAX_DEPTH,
) -> Callable[[ASGIApp], ASGIApp]:
    """A factory for Litestar's ``middleware=[...]`` list."""

    def build(app: ASGIApp) -> ASGIApp:
        return StrictJSONBodyMiddleware(
            app,
            default_limit=default_limit,
            limits=limits,
            json_prefixes=json_prefixes,
            max_depth=max_depth,
        )

    return build


# ---------------------------------------------------------------------------
# Exception handlers

_AT_PATH = re.compile(r" - at `\$(?P<path>.*)`$", re.DOTALL)
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.:@$-]{1,64}")
_SAFE_INVALID = frozenset(
    {
        "Invalid RFC3339 encoded date",
        "Invalid RFC3339 encoded datetime",
        "Invalid RFC3339 encoded time",
        "Invalid UUID",
        "Invalid base64 encoded string",
        "Invalid decimal string",
        "Invalid ISO8601 duration",
        "Invalid epoch timestamp",
        "Integer value out of range",
        "Number out of range",
    }
)
# msgspec's type and constraint messages: types and schema bounds, never the value.
_EXPECTED = re.compile(
    r"Expected `\w+(?: \| \w+){0,4}`"
    r"(?:, got `\w+`"
    r"| (?:>=|<=|>|<) \S{1,40}"
    r"| that's a multiple of \S{1,40}"
    r"| of (?:at (?:least|most) )?length (?:(?:>=|<=) )?\d+(?: to \d+)?(?:, got \d+)?"
    r"| matching regex .{1,300}"
    r"| with (?:a|no) timezone component"
    r")?",
    re.DOTALL,
)
_MISSING_PARAM = re.compile(r"^Missing required (?P<kind>\w+) parameter '(?P<name>[^']*)'")
_PARAM_LABELS = {"query": "query parameter", "path": "path parameter", "header": "header"}


def _safe_message(message: str) -> str:
    """msgspec's message, rewritten so that it can never carry a submitted value."""
    message = _AT_PATH.sub("", message)
    if match := re.fullmatch(r"Object contains unknown field `(.*)`", message, re.DOTALL):
        name = match.group(1)
        return f"unknown field '{name}'" if _SAFE_NAME.fullmatch(name) else "unknown field"
    if match := re.fullmatch(r"Object missing required field `(.*)`", message, re.DOTALL):
        name = match.group(1)
        return (
            f"missing required field '{name}'"
            if _SAFE_NAME.fullmatch(name)
            else "missing required field"
        )
    if _EXPECTED.fullmatch(message):
        return "e" + message[1:]
    if message.startswith("Invalid enum value"):
        return "not one of the allowed values"
    if message in _SAFE_INVALID:
        return message[0].lower() + message[1:]
    return "invalid value"  # "Invalid value 'x'", __post_init__ messages, anything else


def _body_path(cause: BaseException | None) -> str | None:
    """``$.items[0].fields`` from the msgspec error behind Litestar's exception.

    Litestar's own ``key`` drops every ``"data."`` in the path (``$.data.data.x``
    becomes ``x``, ``$.metadata.x`` becomes ``metax``), so the path comes from the
    cause, relative to the body (Litestar's ``data`` parameter).
    """
    if not isinstance(cause, msgspec.ValidationError):
        return None
    match = _AT_PATH.search(str(cause))
    if match is None:
        return None
    path = match.group("path")
    if path == ".data":
        return "$"
    if path.startswith((".data.", ".data[")):
        return "$" + path[len(".data") :]
    return None


def validation_exception_handler(
    _: Request[Any, Any, Any], exc: ValidationException
) -> Response[Any]:
    """422 ``validation_error`` for body schema errors, 400 ``malformed_request`` for the
    rest; with ``X-Audit-Seq`` when the refusal was audited (an authenticated caller's:
    :func:`api.auth.audit_late_refusal`)."""
    code, detail = validation_problem(exc)
    seq = getattr(exc, "audit_seq", None)
    headers = {"X-Audit-Seq": str(seq)} if isinstance(seq, int) else None
    return problem(code, detail, headers=headers)


def validation_problem(exc: ValidationException) -> tuple[str, str]:
    """The problem code and detail :func:`validation_exception_handler` answers."""
    entries = [e for e in exc.extra if isinstance(e, dict)] if isinstance(exc.extra, list) else []
    params = [e for e in entries if e.get("source") != "body"]
    if not entries:
        match = _MISSING_PARAM.match(str(exc.detail))
        if match and _SAFE_NAME.fullmatch(match.group("name")):
            label = _PARAM_LABELS.get(match.group("kind"), match.group("kind") + " parameter")
            return ("malformed_request", f"missing required {label} '{match.group('name')}'")
        return ("malformed_request", "the request is malformed")
    if params:
        details = []
        for entry in params[:10]:
            source = str(getattr(entry.get("source"), "value", entry.get("source") or "request"))
            label = _PARAM_LABELS.get(source, f"{source} parameter")
            key = str(entry.get("key", ""))
            name = f" '{key}'" if _SAFE_NAME.fullmatch(key) else ""
            details.append(f"{label}{name}: {_safe_message(str(entry.get('message', '')))}")
        return ("malformed_request", "; ".join(details))
    cause = exc.__cause__
    if isinstance(cause, msgspec.ValidationError) and str(cause) == (
        "Object missing required field `data`"
    ):
        return ("malformed_request", "a JSON request body is required")
    entry = entries[0]
    path = _body_path(cause)
    if path is None:  # no msgspec cause (another validator): Litestar's key, if plain
        key = str(entry.get("key", ""))
        path = "$" if key in ("", "data") else "$." + key if _SAFE_NAME.fullmatch(key) else "$"
        message = _safe_message(str(entry.get("message", "")))
    else:
        message = _safe_message(str(cause))
    return ("validation_error", f"{path}: {message}")


def recursion_error_handler(_: Request[Any, Any, Any], exc: RecursionError) -> Response[Any]:
    """Fail safe for a body too deep for msgspec that got past the middleware."""
    return problem("malformed_request", "the request body nests too deeply")
