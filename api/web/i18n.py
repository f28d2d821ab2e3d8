"""Every visible string of the citizen pages, in Korean and English.

Korean is the default. A page picks its language from ``?lang=ko|en`` (remembered
in a cookie) and calls :func:`translate` through the templates' ``t`` helper.
Catalogue titles (record types, purposes) come from the catalogue's ``title_ko`` /
``title``; field names of the default catalogue have labels here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

__all__ = [
    "DEFAULT_LANG",
    "LANGS",
    "STRINGS",
    "Lang",
    "field_label",
    "parse_lang",
    "translate",
]

Lang = Literal["ko", "en"]
LANGS: Final[tuple[Lang, ...]] = ("ko", "en")
DEFAULT_LANG: Final[Lang] = "ko"

#: key -> (Korean, English). ``{name}`` placeholders are filled by :func:`translate`.
STRINGS: Final[Mapping[str, tuple[str, str]]] = {
    # -- frame -----------------------------------------------------------------------
    "site.name": ("내 정보 금고", "My data vault"),
    "site.tagline": (
        "한 번 제출하면 다시 내지 않아도 되는 행정 서류함",
        "Submit once: your government papers in one place",
    ),
    "skip": ("본문으로 건너뛰기", "Skip to content"),
    "nav.label": ("주 메뉴", "Main menu"),
    "nav.dashboard": ("한눈에 보기", "Overview"),
    "nav.records": ("내 서류", "My records"),
    "nav.consents": ("제공 동의", "Consents"),
    "nav.access_log": ("열람 기록", "Access log"),
    "nav.suggestions": ("맞춤 서비스", "Suggestions"),
    "nav.erase": ("내 정보 삭제", "Erase my data"),
    "lang.switch": ("언어", "Language"),
    "lang.ko": ("한국어", "한국어 (Korean)"),
    "lang.en": ("English (영어)", "English"),
    "signout": ("로그아웃", "Sign out"),
    "signin": ("로그인", "Sign in"),
    "signed_in_until": ("로그인 유지: {time}까지", "Signed in until {time}"),
    "footer.audit": (
        "모든 열람과 변경은 위·변조를 확인할 수 있는 감사 기록에 남습니다.",
        "Every read and change is kept in a tamper-evident audit log.",
    ),
    # -- signed out / sign-in ----------------------------------------------------------
    "welcome.title": ("내 정보 금고에 오신 것을 환영합니다", "Welcome to your data vault"),
    "welcome.body": (
        "기관이 발급한 서류를 한 곳에 보관하고, 누가 언제 왜 열람했는지 확인하세요. "
        "은행이나 기관은 내가 동의한 항목만 볼 수 있습니다.",
        "Keep the papers agencies issue you in one place and see who read them, when "
        "and why. Banks and agencies see only what you agreed to.",
    ),
    "welcome.signin": ("본인 확인 후 로그인", "Sign in with your identity provider"),
    "login.unavailable": (
        "로그인 수단이 설정되어 있지 않습니다. 운영자에게 문의하세요.",
        "No sign-in is configured. Please contact the operator.",
    ),
    "login.failed.title": ("로그인하지 못했습니다", "Sign-in did not complete"),
    "login.failed.body": (
        "로그인 과정이 만료되었거나 올바르지 않습니다. 처음부터 다시 시도하세요.",
        "The sign-in expired or was not valid. Please start again.",
    ),
    "login.again": ("다시 로그인", "Sign in again"),
    "notice.reauthed": (
        "다시 로그인했습니다. 이제 작업을 계속할 수 있습니다.",
        "You signed in again. You can continue now.",
    ),
    "notice.fresh_needed": (
        "이 작업은 최근 10분 이내의 로그인이 필요합니다. 다시 로그인해 주세요.",
        "This action needs a sign-in within the last 10 minutes. Please sign in again.",
    ),
    "notice.approved": (
        "동의했습니다. 동의 확인서가 발급되었습니다.",
        "Approved. A receipt was issued.",
    ),
    "notice.rejected": ("요청을 거절했습니다.", "Request rejected."),
    "notice.revoked": (
        "동의를 철회했습니다. 이 기관은 더 이상 정보를 볼 수 없습니다.",
        "Consent revoked. This organisation can no longer read your data.",
    ),
    "notice.accepted": (
        "서비스를 신청했습니다. 제공 동의가 시작되었습니다.",
        "Accepted. The consent for this service is now active.",
    ),
    "notice.saved": ("저장했습니다.", "Saved."),
    "notice.unchanged": ("바뀐 내용이 없어 그대로 두었습니다.", "Nothing changed; kept as it was."),
    # -- dashboard -------------------------------------------------------------------------
    "dashboard.title": ("한눈에 보기", "Overview"),
    "dashboard.records": ("보관 중인 서류", "Records in your vault"),
    "dashboard.pending": ("답변을 기다리는 요청", "Requests waiting for you"),
    "dashboard.active": ("진행 중인 제공 동의", "Active consents"),
    "dashboard.reads": ("최근 30일 열람", "Reads in the last 30 days"),
    "dashboard.reads_count": ("{count}건", "{count}"),
    "dashboard.suggestions": ("맞춤 서비스 제안", "Suggested services"),
    "dashboard.none": ("없음", "None"),
    "dashboard.see_all": ("모두 보기", "See all"),
    "dashboard.review": ("검토하기", "Review"),
    # -- records -----------------------------------------------------------------------
    "records.title": ("내 서류", "My records"),
    "records.intro": (
        "기관이 발급해 넣은 서류와 직접 입력한 정보입니다. 내용을 열면 그 열람도 기록됩니다.",
        "Papers that agencies issued to you and details you entered yourself. "
        "Opening one is recorded too.",
    ),
    "records.type": ("서류", "Record"),
    "records.source": ("출처", "Source"),
    "records.attested": ("기관 확인", "Attested"),
    "records.updated": ("최종 변경", "Updated"),
    "records.version": ("버전", "Version"),
    "records.actions": ("작업", "Actions"),
    "records.view": ("내용 보기", "View"),
    "records.edit": ("수정", "Edit"),
    "records.add": ("입력하기", "Enter"),
    "records.empty": ("아직 보관 중인 서류가 없습니다.", "No records yet."),
    "records.self": ("본인 입력", "Entered by you"),
    "records.yes": ("예", "Yes"),
    "records.no": ("아니요", "No"),
    "records.self_types": ("직접 입력할 수 있는 정보", "Details you can enter yourself"),
    "records.data": ("내용", "Contents"),
    "records.field": ("항목", "Field"),
    "records.value": ("값", "Value"),
    "records.back": ("내 서류로 돌아가기", "Back to my records"),
    "records.read_logged": (
        "이 열람은 감사 기록 #{seq}에 남았습니다.",
        "This read was recorded as audit entry #{seq}.",
    ),
    "records.edit_title": ("{title} 입력", "Enter {title}"),
    "records.save": ("저장", "Save"),
    "records.cancel": ("취소", "Cancel"),
    "records.json_hint": (
        "목록·묶음 항목은 JSON 형식으로 입력합니다.",
        "Lists and groups are entered as JSON.",
    ),
    "records.invalid": ("입력 내용을 확인하세요: {problem}", "Please check the form: {problem}"),
    "records.bad_number": ("{field}: 숫자를 입력하세요", "{field}: enter a number"),
    "records.bad_json": ("{field}: JSON 형식이 아닙니다", "{field}: not valid JSON"),
    # -- consents ----------------------------------------------------------------------
    "consents.title": ("제공 동의", "Consents"),
    "consents.pending": ("답변을 기다리는 요청", "Waiting for your answer"),
    "consents.active": ("진행 중", "Active"),
    "consents.history": ("지난 동의", "Past consents"),
    "consents.none_pending": ("기다리는 요청이 없습니다.", "No requests are waiting."),
    "consents.none_active": ("진행 중인 동의가 없습니다.", "No active consents."),
    "consents.none_history": ("지난 동의가 없습니다.", "No past consents."),
    "consent.title": ("{client}의 정보 제공 요청", "Request from {client}"),
    "consent.requester": ("요청 기관", "Requested by"),
    "consent.purpose": ("목적", "Purpose"),
    "consent.legal_basis": ("법적 근거", "Legal basis"),
    "consent.basis.consent": ("본인 동의", "Your consent"),
    "consent.basis.statute": ("법령 ({statute})", "Statute ({statute})"),
    "consent.case_reference": ("사건 번호", "Case reference"),
    "consent.fields": ("제공되는 항목", "Exactly these fields"),
    "consent.validity": ("유효 기간", "Validity"),
    "consent.validity_pending": ("동의한 날부터 {days}일", "{days} days from approval"),
    "consent.validity_active": ("{start}부터 {end}까지", "{start} until {end}"),
    "consent.access": ("제공 방식", "Access"),
    "consent.access.once": ("1회만 제공", "Once (a single fetch)"),
    "consent.access.standing": (
        "기간 중 계속 제공 (변경 시 알림)",
        "Standing (repeated fetches; told about updates)",
    ),
    "consent.fetches": ("제공 횟수", "Fetches"),
    "consent.fetches_of": ("{count} / {max}회", "{count} of {max}"),
    "consent.fetches_unlimited": ("{count}회 (제한 없음)", "{count} (no limit)"),
    "consent.status": ("상태", "Status"),
    "consent.created": ("요청일", "Requested"),
    "consent.approve": ("동의하기", "Approve"),
    "consent.reject": ("거절하기", "Reject"),
    "consent.revoke": ("동의 철회", "Revoke"),
    "consent.receipt": ("동의 확인서 내려받기", "Download receipt"),
    "consent.details": ("자세히", "Details"),
    "consent.back": ("제공 동의 목록으로", "Back to consents"),
    "consent.approve_hint": (
        "동의하면 위 기관이 위 항목만 위 기간 동안 받아 갈 수 있습니다. 언제든 철회할 수 있습니다.",
        "If you approve, this organisation may fetch only these fields, only for this "
        "period. You can revoke at any time.",
    ),
    "status.pending": ("대기 중", "Pending"),
    "status.active": ("진행 중", "Active"),
    "status.rejected": ("거절함", "Rejected"),
    "status.revoked": ("철회함", "Revoked"),
    "status.expired": ("기간 만료", "Expired"),
    "status.exhausted": ("제공 완료", "Used up"),
    # -- access log --------------------------------------------------------------------
    "log.title": ("열람 기록", "Access log"),
    "log.intro": (
        "누가, 언제, 무엇을, 왜 보거나 바꿨는지 최신순으로 보여줍니다. "
        "각 줄은 이 브라우저가 서명된 감사 기록과 직접 대조해 검증합니다.",
        "Who read or changed what, when and why, newest first. Your browser checks "
        "each row itself against the signed audit log.",
    ),
    "log.when": ("일시", "When"),
    "log.who": ("누가", "Who"),
    "log.what": ("무엇을", "What"),
    "log.why": ("왜", "Why"),
    "log.outcome": ("결과", "Outcome"),
    "log.check": ("검증", "Check"),
    "log.empty": ("기록이 없습니다.", "No entries."),
    "log.older": ("이전 기록 보기", "Older entries"),
    "log.newest": ("최신 기록으로", "Newest entries"),
    "log.you": ("본인", "You"),
    "log.system": ("시스템", "System"),
    "log.operator": ("운영자", "Operator"),
    "log.outcome.ok": ("완료", "Done"),
    "log.outcome.denied": ("거부됨", "Refused"),
    "log.outcome.error": ("오류", "Error"),
    "log.pending": ("확인 중…", "Checking…"),
    "log.verified": ("검증됨 ✓", "verified ✓"),
    "log.not_verified": ("검증 안 됨 ✗", "not verified ✗"),
    "log.nojs": (
        "검증하려면 JavaScript가 필요합니다. 서버는 스스로를 보증하지 않습니다.",
        "Checking needs JavaScript: the server does not vouch for itself.",
    ),
    "log.cp.checking": ("서명된 체크포인트를 확인하는 중…", "Checking the signed checkpoint…"),
    "log.cp.ok": (
        "서명된 체크포인트 확인 완료 (기록 {size}건).",
        "Signed checkpoint verified ({size} entries).",
    ),
    "log.cp.bad": (
        "체크포인트 서명을 확인하지 못했습니다.",
        "The checkpoint signature could not be verified.",
    ),
    "log.cons.first": (
        "이 브라우저에서 처음 확인했습니다. 다음 방문 때 일관성을 검사합니다.",
        "First check in this browser; the next visit checks consistency.",
    ),
    "log.cons.ok": (
        "지난 확인({old}건) 이후 기록이 지워지거나 바뀌지 않았습니다 ✓",
        "Nothing was removed or changed since your last check ({old} entries) ✓",
    ),
    "log.cons.bad": (
        "경고: 지난번 확인한 기록과 일치하지 않습니다 ({old}건). 기록이 바뀌었을 수 있습니다.",
        "Warning: the log is not consistent with your last check ({old} entries).",
    ),
    "action.data.read": ("열람", "Read"),
    "action.record.put": ("서류 저장", "Record stored"),
    "action.record.attested": ("기관 확인 서류 저장", "Attested record stored"),
    "action.record.erased": ("삭제", "Erased"),
    "action.consent.requested": ("제공 요청", "Consent requested"),
    "action.consent.approved": ("동의", "Consent approved"),
    "action.consent.rejected": ("거절", "Consent rejected"),
    "action.consent.revoked": ("동의 철회", "Consent revoked"),
    "action.consent.expired": ("기간 만료", "Consent expired"),
    "action.consent.exhausted": ("제공 완료", "Consent used up"),
    "action.token.issued": ("접근 토큰 발급", "Access token issued"),
    "action.token.refused": ("접근 토큰 거부", "Access token refused"),
    "action.token.revoked": ("접근 토큰 폐기", "Access token revoked"),
    "action.audit.queried": ("감사인 조회", "Audit query"),
    "action.erasure.reapplied": ("삭제 재적용", "Erasure re-applied"),
    "action.suggestion.created": ("서비스 제안", "Service suggested"),
    "action.suggestion.accepted": ("제안 수락", "Suggestion accepted"),
    "action.consent.viewed": ("동의 조회", "Consent viewed"),
    "action.events.read": ("변경 알림 조회", "Events read"),
    "action.access_log.viewed": ("접근 기록 조회", "Access log viewed"),
    "action.request.refused": ("요청 거부", "Request refused"),
    "action.citizen.link_conflict": ("본인 확인 정보 충돌", "Identifier link conflict"),
    # -- suggestions ---------------------------------------------------------------------
    "suggestions.title": ("맞춤 서비스", "Suggested services"),
    "suggestions.intro": (
        "서류가 바뀌면 받을 수 있는 서비스를 알려 드립니다. 한 번에 신청하세요.",
        "When your records change we tell you about services you can get. Apply in one click.",
    ),
    "suggestions.none": ("지금은 제안이 없습니다.", "No suggestions right now."),
    "suggestion.service": ("{client}: {purpose}", "{client}: {purpose}"),
    "suggestion.accept": ("신청하기", "Accept"),
    "suggestion.status.open": ("신청 가능", "Open"),
    "suggestion.status.accepted": ("신청함", "Accepted"),
    "suggestion.status.dismissed": ("닫음", "Dismissed"),
    "suggestion.valid": ("{days}일 동안", "for {days} days"),
    # -- erasure -------------------------------------------------------------------------
    "erase.title": ("내 정보 삭제", "Erase my data"),
    "erase.intro": (
        "삭제하면 모든 제공 동의가 철회되고, 법으로 보관해야 하는 서류를 빼고 모두 "
        "복구할 수 없게 지워집니다.",
        "Erasing revokes every consent and destroys every record that no law requires "
        "us to keep. It cannot be undone.",
    ),
    "erase.will_erase": ("지워지는 서류", "Will be erased"),
    "erase.will_keep": ("법에 따라 보관되는 서류", "Kept as the law requires"),
    "erase.will_revoke": ("철회되는 동의", "Consents that will be revoked"),
    "erase.until": ("{until}까지 보관 ({reason})", "kept until {until} ({reason})"),
    "erase.nothing": ("없음", "None"),
    "erase.retention": ("법정 보존 기간 {days}일", "statutory retention of {days} days"),
    "erase.confirm_label": (
        "계속하려면 아래 칸에 '{word}'라고 입력하세요",
        "To continue, type '{word}' in the box below",
    ),
    "erase.word": ("삭제", "ERASE"),
    "erase.submit": ("영구 삭제", "Erase permanently"),
    "erase.wrong_word": (
        "확인 문구가 일치하지 않습니다. '{word}'를 정확히 입력하세요.",
        "The confirmation does not match. Type '{word}' exactly.",
    ),
    "erase.done.title": ("삭제했습니다", "Your data was erased"),
    "erase.done.erased": ("지운 서류", "Erased"),
    "erase.done.kept": ("보관 중인 서류", "Kept"),
    "erase.done.receipt": ("삭제 확인서 (서명됨)", "Erasure receipt (signed)"),
    "erase.done.signed_out": (
        "로그아웃되었습니다. 확인서를 보관해 두세요.",
        "You have been signed out. Keep the receipt.",
    ),
    # -- errors ---------------------------------------------------------------------------
    "error.title": ("요청을 처리하지 못했습니다", "We could not do that"),
    "error.not_found": ("찾을 수 없습니다.", "Not found."),
    "error.forbidden": (
        "허용되지 않은 요청입니다. 페이지를 새로 고친 뒤 다시 시도하세요.",
        "This request is not allowed. Reload the page and try again.",
    ),
    "error.csrf": (
        "보안 확인 값이 없거나 맞지 않습니다. 페이지를 새로 고친 뒤 다시 시도하세요.",
        "The form's security check is missing or wrong. Reload the page and try again.",
    ),
    "error.session": (
        "로그인이 만료되었습니다. 다시 로그인하세요.",
        "Your sign-in has expired. Please sign in again.",
    ),
    "error.conflict": (
        "이미 처리된 요청입니다. 목록을 새로 고치세요.",
        "This was already handled. Reload the list.",
    ),
    "error.bad_request": ("잘못된 요청입니다.", "Malformed request."),
    "error.unavailable": (
        "잠시 후 다시 시도하세요. 일시적으로 처리할 수 없습니다.",
        "Temporarily unavailable. Please try again shortly.",
    ),
    "error.internal": ("문제가 생겼습니다. 잠시 후 다시 시도하세요.", "Something went wrong."),
    "error.home": ("처음으로", "Back to the overview"),
}

#: Labels for the fields of the default catalogue's record types: name -> (ko, en).
FIELD_LABELS: Final[Mapping[str, tuple[str, str]]] = {
    "name": ("이름", "Name"),
    "birth_date": ("생년월일", "Date of birth"),
    "address": ("주소", "Address"),
    "moved_in_on": ("전입일", "Moved in on"),
    "household_head": ("세대주 여부", "Head of household"),
    "household_members": ("세대원 수", "Household members"),
    "marital_status": ("혼인 여부", "Marital status"),
    "children": ("자녀", "Children"),
    "year": ("귀속 연도", "Year"),
    "total_income": ("총소득", "Total income"),
    "tax_paid": ("납부 세액", "Tax paid"),
    "employer": ("근무처", "Employer"),
    "unique_number": ("고유번호", "Unique number"),
    "property_kind": ("부동산 종류", "Property kind"),
    "area_m2": ("면적 (㎡)", "Area (m²)"),
    "registered_on": ("등기일", "Registered on"),
    "owners": ("소유자", "Owners"),
    "mortgages": ("근저당", "Mortgages"),
    "report_number": ("신고 번호", "Report number"),
    "property_unique_number": ("부동산 고유번호", "Property unique number"),
    "property_address": ("부동산 소재지", "Property address"),
    "price": ("거래 가격", "Price"),
    "contract_date": ("계약일", "Contract date"),
    "balance_date": ("잔금일", "Balance date"),
    "seller_name": ("매도인", "Seller"),
    "buyer_name": ("매수인", "Buyer"),
    "road_address": ("도로명 주소", "Road address"),
    "detail": ("상세 주소", "Detail"),
    "postal_code": ("우편번호", "Postal code"),
    "bank_code": ("은행 코드", "Bank code"),
    "bank_name": ("은행", "Bank"),
    "account_number": ("계좌번호", "Account number"),
    "holder_name": ("예금주", "Account holder"),
    "share": ("지분", "Share"),
    "creditor": ("채권자", "Creditor"),
    "max_amount": ("채권 최고액", "Maximum amount"),
}


def parse_lang(value: str | None) -> Lang | None:
    """``ko`` or ``en`` (case-insensitive), else ``None``."""
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered == "ko":
        return "ko"
    if lowered == "en":
        return "en"
    return None


def translate(lang: Lang, key: str, **values: object) -> str:
    """The string for ``key`` in ``lang``; the key itself when missing (tests catch it)."""
    pair = STRINGS.get(key)
    if pair is None:
        return key
    text = pair[0] if lang == "ko" else pair[1]
    return text.format(**values) if values else text


def field_label(lang: Lang, name: str) -> str:
    """A readable label for a record field name (the name itself when unknown)."""
    pair = FIELD_LABELS.get(name)
    if pair is None:
        return name
    return pair[0] if lang == "ko" else pair[1]
