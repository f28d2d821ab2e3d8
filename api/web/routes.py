"""The citizen pages under ``/my``: server-rendered HTML, forms, and two JSON helpers.

Pages (GET): ``/my`` (overview, or a welcome page when signed out), ``/my/records``,
``/my/records/{type}`` (an audited read, as ``GET /v1/me/records/{type}``),
``/my/records/{type}/edit``, ``/my/consents``, ``/my/consents/{id}``,
``/my/consents/{id}/receipt`` (the compact JWS as a file), ``/my/access-log``,
``/my/suggestions``, ``/my/erase``.

Forms (POST, each with the session's CSRF token): record save, consent
approve/reject/revoke, suggestion accept, erase, sign out. Approving, accepting
and erasing need a sign-in within the last 10 minutes; an older one is sent
through a fresh sign-in (``prompt=login``) and back to the page.

JSON for the page's own script (GET only, session cookie): the inclusion proof
of one of the citizen's entries with its leaf bytes, and a consistency proof
between two tree sizes. The browser checks both against the public signed
checkpoint; the server never says "verified" itself.

Sign-in: ``/my/login`` and ``/my/callback`` (OpenID Connect code flow + PKCE,
see :mod:`api.web.oidc`).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

import structlog
from jinja2 import Environment
from litestar import Request, Response, Router, get, post
from litestar.datastructures import Cookie
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware
from litestar.params import FromPath

from api.auth import request_id, runtime_of
from api.errors import EXCEPTION_HANDLERS, problem
from api.idp import FRESH_AUTH_SECONDS
from api.runtime import Runtime
from api.settings import Settings
from api.web import oidc
from api.web.config import WebConfig, load_web_config
from api.web.i18n import DEFAULT_LANG, Lang, parse_lang, translate
from api.web.render import (
    STATIC_DIR,
    SecurityHeaders,
    content_security_policy,
    helpers,
    html_response,
    is_self_asserted,
    make_environment,
    render,
)
from api.web.session import (
    CSRF_FIELD,
    LANG_COOKIE,
    LOGIN_COOKIE,
    LOGIN_SECONDS,
    SESSION_COOKIE,
    SESSION_SECONDS,
    LoginState,
    Sealer,
    Session,
    load_or_create_secret,
)
from audit.models import StoredEntry
from consent.models import DAY_MS, Consent, Status
from policies import Catalogue
from policies.errors import RecordInvalid
from policies.models import FieldType
from vault import crypto
from vault.errors import KeyProviderUnavailable, OncevaultError, StorageError
from vault.service import Actor

__all__ = ["MOUNT_PATH", "web_router"]

log = structlog.get_logger(__name__)

MOUNT_PATH: Final = "/my"
MAX_FORM_BODY: Final = 64 * 1024
LOG_PAGE: Final = 50
MAX_SEQ: Final = 2**53 - 1
READS_WINDOW_MS: Final = 30 * DAY_MS

_ID: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_TYPE: Final = re.compile(r"[a-z0-9_]{1,64}")
_NEXT: Final = re.compile(r"/my(?:/[A-Za-z0-9_.:/-]*)?(?:\?[A-Za-z0-9_.=&%-]*)?")
_NOTICES: Final = frozenset(
    {"reauthed", "approved", "rejected", "revoked", "accepted", "saved", "unchanged"}
)
_CONFIRM_WORDS: Final = frozenset({"삭제", "ERASE"})
_STATIC: Final[Mapping[str, str]] = {
    "style.css": "text/css",
    "verify.js": "text/javascript",
    "accesslog.js": "text/javascript",
}
_FORM_MEDIA_TYPE: Final = "application/x-www-form-urlencoded"


# --------------------------------------------------------------------------
# Control flow exceptions (turned into pages by the router's handlers)
# --------------------------------------------------------------------------


class SignInRequired(Exception):
    """No valid session: GET pages redirect to sign-in, forms answer 403."""


class CsrfRefused(Exception):
    """A form without the session's CSRF token, or from another site: 403."""


class PageNotFound(OncevaultError):
    """A malformed id or an unknown page: 404."""

    code = "not_found"


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def _now(runtime: Runtime) -> int:
    return runtime.clock.now_ms() // 1000


def safe_next(raw: str | None) -> str:
    """A local ``/my`` path to return to after sign-in (never another site)."""
    if raw and len(raw) <= 512 and _NEXT.fullmatch(raw) and "//" not in raw:
        return raw
    return MOUNT_PATH


def _redirect(location: str) -> Response[bytes]:
    return Response(b"", status_code=303, headers={"Location": location})


def _lang_of(request: Request[Any, Any, Any]) -> Lang:
    return (
        parse_lang(request.query_params.get("lang"))
        or parse_lang(request.cookies.get(LANG_COOKIE))
        or DEFAULT_LANG
    )


