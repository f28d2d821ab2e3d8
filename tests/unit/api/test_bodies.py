"""api/bodies.py: size limits, strict JSON bodies and the ValidationException split.

Every refusal is checked for status, ``code``, problem+json, and that a canary
placed in the request never comes back in the response.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import msgspec
import pytest
import structlog
from hypothesis import event, given
from hypothesis import strategies as st
from litestar import Litestar, Request, get, post
from litestar.enums import ScopeType
from litestar.exceptions import ValidationException
from litestar.params import (
    FromPath,
    FromQuery,
    JSONBody,
    PathParameter,
    QueryParameter,
    URLEncodedBody,
)
from litestar.testing import TestClient
from litestar.types import Receive, Scope, Send

from api.bodies import (
    BATCH_LIMIT,
    DEFAULT_LIMIT,
    BodyRefused,
    StrictJSONBodyMiddleware,
    check_json_body,
    recursion_error_handler,
    strict_json_bodies,
    validation_exception_handler,
)
from api.errors import EXCEPTION_HANDLERS
from api.middleware import RequestIdMiddleware

CANARY = "CANARY-7f3a9c"
JSON = {"content-type": "application/json"}
MIB = 1 << 20


# --- the test app -------------------------------------------------------------------


class Thing(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    count: int
    tags: list[str]
    nested: dict[str, Any]


class Inner(msgspec.Struct, forbid_unknown_fields=True):
    metadata: dict[str, int] = {}


class Item(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["address", "income"]
    fields: list[str]


class ConsentLike(msgspec.Struct, forbid_unknown_fields=True):
    purpose: Annotated[str, msgspec.Meta(max_length=16)]
    items: list[Item]
    data: Inner | None = None


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


@post("/v1/things", status_code=200)
async def create_thing(request: Request[Any, Any, Any], data: JSONBody[Thing]) -> dict[str, Any]:
    return {"sha256": digest(await request.body()), "count": data.count}


@get("/v1/things", sync_to_thread=False)
def list_things(limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100) -> dict[str, int]:
    return {"limit": limit}


@get("/v1/things/{thing_id:int}", sync_to_thread=False)
def get_thing(thing_id: Annotated[int, PathParameter(ge=1)]) -> dict[str, int]:
    return {"thing_id": thing_id}


@get("/v1/search", sync_to_thread=False)
def search(q: FromQuery[str]) -> dict[str, int]:
    return {"q": len(q)}


@post("/v1/consents", status_code=200, sync_to_thread=False)
def create_consent(data: JSONBody[ConsentLike]) -> dict[str, int]:
    return {"items": len(data.items)}


@post("/v1/echo", status_code=200)
async def echo(request: Request[Any, Any, Any], data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
    return {"sha256": digest(await request.body()), "keys": len(data)}


@post("/v1/records:batch", status_code=200, request_max_body_size=BATCH_LIMIT)
async def batch(request: Request[Any, Any, Any], data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
    return {"sha256": digest(await request.body())}


@post("/v1/me/consents/{consent_id:str}/approve", status_code=200, sync_to_thread=False)
def approve(consent_id: FromPath[str]) -> dict[str, bool]:
    return {"approved": True}


@post("/oauth/token", status_code=200, sync_to_thread=False)
def token(
    data: URLEncodedBody[dict[str, str]],
) -> dict[str, int]:
    return {"fields": len(data)}


@post("/raw", status_code=200)
async def raw(request: Request[Any, Any, Any]) -> dict[str, str]:
    return {"sha256": digest(await request.body())}


@post("/typed-outside-v1", status_code=200, sync_to_thread=False)
def typed_outside(data: JSONBody[dict[str, Any]]) -> dict[str, int]:
    return {"keys": len(data)}


HANDLERS = [
    create_thing,
    list_things,
    get_thing,
    search,
    create_consent,
    echo,
    batch,
    approve,
    token,
    raw,
    typed_outside,
]


def make_app() -> Litestar:
    return Litestar(
        route_handlers=HANDLERS,
        middleware=[RequestIdMiddleware, strict_json_bodies()],
        exception_handlers={
            **EXCEPTION_HANDLERS,
            ValidationException: validation_exception_handler,
            RecursionError: recursion_error_handler,
        },
        logging_config=None,
        debug=False,
    )


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient[Litestar]]:
    with TestClient(make_app()) as test_client:
        yield test_client


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert set(body) == {"type", "title", "status", "detail", "code"}
    assert CANARY not in response.text
    assert CANARY.lower() not in response.text.lower()
    return body


def good_thing(**extra: Any) -> dict[str, Any]:
    return {"name": CANARY, "count": 1, "tags": [CANARY], "nested": {"k": CANARY}, **extra}


def nested(depth: int) -> bytes:
    """An object nested ``depth`` deep in total, with the canary at the bottom."""
    inner = b"[" * (depth - 1) + b'"' + CANARY.encode() + b'"' + b"]" * (depth - 1)
    return b'{"a":' + inner + b"}"


# --- valid bodies -------------------------------------------------------------------


def test_a_valid_body_reaches_the_route_byte_for_byte(client: TestClient[Litestar]) -> None:
    raw_body = json.dumps(good_thing(), indent=2).encode()
    response = client.post("/v1/things", content=raw_body, headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json() == {"sha256": digest(raw_body), "count": 1}
    assert "x-request-id" in response.headers


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        'application/json; charset="utf-8"',
    ],
)
def test_json_content_types_accepted(client: TestClient[Litestar], content_type: str) -> None:
    response = client.post(
        "/v1/things", content=json.dumps(good_thing()), headers={"content-type": content_type}
    )
    assert response.status_code == 200, response.text


def test_depth_32_accepted_and_33_refused(client: TestClient[Litestar]) -> None:
    ok = client.post("/v1/echo", content=nested(32), headers=JSON)
    assert ok.status_code == 200, ok.text
    assert ok.json()["sha256"] == digest(nested(32))
    body = assert_problem(
        client.post("/v1/echo", content=nested(33), headers=JSON), 400, "malformed_request"
    )
    assert "32" in body["detail"]


def test_edge_integers_accepted(client: TestClient[Litestar]) -> None:
    top = 2**63 - 1
    for n in (top, -top):
        response = client.post("/v1/things", json=good_thing(count=n))
        assert response.status_code == 200, response.text
        assert response.json()["count"] == n


def test_brackets_and_escapes_inside_strings_do_not_count_as_nesting(
    client: TestClient[Litestar],
) -> None:
    value = '\\"[[[' * 40 + "\\" + "{" * 40 + '"' + "]" * 50
    response = client.post("/v1/echo", json={"a": value, "b": [value, {"c": value}]})
    assert response.status_code == 200, response.text


def test_surrogate_pairs_are_fine(client: TestClient[Litestar]) -> None:
    raw_body = b'{"a":"\\ud83d\\ude00","\\ud83d\\ude00":"\\\\ud800"}'
    response = client.post("/v1/echo", content=raw_body, headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json()["sha256"] == digest(raw_body)


# --- malformed JSON: 400 ------------------------------------------------------------

MALFORMED = {
    "depth_10000": b'{"a":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    "depth_10000_unclosed": b"[" * 10_000,
    "depth_10000_objects": b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    "duplicate_top": b'{"name":"x","name":"' + CANARY.encode() + b'"}',
    "duplicate_nested": b'{"nested":{"a":{"k":1,"k":"' + CANARY.encode() + b'"}}}',
    "duplicate_escaped": b'{"a":{"k":1,"\\u006b":"' + CANARY.encode() + b'"}}',
    "duplicate_in_array": b'{"a":[{},{"k":1,"k":2}],"c":"' + CANARY.encode() + b'"}',
    "lone_high_surrogate": b'{"a":"\\ud800' + CANARY.encode() + b'"}',
    "lone_low_surrogate": b'{"a":"' + CANARY.encode() + b'\\udc00"}',
    "lone_surrogate_key": b'{"\\ud800":"' + CANARY.encode() + b'"}',
    "invalid_utf8": b'{"a":"' + CANARY.encode() + b'\xff\xfe"}',
    "encoded_surrogate": b'{"a":"\xed\xa0\x80' + CANARY.encode() + b'"}',
    "overlong_utf8": b'{"a":"\xc0\xaf' + CANARY.encode() + b'"}',
    "nan": b'{"a":NaN,"c":"' + CANARY.encode() + b'"}',
    "infinity": b'{"a":Infinity}',
    "minus_infinity": b'{"a":-Infinity}',
    "float_overflow": b'{"a":1e999}',
    "int_2_64": b'{"count":18446744073709551616}',
    "int_minus_2_63": b'{"count":-9223372036854775808}',
    "int_huge": b'{"count":' + b"9" * 5000 + b"}",
    "trailing_garbage": b'{"a":1} ' + CANARY.encode(),
    "two_documents": b'{"a":1}{"b":2}',
    "trailing_comma": b'{"a":1,}',
    "single_quotes": b"{'a':'" + CANARY.encode() + b"'}",
    "bare_word": CANARY.encode(),
    "whitespace_only": b"   ",
    "top_level_array": b'["' + CANARY.encode() + b'"]',
    "top_level_string": b'"' + CANARY.encode() + b'"',
    "top_level_null": b"null",
    "top_level_number": b"42",
    "bom": b'\xef\xbb\xbf{"a":1}',
    "unbalanced": b'{"a":[1}',
    "control_character": b'{"a":"x\n' + CANARY.encode() + b'"}',
    "bad_escape": b'{"a":"\\q' + CANARY.encode() + b'"}',
    "unterminated": b'{"a":"' + CANARY.encode() + b"\\" * 3,
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_bodies_are_400(client: TestClient[Litestar], body: bytes) -> None:
    for path in ("/v1/things", "/v1/echo", "/v1/records:batch"):
        response = client.post(path, content=body, headers=JSON)
        detail = assert_problem(response, 400, "malformed_request")["detail"]
        assert detail.startswith("the request body")


def test_malformed_details_say_why(client: TestClient[Litestar]) -> None:
    def detail(key: str) -> str:
        response = client.post("/v1/echo", content=MALFORMED[key], headers=JSON)
        return str(assert_problem(response, 400, "malformed_request")["detail"])

    assert "deeper than 32" in detail("depth_10000")
    assert "deeper than 32" in detail("depth_10000_unclosed")
    assert "duplicate" in detail("duplicate_nested")
    assert "surrogate" in detail("lone_high_surrogate")
    assert "UTF-8" in detail("invalid_utf8")
    assert "NaN or Infinity" in detail("nan")
    assert "too large" in detail("float_overflow")
    assert "2**63" in detail("int_2_64")
    assert "extra data" in detail("trailing_garbage")
    assert "JSON object" in detail("top_level_array")


def test_empty_body_with_json_type_on_a_body_route_is_400(client: TestClient[Litestar]) -> None:
    response = client.post("/v1/things", content=b"", headers=JSON)
    body = assert_problem(response, 400, "malformed_request")
    assert body["detail"] == "a JSON request body is required"
    assert_problem(client.post("/v1/things"), 400, "malformed_request")


def test_empty_body_passes_for_bodyless_actions(client: TestClient[Litestar]) -> None:
    # Clients often send Content-Type: application/json on bodyless POSTs.
    for headers in (JSON, {"content-type": "text/plain"}, {}):
        response = client.post("/v1/me/consents/c_1/approve", content=b"", headers=headers)
        assert response.status_code == 200, response.text


def test_recursion_error_is_400_where_the_middleware_does_not_look(
    client: TestClient[Litestar],
) -> None:
    # Outside /v1/ only the size is checked; msgspec's RecursionError still gives 400.
    deep = b'{"a":' + b"[" * 5_000 + b"]" * 5_000 + b"}"
    response = client.post("/typed-outside-v1", content=deep, headers=JSON)
    assert_problem(response, 400, "malformed_request")


# --- media type: 415 ----------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "text/plain"},
        {"content-type": "application/x-www-form-urlencoded"},
        {"content-type": "multipart/form-data; boundary=x"},
        {"content-type": "application/json; charset=latin-1"},
        {"content-type": "application/json-patch+json"},
        {"content-type": "application/jsonx"},
        {"content-type": "application/json; foo=bar"},
        {},
    ],
    ids=["text", "form", "multipart", "latin1", "json-patch", "jsonx", "param", "missing"],
)
def test_wrong_or_missing_content_type_is_415(
    client: TestClient[Litestar], headers: dict[str, str]
) -> None:
    content = json.dumps(good_thing()).encode()
    response = client.post("/v1/things", content=content, headers=headers)
    assert_problem(response, 415, "unsupported_media_type")


def test_form_post_to_v1_is_415(client: TestClient[Litestar]) -> None:
    response = client.post("/v1/things", data={"name": CANARY})
    assert_problem(response, 415, "unsupported_media_type")


def test_paths_outside_v1_are_left_alone(client: TestClient[Litestar]) -> None:
    form = client.post("/oauth/token", data={"grant_type": "client_credentials", "x": CANARY})
    assert form.status_code == 200, form.text
    assert form.json() == {"fields": 2}
    odd = b'{"a":1,"a":NaN} \xff' + CANARY.encode()
    response = client.post("/raw", content=odd, headers={"content-type": "text/plain"})
    assert response.status_code == 200, response.text
    assert response.json()["sha256"] == digest(odd)


def test_other_methods_pass_untouched(client: TestClient[Litestar]) -> None:
    assert client.get("/v1/things").json() == {"limit": 100}


# --- size: 413 ----------------------------------------------------------------------


def big_json(size: int) -> bytes:
    head, tail = b'{"pad":"', b'","c":"' + CANARY.encode() + b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_exactly_1_mib_is_accepted(client: TestClient[Litestar]) -> None:
    body = big_json(DEFAULT_LIMIT)
    response = client.post("/v1/echo", content=body, headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json()["sha256"] == digest(body)


def test_content_length_over_1_mib_is_413(client: TestClient[Litestar]) -> None:
    response = client.post("/v1/echo", content=big_json(DEFAULT_LIMIT + 1), headers=JSON)
    body = assert_problem(response, 413, "payload_too_large")
    assert str(DEFAULT_LIMIT) in body["detail"]


def test_streamed_body_over_1_mib_without_content_length_is_413(
    client: TestClient[Litestar],
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"pad":"'
        for _ in range(20):
            yield b"x" * 65_536
        yield b'","c":"' + CANARY.encode() + b'"}'

    response = client.post("/v1/echo", content=chunks(), headers=JSON)
    assert_problem(response, 413, "payload_too_large")


def test_streamed_body_under_the_limit_passes(client: TestClient[Litestar]) -> None:
    parts = [b'{"a":', b'"' + b"y" * 100_000 + b'"', b"}"]
    response = client.post("/v1/echo", content=iter(parts), headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json()["sha256"] == digest(b"".join(parts))


def test_size_limit_applies_outside_v1_too(client: TestClient[Litestar]) -> None:
    response = client.post("/oauth/token", data={"grant_type": "x" * (DEFAULT_LIMIT + 10)})
    assert_problem(response, 413, "payload_too_large")


def test_batch_accepts_2_mib_and_12_mib_and_refuses_17_mib(client: TestClient[Litestar]) -> None:
    for size in (2 * MIB, 12 * MIB):  # 12 MiB: past Litestar's 10 MB default
        body = big_json(size)
        response = client.post("/v1/records:batch", content=body, headers=JSON)
        assert response.status_code == 200, response.text
        assert response.json()["sha256"] == digest(body)
    response = client.post("/v1/records:batch", content=big_json(17 * MIB), headers=JSON)
    assert_problem(response, 413, "payload_too_large")
    # ...and the larger limit is the batch route's only.
    response = client.post("/v1/echo", content=big_json(2 * MIB), headers=JSON)
    assert_problem(response, 413, "payload_too_large")


# --- schema: 422; parameters: 400 ---------------------------------------------------


def test_unknown_field_is_422_naming_it(client: TestClient[Litestar]) -> None:
    response = client.post("/v1/things", json=good_thing(foo=CANARY))
    body = assert_problem(response, 422, "validation_error")
    assert body["detail"] == "$: unknown field 'foo'"


def test_nested_unknown_field_is_422_with_its_path(client: TestClient[Litestar]) -> None:
    item = {"type": "address", "fields": [], "zzz": CANARY}
    response = client.post("/v1/consents", json={"purpose": "p", "items": [item]})
    body = assert_problem(response, 422, "validation_error")
    assert body["detail"] == "$.items[0]: unknown field 'zzz'"


def test_unknown_field_with_an_odd_name_is_not_quoted(client: TestClient[Litestar]) -> None:
    response = client.post("/v1/things", json=good_thing(**{CANARY + " <x>": 1}))
    body = assert_problem(response, 422, "validation_error")
    assert body["detail"] == "$: unknown field"


def test_wrong_type_is_422_naming_the_field_not_the_value(client: TestClient[Litestar]) -> None:
    response = client.post("/v1/things", json=good_thing(count=CANARY))
    body = assert_problem(response, 422, "validation_error")
    assert body["detail"] == "$.count: expected `int`, got `str`"


def test_missing_field_is_422(client: TestClient[Litestar]) -> None:
    response = client.post("/v1/things", json={"name": CANARY})
    body = assert_problem(response, 422, "validation_error")
    assert body["detail"] == "$: missing required field 'count'"


def test_nested_wrong_type_is_422_with_the_full_path(client: TestClient[Litestar]) -> None:
    items = [{"type": "address", "fields": []}, {"type": "income", "fields": CANARY}]
    response = client.post("/v1/consents", json={"purpose": "p", "items": items})
    body = assert_problem(response, 422, "validation_error")
    assert body["detail"] == "$.items[1].fields: expected `array`, got `str`"


def test_enum_value_is_not_echoed(client: TestClient[Litestar]) -> None:
    items = [{"type": CANARY, "fields": []}]
    response = client.post("/v1/consents", json={"purpose": "p", "items": items})
    body = assert_problem(response, 422, "validation_error")
    assert body["detail"] == "$.items[0].type: not one of the allowed values"


def test_constraint_is_named(client: TestClient[Litestar]) -> None:
    response = client.post("/v1/consents", json={"purpose": CANARY * 3, "items": []})
    body = assert_problem(response, 422, "validation_error")
    assert body["detail"] == "$.purpose: expected `str` of length <= 16"


@given(st.integers(min_value=-(2**53), max_value=2**53))
def test_a_number_in_a_string_or_a_float_is_not_an_integer(
    client: TestClient[Litestar], number: int
) -> None:
    """Litestar's lax conversion would take ``"7"`` and ``7.0`` for ``count: int``; a
    JSON body's types are the client's (api.bodies.check_body_types)."""
    for wrong, kind in ((str(number), "str"), (float(number), "float")):
        response = client.post("/v1/things", json=good_thing(count=wrong))
        body = assert_problem(response, 422, "validation_error")
        assert body["detail"] == f"$.count: expected `int`, got `{kind}`"
    assert client.post("/v1/things", json=good_thing(count=number)).status_code == 200


def test_a_dict_value_converted_only_by_lax_rules_is_refused_with_its_path(
    client: TestClient[Litestar],
) -> None:
    body_json = {"purpose": "p", "items": [], "data": {"metadata": {"k": "12"}}}
    response = client.post("/v1/consents", json=body_json)
    body = assert_problem(response, 422, "validation_error")
    assert body["detail"] == "$.data.metadata[...]: expected `int`, got `str`"


def test_path_with_data_segments_is_right(client: TestClient[Litestar]) -> None:
    # Litestar's own key drops every "data." ("$.data.metadata[...]" -> "metadata[...]").
    body_json = {"purpose": "p", "items": [], "data": {"metadata": {"k": CANARY}}}
    response = client.post("/v1/consents", json=body_json)
    body = assert_problem(response, 422, "validation_error")
    assert body["detail"] == "$.data.metadata[...]: expected `int`, got `str`"
    response = client.post("/v1/consents", json={"purpose": "p", "items": [], "data": {"x": 1}})
    body = assert_problem(response, 422, "validation_error")
    assert body["detail"] == "$.data: unknown field 'x'"


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("/v1/things?limit=0", "query parameter 'limit': expected `int` >= 1"),
        ("/v1/things?limit=1001", "query parameter 'limit': expected `int` <= 1000"),
        (f"/v1/things?limit={CANARY}", "query parameter 'limit': expected `int`, got `str`"),
        ("/v1/things?limit=" + "9" * 30, "query parameter 'limit': expected `int` <= 1000"),
        ("/v1/things/0", "path parameter 'thing_id': expected `int` >= 1"),
        (f"/v1/search?x={CANARY}", "missing required query parameter 'q'"),
    ],
)
def test_bad_parameters_are_400_naming_them(
    client: TestClient[Litestar], url: str, detail: str
) -> None:
    body = assert_problem(client.get(url), 400, "malformed_request")
    assert body["detail"] == detail


def test_bad_query_and_bad_body_together_is_400(client: TestClient[Litestar]) -> None:
    @post("/v1/both", status_code=200, sync_to_thread=False)
    def both(
        data: JSONBody[Thing], limit: Annotated[int, QueryParameter(ge=1)] = 1
    ) -> dict[str, int]:
        return {"limit": limit}

    # Litestar's own validation names the parameter first...
    app = Litestar([both], exception_handlers={ValidationException: validation_exception_handler})
    with TestClient(app) as test_client:
        response = test_client.post("/v1/both?limit=0", json=good_thing(foo=CANARY))
    body = assert_problem(response, 400, "malformed_request")
    assert body["detail"] == "query parameter 'limit': expected `int` >= 1"
    # ...and so it does behind the middleware.
    app = Litestar(
        [both],
        middleware=[strict_json_bodies()],
        exception_handlers={ValidationException: validation_exception_handler},
    )
    with TestClient(app) as test_client:
        response = test_client.post("/v1/both?limit=0", json=good_thing(foo=CANARY))
        body = assert_problem(response, 400, "malformed_request")
        assert body["detail"] == "query parameter 'limit': expected `int` >= 1"
        # A body whose JSON types are wrong only by a conversion is the middleware's.
        response = test_client.post("/v1/both?limit=0", json=good_thing(count="1"))
    body = assert_problem(response, 422, "validation_error")
    assert body["detail"] == "$.count: expected `int`, got `str`"


def test_typed_bodies_stay_in_the_openapi_document(client: TestClient[Litestar]) -> None:
    paths = client.get("/schema/openapi.json").json()["paths"]
    for path in ("/v1/things", "/v1/consents", "/v1/records:batch"):
        assert "requestBody" in paths[path]["post"], path


def test_refusals_carry_the_request_id_and_nothing_from_the_body_is_logged(
    client: TestClient[Litestar],
) -> None:
    with structlog.testing.capture_logs() as logs:
        for body in MALFORMED.values():
            response = client.post("/v1/echo", content=body, headers=JSON)
            assert response.headers["x-request-id"].startswith("req_")
        client.post("/v1/echo", content=big_json(DEFAULT_LIMIT + 1), headers=JSON)
        client.post(
            "/v1/echo", content=json.dumps({"a": CANARY}), headers={"content-type": "text/plain"}
        )
        client.post("/v1/things", json=good_thing(foo=CANARY, count=CANARY))
        client.get(f"/v1/things?limit={CANARY}")
        deep = b'{"a":"' + CANARY.encode() + b'","b":' + b"[" * 5_000 + b"]" * 5_000 + b"}"
        client.post("/typed-outside-v1", content=deep, headers=JSON)
    statuses = {entry.get("status") for entry in logs if entry["event"] == "http.request"}
    assert statuses >= {400, 413, 415, 422}
    assert CANARY not in repr(logs)


# --- the handler on its own ---------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Invalid enum value 'CANARY'", "not one of the allowed values"),
        ("Invalid value 'CANARY'", "invalid value"),
        ("Invalid value 12345", "invalid value"),
        ("Invalid RFC3339 encoded datetime", "invalid RFC3339 encoded datetime"),
        ("Expected `str` matching regex '^[a-z]+$'", "expected `str` matching regex '^[a-z]+$'"),
        ("Expected `float` >= 0.5", "expected `float` >= 0.5"),
        ("Expected `array` of length <= 3, got 4", "expected `array` of length <= 3, got 4"),
        ("CANARY is not a valid thing", "invalid value"),  # a __post_init__ message
        ("Expected `int` but got CANARY", "invalid value"),
        ("Object contains unknown field `foo`", "unknown field 'foo'"),
        ("'data'", "invalid value"),
    ],
)
def test_messages_are_rewritten_without_values(message: str, expected: str) -> None:
    cause = msgspec.ValidationError(f"{message} - at `$.data.field`")
    exc = ValidationException(extra=[{"message": message, "key": "field", "source": "body"}])
    exc.__cause__ = cause
    response = validation_exception_handler(None, exc)  # type: ignore[arg-type]
    assert response.status_code == 422
    assert response.content["detail"] == f"$.field: {expected}"


@pytest.mark.parametrize("max_depth", [0, 101])
def test_max_depth_is_bounded(max_depth: int) -> None:
    with pytest.raises(ValueError, match="max_depth"):
        StrictJSONBodyMiddleware(Recorder(), max_depth=max_depth)


def test_validation_exception_without_extra_is_400() -> None:
    response = validation_exception_handler(None, ValidationException(CANARY))  # type: ignore[arg-type]
    assert response.status_code == 400
    assert response.content["code"] == "malformed_request"
    assert CANARY not in str(response.content)


def test_recursion_error_handler() -> None:
    response = recursion_error_handler(None, RecursionError(CANARY))  # type: ignore[arg-type]
    assert response.status_code == 400
    assert response.content["code"] == "malformed_request"
    assert CANARY not in str(response.content)


# --- the middleware at the ASGI level ---------------------------------------------------


class Recorder:
    """An ASGI app that records what it received."""

    def __init__(self) -> None:
        self.calls = 0
        self.messages: list[Any] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        if scope["type"] == ScopeType.HTTP:
            while True:
                message = await receive()
                self.messages.append(message)
                if message["type"] != "http.request" or not message.get("more_body"):
                    break
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def http_scope(path: str = "/v1/echo", method: str = "POST", headers: Any = ()) -> Scope:
    return {  # type: ignore[return-value]
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


class Wire:
    """A client: body chunks to hand out (counting pulls) and the response sent back."""

    def __init__(self, chunks: Iterator[bytes] | list[bytes], *, disconnect: bool = False) -> None:
        self.chunks = iter(chunks)
        self.pulls = 0
        self.disconnect = disconnect
        self.sent: list[Any] = []

    async def receive(self) -> Any:
        self.pulls += 1
        try:
            chunk = next(self.chunks)
        except StopIteration:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(self, message: Any) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        return next((m["status"] for m in self.sent if m["type"] == "http.response.start"), None)

    def problem(self) -> dict[str, Any]:
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        assert (b"content-type", b"application/problem+json") in start["headers"]
        body = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        assert CANARY.encode() not in body
        decoded: dict[str, Any] = json.loads(body)
        return decoded


def last(chunks: list[bytes]) -> Iterator[Any]:
    for i, chunk in enumerate(chunks):
        yield {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}


class Scripted(Wire):
    def __init__(self, messages: Iterator[Any]) -> None:
        super().__init__([])
        self.script = messages

    async def receive(self) -> Any:
        self.pulls += 1
        return next(self.script, {"type": "http.disconnect"})


async def test_stops_reading_at_the_limit_plus_one() -> None:
    app = Recorder()
    middleware = StrictJSONBodyMiddleware(app, default_limit=1000)

    def endless() -> Iterator[bytes]:
        while True:
            yield CANARY.encode() * 10  # 130 bytes a chunk

    wire = Wire(endless())
    await middleware(
        http_scope(headers=[("content-type", "application/json")]), wire.receive, wire.send
    )
    assert wire.status == 413
    assert wire.problem()["code"] == "payload_too_large"
    assert wire.pulls == 8  # 7 chunks = 910 bytes, the 8th passes 1000
    assert app.calls == 0


async def test_lying_content_length_is_caught_by_counting() -> None:
    app = Recorder()
    middleware = StrictJSONBodyMiddleware(app, default_limit=1000)
    wire = Scripted(last([b"x" * 600, b"x" * 600]))
    scope = http_scope(headers=[("content-type", "application/json"), ("content-length", "10")])
    await middleware(scope, wire.receive, wire.send)
    assert wire.status == 413
    assert app.calls == 0


async def test_content_length_over_the_limit_is_refused_without_reading() -> None:
    app = Recorder()
    middleware = StrictJSONBodyMiddleware(app, default_limit=1000)

    async def no_receive() -> Any:
        raise AssertionError("must not read")

    wire = Wire([])
    scope = http_scope(headers=[("content-type", "application/json"), ("content-length", "1001")])
    await middleware(scope, no_receive, wire.send)
    assert wire.status == 413
    assert wire.problem()["code"] == "payload_too_large"
    # A wrong media type is refused before reading too.
    wire = Wire([])
    scope = http_scope(headers=[("content-type", "text/plain"), ("content-length", "10")])
    await middleware(scope, no_receive, wire.send)
    assert wire.status == 415
    assert wire.problem()["code"] == "unsupported_media_type"
    assert app.calls == 0


@pytest.mark.parametrize("value", ["abc", "-1", "", "1e3", " 5"])
async def test_invalid_content_length_is_400(value: str) -> None:
    app = Recorder()
    wire = Scripted(last([b"{}"]))
    scope = http_scope(headers=[("content-type", "application/json"), ("content-length", value)])
    await StrictJSONBodyMiddleware(app)(scope, wire.receive, wire.send)
    assert wire.status == 400
    assert app.calls == 0


async def test_two_content_types_are_415() -> None:
    app = Recorder()
    wire = Scripted(last([b"{}"]))
    headers = [("content-type", "application/json"), ("content-type", "application/json")]
    await StrictJSONBodyMiddleware(app)(http_scope(headers=headers), wire.receive, wire.send)
    assert wire.status == 415


async def test_the_body_is_replayed_once_then_the_real_receive() -> None:
    app = Recorder()
    middleware = StrictJSONBodyMiddleware(app)
    chunks = [b'{"a":', b" [1, 2", b"]}"]
    wire = Scripted(last(chunks))
    await middleware(
        http_scope(headers=[("content-type", "application/json")]), wire.receive, wire.send
    )
    assert wire.status == 204
    assert app.messages == [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

    async def read_twice(scope: Scope, receive: Receive, send: Send) -> None:
        app.messages = [await receive(), await receive()]
        await Recorder()(scope, receive, send)

    wire = Scripted(last([b"{}"]))
    await StrictJSONBodyMiddleware(read_twice)(
        http_scope(headers=[("content-type", "application/json")]), wire.receive, wire.send
    )
    assert app.messages[1] == {"type": "http.disconnect"}


async def test_client_gone_mid_body_calls_nothing() -> None:
    app = Recorder()
    wire = Scripted(iter([{"type": "http.request", "body": b"{", "more_body": True}]))
    await StrictJSONBodyMiddleware(app)(
        http_scope(headers=[("content-type", "application/json")]), wire.receive, wire.send
    )
    assert app.calls == 0
    assert wire.sent == []


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
async def test_bodyless_methods_are_not_read(method: str) -> None:
    app = Recorder()
    wire = Scripted(last([b"not json"]))
    await StrictJSONBodyMiddleware(app)(http_scope(method=method), wire.receive, wire.send)
    assert app.calls == 1
    assert app.messages == [{"type": "http.request", "body": b"not json", "more_body": False}]


async def test_websockets_and_lifespan_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def never() -> Any:
        raise AssertionError("must not read")

    async def discard(message: Any) -> None:
        raise AssertionError("must not send")

    middleware = StrictJSONBodyMiddleware(app)
    await middleware({"type": "websocket", "path": "/v1/ws", "headers": []}, never, discard)  # type: ignore[arg-type]
    await middleware({"type": "lifespan"}, never, discard)  # type: ignore[arg-type]
    assert seen == ["websocket", "lifespan"]


@pytest.mark.parametrize("path", ["/v1/records:batch", "/v1/records:batch/", "//v1//records:batch"])
async def test_route_limits_match_normalised_paths(path: str) -> None:
    app = Recorder()
    middleware = StrictJSONBodyMiddleware(
        app, default_limit=10, limits={("post", "/v1/records:batch"): 100}
    )
    body = b'{"a":"' + b"x" * 50 + b'"}'
    wire = Scripted(last([body]))
    await middleware(
        http_scope(path=path, headers=[("content-type", "application/json")]),
        wire.receive,
        wire.send,
    )
    assert wire.status == 204


async def test_delete_with_a_body_is_checked_and_put_patch_too() -> None:
    for method in ("DELETE", "PUT", "PATCH"):
        app = Recorder()
        wire = Scripted(last([b'{"a":1,"a":2}']))
        await StrictJSONBodyMiddleware(app)(
            http_scope(method=method, headers=[("content-type", "application/json")]),
            wire.receive,
            wire.send,
        )
        assert wire.status == 400, method
        assert app.calls == 0


# --- properties ---------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63 - 1), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from('[]{}"\\'), max_size=12)
)
KEYS = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from('[]{}"\\'), max_size=6)


def depth_of(value: Any) -> int:
    """Nesting depth, iteratively (0 for a scalar)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            level += 1
            deepest = max(deepest, level)
            stack.extend(
                (child, level) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=24,
)
DOCUMENTS = st.dictionaries(KEYS, VALUES, max_size=5).filter(lambda doc: depth_of(doc) <= 10)


