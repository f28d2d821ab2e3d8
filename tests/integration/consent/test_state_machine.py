"""A Hypothesis state machine drives the consent lifecycle against a simple model.

request / approve / reject / revoke / read / advance the clock / narrow the catalogue,
on both engines; any divergence between the service and the model fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from api.runtime import Runtime
from consent.errors import ConsentError, ConsentNotFound, ConsentStateConflict
from consent.models import DAY_MS, PENDING_TTL_MS
from tests.conftest import ENGINES, runtime_on_its_own_loop
from tests.helpers.reads import consented_read
from vault.clock import ManualClock
from vault.service import Actor

FIELDS = ("year", "total_income", "employer")
_counter = itertools.count()


@dataclasses.dataclass
class Model:
    citizen: str
    status: str = "pending"
    created_at: int = 0
    valid_until: int | None = None
    fetches: int = 0
    once: bool = False
    fields: frozenset[str] = frozenset(FIELDS)

    def effective(self, now: int) -> str:
        if self.status == "active" and self.valid_until is not None and now >= self.valid_until:
            return "expired"
        if self.status == "pending" and now >= self.created_at + PENDING_TTL_MS:
            return "expired"
        return self.status


DENIAL = {
    "pending": "consent_not_active",
    "rejected": "consent_not_active",
    "revoked": "consent_revoked",
    "expired": "consent_expired",
    "exhausted": "consent_exhausted",
}


class ConsentMachine(RuleBasedStateMachine):
    loop: asyncio.AbstractEventLoop
    runtime: Runtime

    def __init__(self) -> None:
        super().__init__()
        self.models: dict[str, Model] = {}
        self.allowed = set(FIELDS)  # what the current catalogue's purpose allows for the type

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @initialize()
    def fresh_catalogue(self) -> None:
        self.runtime.catalogue = self.base_catalogue
        self.allowed = set(FIELDS)

    @property
    def clock(self) -> ManualClock:
        clock = self.runtime.clock
        assert isinstance(clock, ManualClock)
        return clock

    @precondition(lambda self: self.allowed)
    @rule(once=st.booleans(), days=st.integers(1, 30))
    def request(self, once: bool, days: int) -> None:
        citizen = f"cit_sm{next(_counter)}"
        consents = self.runtime.consents
        assert consents is not None
        consent, created = self.run(
            consents.request(
                citizen_id=citizen,
                client_id="kbank",
                purpose="mortgage_screening",
                items=[{"type": "income_certificate", "fields": sorted(self.allowed)}],
                access="once" if once else "standing",
                valid_days=days,
                max_fetches=None,
                case_reference=None,
                actor=Actor("client", "kbank"),
            )
        )
        assert created
        self.models[consent.consent_id] = Model(
            citizen, created_at=self.clock.now_ms(), once=once, fields=frozenset(self.allowed)
        )
        self.days = getattr(self, "days", {})
        self.days[consent.consent_id] = days

    def _transition(self, name: str, allowed: set[str], to: str, data: st.DataObject) -> None:
        consent_id = data.draw(st.sampled_from(sorted(self.models)))
        model = self.models[consent_id]
        consents = self.runtime.consents
        assert consents is not None
        method = getattr(consents, name)
        now = self.clock.now_ms()
        current = model.effective(now)
        wrong_citizen = data.draw(st.booleans())
        if wrong_citizen:
            with pytest.raises(ConsentNotFound):
                self.run(method(consent_id, citizen_id="cit_nobody", actor=Actor("citizen", None)))
            return
        if current in allowed:
            result = self.run(
                method(consent_id, citizen_id=model.citizen, actor=Actor("citizen", None))
            )
            assert result.status.value == to
            model.status = to
            if to == "active":
                model.valid_until = now + self.days[consent_id] * DAY_MS
        else:
            with pytest.raises(ConsentStateConflict):
                self.run(method(consent_id, citizen_id=model.citizen, actor=Actor("citizen", None)))
            if current == "expired":
                model.status = "expired"

    @precondition(lambda self: self.models)
    @rule(data=st.data())
    def approve(self, data: st.DataObject) -> None:
        self._transition("approve", {"pending"}, "active", data)

    @precondition(lambda self: self.models)
    @rule(data=st.data())
    def reject(self, data: st.DataObject) -> None:
        self._transition("reject", {"pending"}, "rejected", data)

    @precondition(lambda self: self.models)
    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        self._transition("revoke", {"active"}, "revoked", data)

    @precondition(lambda self: self.models)
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        consent_id = data.draw(st.sampled_from(sorted(self.models)))
        model = self.models[consent_id]
        consents = self.runtime.consents
        assert consents is not None
        result, _ = self.run(consented_read(consents, consent_id, client_id="kbank"))
        current = model.effective(self.clock.now_ms())
        if current == "expired":
            model.status = "expired"
        if current != "active":
            assert isinstance(result, ConsentError)
            assert result.code == DENIAL[current]
            return
        released = model.fields & self.allowed
        if not released:
            assert isinstance(result, ConsentError)
            assert result.code == "scope_not_consented"
            return
        assert result == {"income_certificate": tuple(sorted(released))}
        model.fetches += 1
        if model.once:
            model.status = "exhausted"

    @rule(days=st.sampled_from([0.5, 1, 3, 8, 31]))
    def advance(self, days: float) -> None:
        self.clock.advance(days=days)

    @rule(keep=st.sets(st.sampled_from(FIELDS)))
    def narrow(self, keep: set[str]) -> None:
        """Change the purpose's fields: narrowing applies at once, widening never widens."""
        catalogue = self.base_catalogue
        purpose = catalogue.purposes["mortgage_screening"]
        items = dict(purpose.items)
        if keep:
            items["income_certificate"] = tuple(sorted(keep))
        else:
            items.pop("income_certificate")
        changed = dataclasses.replace(purpose, items=MappingProxyType(items))
        self.runtime.catalogue = dataclasses.replace(
            catalogue,
            purposes=MappingProxyType({**catalogue.purposes, "mortgage_screening": changed}),
        )
        self.allowed = set(keep)

    @invariant()
    def statuses_agree(self) -> None:
        consents = self.runtime.consents
        if consents is None or not self.models:
            return
        now = self.clock.now_ms()
        for consent_id, model in self.models.items():
            listed = self.run(consents.list_for_citizen(model.citizen))
            assert [c.consent_id for c in listed] == [consent_id]
            assert listed[0].status.value == model.effective(now), consent_id
            assert listed[0].fetch_count == model.fetches


@pytest.mark.parametrize("engine", ENGINES)
def test_consent_state_machine(engine: str) -> None:
    with runtime_on_its_own_loop(engine) as (loop, runtime):
        ConsentMachine.loop = loop
        ConsentMachine.runtime = runtime
        ConsentMachine.base_catalogue = runtime.current_catalogue()  # type: ignore[attr-defined]
        ConsentMachine.TestCase.settings = settings(
            max_examples=25, stateful_step_count=20, deadline=None
        )
        ConsentMachine.TestCase().runTest()
