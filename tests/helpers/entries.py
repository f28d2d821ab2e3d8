"""Hypothesis strategies for audit entry values (DESIGN section 7's token alphabet)."""

from __future__ import annotations

import string

from hypothesis import strategies as st

from audit.models import MAX_INT

TOKEN_ALPHABET = string.ascii_letters + string.digits + "_.:-"
#: Strings an entry accepts.
tokens = st.text(TOKEN_ALPHABET, max_size=128)
optional_tokens = st.none() | tokens
versions = st.integers(0, MAX_INT)