@st.composite
def encoded(draw: st.DrawFn, documents: st.SearchStrategy[Any] = DOCUMENTS) -> tuple[Any, bytes]:
    doc = draw(documents)
    text = json.dumps(
        doc,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, 0, 2])),
        separators=draw(st.sampled_from([None, (",", ":"), (" , ", " : ")])),
    )
    return doc, text.encode("utf-8")


@given(encoded())
def test_valid_documents_pass_the_check(case: tuple[Any, bytes]) -> None:
    check_json_body(case[1])


@given(case=encoded())
def test_valid_documents_reach_the_route_byte_identical(
    client: TestClient[Litestar], case: tuple[Any, bytes]
) -> None:
    doc, body = case
    response = client.post("/v1/echo", content=body, headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json() == {"sha256": digest(body), "keys": len(doc)}


def escape_all(key: str) -> str:
    """The key as JSON with every character \\u-escaped: the same key, other bytes."""
    units = key.encode("utf-16-be")
    return (
        '"' + "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2)) + '"'
    )


def dumps_with_duplicate(value: Any, target: int, seen: list[int]) -> str:
    """JSON for ``value`` where object number ``target`` (pre-order) repeats its first key."""
    if isinstance(value, dict):
        index = seen[0]
        seen[0] += 1
        members = [
            f"{json.dumps(k)}:{dumps_with_duplicate(v, target, seen)}" for k, v in value.items()
        ]
        if index == target:
            members.append(f"{escape_all(next(iter(value)))}:null")
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps_with_duplicate(v, target, seen) for v in value) + "]"
    return json.dumps(value)