def _fresh(session: Session, now: int) -> bool:
    return session.auth_time is not None and now - session.auth_time <= FRESH_AUTH_SECONDS


def _valid_id(value: str) -> str:
    if not _ID.fullmatch(value):
        raise PageNotFound("no such page")
    return value


def _valid_type(value: str) -> str:
    if not _TYPE.fullmatch(value):
        raise PageNotFound("no such record type")
    return value


@dataclass(frozen=True)
class _Form:
    session: Session
    fields: dict[str, str]


# --------------------------------------------------------------------------
# The router
# --------------------------------------------------------------------------


def web_router(settings: Settings, *, environ: Mapping[str, str] | None = None) -> Router:
    """The ``/my`` router: citizen pages, sign-in, and the page script's JSON.

    ``environ`` defaults to the process environment (the external IdP's
    endpoints, see :mod:`api.web.config`).

    Raises:
        SettingsError: a malformed IdP endpoint or client secret file.
    """
    config: WebConfig = load_web_config(settings, environ)
    env: Environment = make_environment()
    sealer_box: list[Sealer] = []
    extra_origins: tuple[str, ...] = ()
    if config.idp is not None and config.idp.authorization_origin != config.origin:
        extra_origins = (config.idp.authorization_origin,)
    csp = content_security_policy(extra_origins)

    def sealer() -> Sealer:
        if not sealer_box:
            secret = load_or_create_secret(config.session_key_file)
            sealer_box.append(Sealer(secret, issuer=config.issuer))
        return sealer_box[0]

    def cookie(key: str, value: str, *, max_age: int) -> Cookie:
        return Cookie(
            key=key,
            value=value,
            path=MOUNT_PATH,
            max_age=max_age,
            httponly=True,
            secure=config.secure_cookies,
            samesite="lax",
        )

    def session_of(request: Request[Any, Any, Any]) -> Session | None:
        runtime = runtime_of(request)
        sealed = sealer().open("session", request.cookies.get(SESSION_COOKIE))
        return Session.from_json(sealed, now=_now(runtime))

    def require_session(request: Request[Any, Any, Any]) -> Session:
        session = session_of(request)
        if session is None:
            raise SignInRequired
        return session

    async def read_form(request: Request[Any, Any, Any]) -> _Form:
        """A POST's form, after the session and CSRF checks (else 403)."""
        # Defence in depth before the token: browsers mark cross-site requests. Our pages
        # send no referrer, so their own posts carry ``Origin: null`` (Fetch standard).
        origin = request.headers.get("origin")
        fetch_site = request.headers.get("sec-fetch-site")
        if (origin not in (None, "null", config.origin)) or fetch_site not in (
            None,
            "same-origin",
        ):
            raise CsrfRefused
        session = session_of(request)
        if session is None:
            raise SignInRequired
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != _FORM_MEDIA_TYPE:
            raise CsrfRefused
        body = await request.body()
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=64)
        except (UnicodeDecodeError, ValueError):
            raise CsrfRefused from None
        fields: dict[str, str] = {}
        for name, value in pairs:
            if name in fields:
                raise CsrfRefused  # a repeated field is never ours
            fields[name] = value
        token = fields.pop(CSRF_FIELD, "")
        if not token.isascii() or not crypto.constant_time_equal(
            token.encode("ascii"), session.csrf.encode("ascii")
        ):
            raise CsrfRefused
        return _Form(session=session, fields=fields)

    def page(
        request: Request[Any, Any, Any],
        template: str,
        *,
        session: Session | None,
        status: int = 200,
        title_key: str,
        **values: Any,
    ) -> Response[str]:
        runtime = runtime_of(request)
        lang = _lang_of(request)
        catalogue = runtime.current_catalogue()
        query = {k: v for k, v in request.query_params.items() if k not in ("lang", "notice")}

        def switch(to: str) -> str:
            return request.url.path + "?" + urlencode({**query, "lang": to})

        notice = request.query_params.get("notice")
        context: dict[str, Any] = {
            **helpers(lang, catalogue),
            "lang": lang,
            "other_lang": "en" if lang == "ko" else "ko",
            "switch_url": switch,
            "session": session,
            "csrf": session.csrf if session else "",
            "csrf_field": CSRF_FIELD,
            "path": request.url.path,
            "title_key": title_key,
            "notice": notice if notice in _NOTICES else None,
            "dev_idp": config.idp is not None and config.idp.development,
            **values,
        }
        response = html_response(render(env, template, context), status=status)
        chosen = parse_lang(request.query_params.get("lang"))
        if chosen is not None and chosen != parse_lang(request.cookies.get(LANG_COOKIE)):
            response.set_cookie(cookie(LANG_COOKIE, chosen, max_age=365 * 86400))
        return response

    def error_page(request: Request[Any, Any, Any], status: int, message_key: str) -> Response[str]:
        try:
            session = session_of(request)
        except OncevaultError:  # pragma: no cover - the key file went away
            session = None
        return page(
            request,
            "error.html",
            session=session,
            status=status,
            title_key="error.title",
            message_key=message_key,
        )

    def fresh_sign_in(next_path: str) -> Response[bytes]:
        return _redirect(
            f"{MOUNT_PATH}/login?" + urlencode({"fresh": "1", "next": safe_next(next_path)})
        )

    # -- exception handlers for pages -------------------------------------------------

    def on_sign_in_required(request: Request[Any, Any, Any], _: Exception) -> Response[Any]:
        if request.method == "GET":
            target = request.url.path
            if request.url.query:
                target += "?" + request.url.query
            return _redirect(f"{MOUNT_PATH}/login?" + urlencode({"next": safe_next(target)}))
        return error_page(request, 403, "error.session")

    def on_csrf(request: Request[Any, Any, Any], _: Exception) -> Response[Any]:
        log.info("web.csrf_refused", path=request.url.path)
        return error_page(request, 403, "error.csrf")

    def on_oncevault_error(request: Request[Any, Any, Any], exc: OncevaultError) -> Response[Any]:
        if isinstance(exc, KeyProviderUnavailable | StorageError):
            return error_page(request, 503, "error.unavailable")
        code = exc.code
        if code in ("not_found", "consent_not_found", "record_not_found"):
            return error_page(request, 404, "error.not_found")
        if code == "consent_state_conflict":
            return error_page(request, 409, "error.conflict")
        if code in ("kms_unavailable", "unavailable"):
            return error_page(request, 503, "error.unavailable")
        if code in ("malformed_request", "validation_error"):
            return error_page(request, 400, "error.bad_request")
        if code == "insufficient_user_authentication":
            return fresh_sign_in(request.url.path)
        if code == "invalid_token":
            return error_page(request, 403, "error.session")
        status = 403 if code != "internal_error" else 500
        return error_page(request, status, "error.forbidden" if status == 403 else "error.internal")

    def on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
        status = exc.status_code
        if status == 404:
            return error_page(request, 404, "error.not_found")
        if status in (400, 405, 413, 415, 422):
            return error_page(request, 400 if status == 422 else status, "error.bad_request")
        if status == 403:
            return error_page(request, 403, "error.forbidden")
        return error_page(request, 500, "error.internal")

    def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        log.error("web.unhandled", error=exc.__class__.__name__)
        return error_page(request, 500, "error.internal")

    page_errors: dict[Any, Any] = {
        SignInRequired: on_sign_in_required,
        CsrfRefused: on_csrf,
        OncevaultError: on_oncevault_error,
        HTTPException: on_http_error,
        Exception: on_unexpected,
    }

    # -- sign-in ------------------------------------------------------------------------

    @get("/login", sync_to_thread=False)
    def login(request: Request[Any, Any, Any]) -> Response[Any]:
        """Start the OpenID Connect sign-in: state, nonce and PKCE kept in a sealed cookie."""
        if config.idp is None:
            return error_page(request, 503, "login.unavailable")
        runtime = runtime_of(request)
        next_path = safe_next(request.query_params.get("next"))
        fresh = request.query_params.get("fresh") == "1"
        if not fresh and session_of(request) is not None:
            return _redirect(next_path)
        if fresh:
            next_path = _with_notice(next_path, "reauthed")
        state = LoginState.start(next_path, now=_now(runtime))
        response = _redirect(
            oidc.authorization_url(config.idp, state, redirect_uri=config.callback_url, fresh=fresh)
        )
        response.set_cookie(
            cookie(LOGIN_COOKIE, sealer().seal("login", state.as_json()), max_age=LOGIN_SECONDS)
        )
        return response

    @get("/callback")
    async def callback(request: Request[Any, Any, Any]) -> Response[Any]:
        """Finish the sign-in: state, code exchange, id_token and nonce; start a session."""
        runtime = runtime_of(request)
        idp = config.idp
        if idp is None:
            return error_page(request, 503, "login.unavailable")
        now = _now(runtime)
        state = LoginState.from_json(
            sealer().open("login", request.cookies.get(LOGIN_COOKIE)), now=now
        )
        params = request.query_params
        returned_state = params.get("state") or ""
        issuer = params.get("iss")

        def failed(reason: str) -> Response[Any]:
            log.info("web.sign_in_failed", reason=reason)
            response = page(
                request,
                "login_failed.html",
                session=None,
                status=400,
                title_key="login.failed.title",
            )
            response.delete_cookie(LOGIN_COOKIE, path=MOUNT_PATH)
            return response

        if state is None:
            return failed("no sign-in in progress (cookie missing or expired)")
        if not returned_state.isascii() or not crypto.constant_time_equal(
            returned_state.encode("ascii"), state.state.encode("ascii")
        ):
            return failed("state does not match")
        if issuer is not None and issuer != idp.issuer:
            return failed("iss parameter names another identity provider")
        if params.get("error") is not None:
            return failed(f"the identity provider answered {oidc.safe_error(params.get('error'))}")
        code = params.get("code")
        if not code or len(code) > 4096:
            return failed("no code")
        assert runtime.citizens is not None
        assert runtime.vault is not None
        try:
            id_token = await oidc.exchange_code(idp, code, state, redirect_uri=config.callback_url)
            principal = oidc.verify_id_token(runtime.citizens, idp, id_token, state, now=now)
        except oidc.SignInFailed as exc:
            return failed(str(exc))
        citizen_id = await runtime.vault.resolve(principal.subject, link=principal.link)
        session = Session.start(citizen_id, auth_time=principal.auth_time, now=now)
        log.info("web.signed_in", issuer=principal.issuer)
        response = _redirect(state.next_path)
        response.set_cookie(
            cookie(
                SESSION_COOKIE, sealer().seal("session", session.as_json()), max_age=SESSION_SECONDS
            )
        )
        response.delete_cookie(LOGIN_COOKIE, path=MOUNT_PATH)
        return response

    @post("/logout", status_code=303)
    async def logout(request: Request[Any, Any, Any]) -> Response[Any]:
        """Sign out: forget the session cookie."""
        await read_form(request)
        response = _redirect(MOUNT_PATH)
        response.delete_cookie(SESSION_COOKIE, path=MOUNT_PATH)
        return response

    # -- overview -------------------------------------------------------------------------

    async def client_names(runtime: Runtime, ids: set[str]) -> dict[str, str]:
        assert runtime.clients is not None
        return await runtime.clients.repo.names(sorted(ids))

    async def recent_reads(runtime: Runtime, citizen_id: str) -> list[StoredEntry]:
        """``data.read`` entries by clients in the last 30 days, newest first."""
        since = runtime.clock.now_ms() - READS_WINDOW_MS
        return await runtime.audit.recent_reads(citizen_id, since_ms=since)

    @get("")
    async def overview(request: Request[Any, Any, Any]) -> Response[Any]:
        """The overview: records, pending and active consents, recent reads, suggestions."""
        session = session_of(request)
        if session is None:
            return page(request, "welcome.html", session=None, title_key="welcome.title")
        runtime = runtime_of(request)
        assert runtime.vault is not None
        assert runtime.consents is not None
        records = await runtime.vault.list_records(session.citizen_id)
        consents = await runtime.consents.list_for_citizen(session.citizen_id)
        reads = await recent_reads(runtime, session.citizen_id)
        suggestions = [
            s
            for s in await runtime.consents.list_suggestions(session.citizen_id)
            if s.status == "open"
        ]
        names = await client_names(
            runtime,
            {c.client_id for c in consents}
            | {s.client_id for s in suggestions}
            | {r.entry["client_id"] for r in reads if r.entry["client_id"]},
        )
        return page(
            request,
            "dashboard.html",
            session=session,
            title_key="dashboard.title",
            records=records,
            pending=[c for c in consents if c.status == Status.PENDING],
            active=[c for c in consents if c.status == Status.ACTIVE],
            reads=[_log_row(r, names, session.citizen_id) for r in reads[:5]],
            reads_count=len(reads),
            suggestions=suggestions,
            names=names,
        )

    # -- records --------------------------------------------------------------------------

    @get("/records")
    async def records_page(request: Request[Any, Any, Any]) -> Response[Any]:
        session = require_session(request)
        runtime = runtime_of(request)
        assert runtime.vault is not None
        catalogue = runtime.current_catalogue()
        records = await runtime.vault.list_records(session.citizen_id)
        held = {r.record_type for r in records}
        names = await client_names(runtime, {r.source for r in records if r.source != "citizen"})
        return page(
            request,
            "records.html",
            session=session,
            title_key="records.title",
            records=records,
            names=names,
            self_asserted={name for name, t in catalogue.record_types.items() if t.self_asserted},
            missing_self=sorted(
                name
                for name, t in catalogue.record_types.items()
                if t.self_asserted and name not in held
            ),
        )

    @get("/records/{record_type:str}")
    async def record_page(
        request: Request[Any, Any, Any], record_type: FromPath[str]
    ) -> Response[Any]:
        """One record with its data: the read is audited like ``GET /v1/me/records/{type}``."""
        session = require_session(request)
        record_type = _valid_type(record_type)
        runtime = runtime_of(request)
        assert runtime.vault is not None
        catalogue = runtime.current_catalogue()
        known = catalogue.record_types.get(record_type)
        fields = tuple(sorted(known.fields)) if known else ()
        content, seq = await runtime.vault.read(
            citizen_id=session.citizen_id,
            record_type=record_type,
            actor=Actor("citizen", session.citizen_id, request_id(request)),
            fields=fields,
        )
        source = content.meta.source
        names = await client_names(runtime, set() if source == "citizen" else {source})
        return page(
            request,
            "record.html",
            session=session,
            title_key="records.title",
            meta=content.meta,
            data=content.data,
            seq=seq,
            names=names,
            editable=is_self_asserted(catalogue, record_type),
        )

    def form_fields(catalogue: Catalogue, record_type: str) -> list[tuple[str, str]]:
        found = catalogue.record_types[record_type]
        return [(name, kind.value) for name, kind in found.fields.items()]

    @get("/records/{record_type:str}/edit")
    async def record_edit_page(
        request: Request[Any, Any, Any], record_type: FromPath[str]
    ) -> Response[Any]:
        session = require_session(request)
        record_type = _valid_type(record_type)
        runtime = runtime_of(request)
        assert runtime.vault is not None
        catalogue = runtime.current_catalogue()
        if not is_self_asserted(catalogue, record_type):
            raise PageNotFound("not a self-asserted type")
        values: dict[str, Any] = {}
        if any(
            r.record_type == record_type
            for r in await runtime.vault.list_records(session.citizen_id)
        ):
            content, _ = await runtime.vault.read(
                citizen_id=session.citizen_id,
                record_type=record_type,
                actor=Actor("citizen", session.citizen_id, request_id(request)),
                fields=tuple(sorted(catalogue.record_types[record_type].fields)),
            )
            values = _form_values(content.data)
        return page(
            request,
            "record_edit.html",
            session=session,
            title_key="records.title",
            record_type=record_type,
            fields=form_fields(catalogue, record_type),
            values=values,
            problem=None,
        )

    @post("/records/{record_type:str}", status_code=303)
    async def record_save(
        request: Request[Any, Any, Any], record_type: FromPath[str]
    ) -> Response[Any]:
        """Save a self-asserted record from the edit form."""
        form = await read_form(request)
        record_type = _valid_type(record_type)
        runtime = runtime_of(request)
        assert runtime.intake is not None
        catalogue = runtime.current_catalogue()
        if not is_self_asserted(catalogue, record_type):
            raise PageNotFound("not a self-asserted type")
        lang = _lang_of(request)
        fields = form_fields(catalogue, record_type)
        data, problem_text = _parse_record_form(fields, form.fields, lang)
        if problem_text is None:
            try:
                result = await runtime.intake.self_assert(
                    citizen_id=form.session.citizen_id,
                    record_type=record_type,
                    data=data,
                    actor=Actor("citizen", form.session.citizen_id, request_id(request)),
                )
            except RecordInvalid as exc:
                problem_text = exc.path.removeprefix("data.") + ": " + exc.problem
            else:
                notice = "saved" if result.created else "unchanged"
                return _redirect(f"{MOUNT_PATH}/records?notice={notice}")
        return page(
            request,
            "record_edit.html",
            session=form.session,
            status=422,
            title_key="records.title",
            record_type=record_type,
            fields=fields,
            values={name: form.fields.get("f." + name, "") for name, _ in fields},
            problem=translate(lang, "records.invalid", problem=problem_text),
        )

    # -- consents --------------------------------------------------------------------------

    async def own_consent(runtime: Runtime, session: Session, consent_id: str) -> Consent:
        assert runtime.consents is not None
        for consent in await runtime.consents.list_for_citizen(session.citizen_id):
            if consent.consent_id == consent_id:
                return consent
        raise PageNotFound("no such consent")

    @get("/consents")
    async def consents_page(request: Request[Any, Any, Any]) -> Response[Any]:
        session = require_session(request)
        runtime = runtime_of(request)
        assert runtime.consents is not None
        consents = await runtime.consents.list_for_citizen(session.citizen_id)
        consents.sort(key=lambda c: c.created_at, reverse=True)
        names = await client_names(runtime, {c.client_id for c in consents})
        return page(
            request,
            "consents.html",
            session=session,
            title_key="consents.title",
            pending=[c for c in consents if c.status == Status.PENDING],
            active=[c for c in consents if c.status == Status.ACTIVE],
            history=[c for c in consents if c.status not in (Status.PENDING, Status.ACTIVE)],
            names=names,
        )

    @get("/consents/{consent_id:str}")
    async def consent_page(
        request: Request[Any, Any, Any], consent_id: FromPath[str]
    ) -> Response[Any]:
        session = require_session(request)
        runtime = runtime_of(request)
        consent = await own_consent(runtime, session, _valid_id(consent_id))
        names = await client_names(runtime, {consent.client_id})
        purpose = runtime.current_catalogue().purposes.get(consent.purpose)
        return page(
            request,
            "consent.html",
            session=session,
            title_key="consents.title",
            consent=consent,
            names=names,
            statute=purpose.statute if purpose and purpose.statute else "",
        )

    @post("/consents/{consent_id:str}/{action:str}", status_code=303)
    async def consent_action(
        request: Request[Any, Any, Any], consent_id: FromPath[str], action: FromPath[str]
    ) -> Response[Any]:
        """Approve (fresh sign-in needed), reject or revoke one of my consents."""
        form = await read_form(request)
        consent_id = _valid_id(consent_id)
        if action not in ("approve", "reject", "revoke"):
            raise PageNotFound("no such action")
        runtime = runtime_of(request)
        assert runtime.consents is not None
        back = f"{MOUNT_PATH}/consents/{consent_id}"
        if action == "approve" and not _fresh(form.session, _now(runtime)):
            return fresh_sign_in(back)
        method = {
            "approve": runtime.consents.approve,
            "reject": runtime.consents.reject,
            "revoke": runtime.consents.revoke,
        }[action]
        await method(
            consent_id,
            citizen_id=form.session.citizen_id,
            actor=Actor("citizen", form.session.citizen_id, request_id(request)),
        )
        notice = {"approve": "approved", "reject": "rejected", "revoke": "revoked"}[action]
        return _redirect(f"{back}?notice={notice}")

    @get("/consents/{consent_id:str}/receipt")
    async def receipt_download(
        request: Request[Any, Any, Any], consent_id: FromPath[str]
    ) -> Response[Any]:
        """The signed consent receipt (compact JWS) as a file."""
        session = require_session(request)
        consent_id = _valid_id(consent_id)
        runtime = runtime_of(request)
        assert runtime.consents is not None
        raw_version = request.query_params.get("version")
        version: int | None = None
        if raw_version is not None:
            if not raw_version.isdigit() or not 1 <= int(raw_version) <= 1_000_000:
                raise PageNotFound("no such receipt")
            version = int(raw_version)
        found = await runtime.consents.receipt(
            consent_id, citizen_id=session.citizen_id, version=version
        )
        filename = f"consent-receipt-{consent_id}-v{found.version}.jws"
        return Response(
            found.jws.encode("ascii"),
            media_type="application/jose",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    # -- access log ------------------------------------------------------------------------

    @get("/access-log")
    async def access_log_page(request: Request[Any, Any, Any]) -> Response[Any]:
        """My entries, newest first; the page's script verifies each row."""
        session = require_session(request)
        runtime = runtime_of(request)
        raw_before = request.query_params.get("before")
        before: int | None = None
        if raw_before is not None:
            if not raw_before.isdigit() or int(raw_before) > MAX_SEQ:
                raise PageNotFound("bad page")
            before = int(raw_before)
        found = await runtime.audit.citizen_entries(
            session.citizen_id, before=before, limit=LOG_PAGE
        )
        names = await client_names(
            runtime,
            {e.entry["client_id"] for e in found if e.entry["client_id"]}
            | {
                e.entry["actor"]["id"]
                for e in found
                if e.entry["actor"]["type"] == "client" and e.entry["actor"]["id"]
            },
        )
        return page(
            request,
            "access_log.html",
            session=session,
            title_key="log.title",
            rows=[_log_row(e, names, session.citizen_id) for e in found],
            older=found[-1].seq if len(found) == LOG_PAGE and found[-1].seq > 0 else None,
            paged=before is not None,
        )

    # -- suggestions -------------------------------------------------------------------------

    @get("/suggestions")
    async def suggestions_page(request: Request[Any, Any, Any]) -> Response[Any]:
        session = require_session(request)
        runtime = runtime_of(request)
        assert runtime.consents is not None
        found = await runtime.consents.list_suggestions(session.citizen_id)
        names = await client_names(runtime, {s.client_id for s in found})
        return page(
            request,
            "suggestions.html",
            session=session,
            title_key="suggestions.title",
            suggestions=found,
            names=names,
        )

    @post("/suggestions/{suggestion_id:str}/accept", status_code=303)
    async def suggestion_accept(
        request: Request[Any, Any, Any], suggestion_id: FromPath[str]
    ) -> Response[Any]:
        """One click: an active consent for the suggested service (fresh sign-in needed)."""
        form = await read_form(request)
        suggestion_id = _valid_id(suggestion_id)
        runtime = runtime_of(request)
        assert runtime.consents is not None
        if not _fresh(form.session, _now(runtime)):
            return fresh_sign_in(f"{MOUNT_PATH}/suggestions")
        consent = await runtime.consents.accept_suggestion(
            suggestion_id,
            citizen_id=form.session.citizen_id,
            actor=Actor("citizen", form.session.citizen_id, request_id(request)),
        )
        return _redirect(f"{MOUNT_PATH}/consents/{consent.consent_id}?notice=accepted")

    # -- erasure -----------------------------------------------------------------------------

    async def erasure_preview(runtime: Runtime, session: Session) -> dict[str, Any]:
        """What ``DELETE /v1/me`` would do now: erased and kept types, revoked consents."""
        assert runtime.vault is not None
        assert runtime.consents is not None
        catalogue = runtime.current_catalogue()
        now = runtime.clock.now_ms()
        erase: list[str] = []
        keep: list[dict[str, Any]] = []
        for meta in await runtime.vault.list_records(session.citizen_id):
            record_type = catalogue.record_types.get(meta.record_type)
            days = record_type.retention_days if record_type else 0
            until = meta.created_at + days * DAY_MS
            if days > 0 and until > now:
                keep.append({"type": meta.record_type, "until": until, "days": days})
            else:
                erase.append(meta.record_type)
        consents = [
            c
            for c in await runtime.consents.list_for_citizen(session.citizen_id)
            if c.status in (Status.PENDING, Status.ACTIVE)
        ]
        names = await client_names(runtime, {c.client_id for c in consents})
        return {"erase": erase, "keep": keep, "revoke": consents, "names": names}

    @get("/erase")
    async def erase_page(request: Request[Any, Any, Any]) -> Response[Any]:
        session = require_session(request)
        runtime = runtime_of(request)
        return page(
            request,
            "erase.html",
            session=session,
            title_key="erase.title",
            problem=None,
            **(await erasure_preview(runtime, session)),
        )

    @post("/erase", status_code=200)
    async def erase_submit(request: Request[Any, Any, Any]) -> Response[Any]:
        """Erase me after a typed confirmation; show what was erased and kept, sign out."""
        form = await read_form(request)
        runtime = runtime_of(request)
        assert runtime.erasure is not None
        lang = _lang_of(request)
        word = translate(lang, "erase.word")
        if form.fields.get("confirm", "").strip() not in _CONFIRM_WORDS:
            return page(
                request,
                "erase.html",
                session=form.session,
                status=422,
                title_key="erase.title",
                problem=translate(lang, "erase.wrong_word", word=word),
                **(await erasure_preview(runtime, form.session)),
            )
        if not _fresh(form.session, _now(runtime)):
            return fresh_sign_in(f"{MOUNT_PATH}/erase")
        catalogue = runtime.current_catalogue()

        def retention(record_type: str) -> int:
            found = catalogue.record_types.get(record_type)
            return found.retention_days if found else 0

        outcome = await runtime.erasure.erase_citizen(
            citizen_id=form.session.citizen_id,
            actor=Actor("citizen", form.session.citizen_id, request_id(request)),
        )
        response = page(
            request,
            "erased.html",
            session=None,
            title_key="erase.done.title",
            erased=list(outcome.erased),
            kept=[
                {"type": k.type, "until": k.until, "reason": k.reason, "days": retention(k.type)}
                for k in outcome.kept
            ],
            receipt=outcome.receipt,
        )
        response.delete_cookie(SESSION_COOKIE, path=MOUNT_PATH)
        return response

    # -- static files ------------------------------------------------------------------------

    static_cache: dict[str, bytes] = {}

    @get("/static/{name:str}", sync_to_thread=False)
    def static(name: FromPath[str]) -> Response[bytes]:
        """The pages' stylesheet and scripts (a fixed list; no directory access)."""
        media_type = _STATIC.get(name)
        if media_type is None:
            raise PageNotFound("no such file")
        if name not in static_cache:
            static_cache[name] = (STATIC_DIR / name).read_bytes()
        return Response(
            static_cache[name],
            media_type=media_type,
            headers={"Cache-Control": "no-cache"},
        )

    # -- JSON for the page's script ------------------------------------------------------------

    def api_session(request: Request[Any, Any, Any]) -> Session:
        session = session_of(request)
        if session is None:
            raise oidc.SignInFailed("sign in first")
        return session

    async def tree_size(runtime: Runtime) -> int:
        return (await runtime.audit.state()).size

    @get("/access-log/{seq:int}/proof")
    async def proof(request: Request[Any, Any, Any], seq: FromPath[int]) -> Response[Any]:
        """One of my entries with its leaf bytes and its inclusion proof at ``tree_size``.

        No root hash is sent: the browser computes it and compares it with the
        signed checkpoint.
        """
        session = api_session(request)
        runtime = runtime_of(request)
        size = _int_param(request.query_params.get("tree_size"))
        if not 0 <= seq <= MAX_SEQ:
            return problem("not_found", "no such entry")
        stored = await runtime.audit.citizen_entry(session.citizen_id, seq)
        if stored is None:
            return problem("not_found", "no such entry")
        if size is None or not seq < size <= await tree_size(runtime):
            return problem(
                "malformed_request", "tree_size: must be above seq and at most the tree size"
            )
        path = await runtime.audit.inclusion_proof(seq, size)
        return Response(
            {
                "seq": seq,
                "tree_size": size,
                "leaf": base64.b64encode(stored.leaf).decode("ascii"),
                "inclusion_path": [node.hex() for node in path],
            }
        )

    @get("/audit/consistency")
    async def consistency(request: Request[Any, Any, Any]) -> Response[Any]:
        """RFC 9162 consistency proof between two tree sizes (hashes only)."""
        api_session(request)
        runtime = runtime_of(request)
        first = _int_param(request.query_params.get("first"))
        second = _int_param(request.query_params.get("second"))
        current = await tree_size(runtime)
        if first is None or second is None or not 0 < first <= second <= current:
            return problem(
                "malformed_request", "first and second: 0 < first <= second <= tree size"
            )
        path = await runtime.audit.consistency_proof(first, second)
        return Response(
            {"first": first, "second": second, "consistency_path": [node.hex() for node in path]}
        )

    api_router = Router(
        path="/api",
        route_handlers=[proof, consistency],
        exception_handlers=dict(EXCEPTION_HANDLERS),
        include_in_schema=False,
    )

    return Router(
        path=MOUNT_PATH,
        route_handlers=[
            overview,
            login,
            callback,
            logout,
            records_page,
            record_page,
            record_edit_page,
            record_save,
            consents_page,
            consent_page,
            consent_action,
            receipt_download,
            access_log_page,
            suggestions_page,
            suggestion_accept,
            erase_page,
            erase_submit,
            static,
            api_router,
        ],
        middleware=[DefineMiddleware(SecurityHeaders, csp=csp)],
        exception_handlers=page_errors,
        request_max_body_size=MAX_FORM_BODY,
        include_in_schema=False,
    )


# --------------------------------------------------------------------------
# Pure helpers (views of domain objects)
# --------------------------------------------------------------------------


def _with_notice(path: str, notice: str) -> str:
    base, _, query = path.partition("?")
    pairs = [(k, v) for k, v in parse_qsl(query) if k != "notice"]
    pairs.append(("notice", notice))
    return base + "?" + urlencode(pairs)


def _int_param(raw: str | None) -> int | None:
    if raw is None or not raw.isdigit() or len(raw) > 16:
        return None
    return int(raw)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _log_row(stored: StoredEntry, names: Mapping[str, str], citizen_id: str) -> dict[str, Any]:
    """One access-log row: what the page shows, plus the entry fields the script checks."""
    entry = stored.entry
    actor = entry["actor"]
    if actor["type"] == "client":
        who: tuple[str, str | None] = ("client", names.get(actor["id"] or "", actor["id"]))
    elif actor["type"] == "citizen" and actor["id"] == citizen_id:
        who = ("you", None)
    else:
        who = (str(actor["type"]), None)
    items = entry["items"] or []
    return {
        "seq": stored.seq,
        "ts": entry["ts"],
        "action": entry["action"],
        "who": who,
        "client_name": names.get(entry["client_id"] or "", entry["client_id"]),
        "purpose": entry["purpose"],
        "record_type": entry["record_type"],
        "released": items,
        "outcome": entry["outcome"],
        "reason_code": entry["reason_code"],
        # Exactly what the script compares with the verified leaf (data-* attributes).
        "check": {
            "seq": str(stored.seq),
            "ts": str(entry["ts"]),
            "action": entry["action"],
            "actor-type": actor["type"],
            "actor-id": actor["id"] or "",
            "client-id": entry["client_id"] or "",
            "purpose": entry["purpose"] or "",
            "record-type": entry["record_type"] or "",
            "outcome": entry["outcome"],
            "items": _canonical(entry["items"]),
        },
    }


def _form_values(data: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in data.items():
        if isinstance(value, bool):
            out[name] = "on" if value else ""
        elif isinstance(value, dict | list):
            out[name] = json.dumps(value, ensure_ascii=False)
        else:
            out[name] = "" if value is None else str(value)
    return out


def _parse_record_form(
    fields: list[tuple[str, str]], form: Mapping[str, str], lang: Lang
) -> tuple[dict[str, Any], str | None]:
    """The record data from the edit form, or a problem naming the field (never the value)."""
    data: dict[str, Any] = {}
    for name, kind in fields:
        raw = form.get("f." + name, "")
        if kind == FieldType.BOOLEAN.value:
            data[name] = raw == "on"
        elif kind == FieldType.INTEGER.value:
            try:
                data[name] = int(raw.strip())
            except ValueError:
                return data, translate(lang, "records.bad_number", field=name)
        elif kind == FieldType.NUMBER.value:
            try:
                number = float(raw.strip())
            except ValueError:
                return data, translate(lang, "records.bad_number", field=name)
            data[name] = int(number) if number.is_integer() and "." not in raw else number
        elif kind in (FieldType.LIST.value, FieldType.OBJECT.value):
            try:
                data[name] = json.loads(raw)
            except ValueError:
                return data, translate(lang, "records.bad_json", field=name)
        else:
            data[name] = raw.strip()
    return data, None
