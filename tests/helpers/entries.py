"""Hypothesis strategies for audit entries and their values (DESIGN section 7)."""

from __future__ import annotations

import string

from hypothesis import strategies as st

from audit.models import ACTOR_TYPES, MAX_INT, OUTCOMES, EntryDraft, Item

TOKEN_ALPHABET = string.ascii_letters + string.digits + "_.:-"
#: Strings an entry accepts.
tokens = st.text(TOKEN_ALPHABET, max_size=128)
optional_tokens = st.none() | tokens
versions = st.integers(0, MAX_INT)
#: Valid items of a data.read entry (fields a tuple or, as the contract allows, a list).
items = st.lists(
    st.builds(
        Item,
        type=tokens,
        version=versions,
        fields=st.lists(tokens, max_size=4).map(tuple) | st.lists(tokens, max_size=4),
    ),
    max_size=4,
).map(tuple)


@st.composite
def drafts(draw: st.DrawFn) -> EntryDraft:
    """A valid draft: every field within the contract."""
    action = draw(st.sampled_from(["data.read", "record.put", "consent.granted"]) | tokens)
    return EntryDraft(
        action=action,
        actor_type=draw(st.sampled_from(sorted(ACTOR_TYPES))),
        actor_id=draw(optional_tokens),
        outcome=draw(st.sampled_from(sorted(OUTCOMES))),
        citizen_id=draw(optional_tokens),
        client_id=draw(optional_tokens),
        consent_id=draw(optional_tokens),
        purpose=draw(optional_tokens),
        record_type=draw(optional_tokens),
        record_version=draw(st.none() | versions),
        items=draw(st.none() | items) if action == "data.read" else None,
        reason_code=draw(optional_tokens),
        request_id=draw(optional_tokens),
    )