def non_empty_objects(value: Any) -> list[int]:
    """Pre-order numbers of the non-empty objects in ``value``."""
    found: list[int] = []
    counter = 0

    def walk(item: Any) -> None:
        nonlocal counter
        if isinstance(item, dict):
            if item:
                found.append(counter)
            counter += 1
            for child in item.values():
                walk(child)
        elif isinstance(item, list):
            for child in item:
                walk(child)

    walk(value)
    return found


@given(st.data())
def test_a_duplicated_key_is_always_refused(data: st.DataObject) -> None:
    doc = data.draw(DOCUMENTS.filter(bool))
    target = data.draw(st.sampled_from(non_empty_objects(doc)))
    body = dumps_with_duplicate(doc, target, [0]).encode()
    with pytest.raises(BodyRefused, match="duplicate") as refused:
        check_json_body(body)
    assert refused.value.code == "malformed_request"


@given(data=st.data())
def test_a_duplicated_key_is_refused_by_the_app(
    client: TestClient[Litestar], data: st.DataObject
) -> None:
    doc = data.draw(DOCUMENTS.filter(bool))
    target = data.draw(st.sampled_from(non_empty_objects(doc)))
    body = dumps_with_duplicate(doc, target, [0]).encode()
    response = client.post("/v1/echo", content=body, headers=JSON)
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_request"


@st.composite
def wrapped(draw: st.DrawFn) -> Any:
    """A small document wrapped in up to 40 levels of arrays and objects."""
    value = draw(VALUES.filter(lambda v: depth_of(v) <= 4))
    levels = draw(st.integers(0, 40))
    for as_object in draw(st.lists(st.booleans(), min_size=levels, max_size=levels)):
        value = {draw(KEYS): value} if as_object else [value]
    return value


@given(encoded(wrapped()))
def test_depth_check_agrees_with_the_parsed_depth(case: tuple[Any, bytes]) -> None:
    doc, body = case
    event("deeper than 32" if depth_of(doc) > 32 else "at most 32")
    if depth_of(doc) <= 32:
        check_json_body(body, require_object=False)
    else:
        with pytest.raises(BodyRefused, match="deeper than 32"):
            check_json_body(body, require_object=False)
