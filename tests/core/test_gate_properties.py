"""Property (a): for any sequence of edits, submissions, approvals, rejections and role changes,
a draft is approved exactly when a quorum of eligible, distinct Decision Makers approved its
current content hash. The real services run against the real database; a small model of the
rules predicts every outcome and every count."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from comms import flows
from comms.db import Database
from comms.destinations import service as destinations
from comms.drafts import service as drafts
from comms.enums import Platform, Role, Severity
from comms.errors import CommsError, PermissionDenied, RuleViolation
from comms.incidents import service as incidents
from comms.settings import Settings, load_settings
from comms.users import service as users
from tests.factories import PASSWORD

T = TypeVar("T")
EDITORS = ("cm", "cm2", "dual")
DECIDERS = ("dm1", "dm2", "dm3", "dual")
_counter = itertools.count()
ROLES = {
    "cm": [Role.COMMS_MANAGER],
    "cm2": [Role.COMMS_MANAGER],
    "dual": [Role.COMMS_MANAGER, Role.DECISION_MAKER],
    "dm1": [Role.DECISION_MAKER],
    "dm2": [Role.DECISION_MAKER],
    "dm3": [Role.DECISION_MAKER],
    "lead": [Role.INCIDENT_LEADER],
}


class GateMachine(RuleBasedStateMachine):
    url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.db = Database(self.url)
        self.suffix = str(next(_counter))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.db.dispose())
        self.loop.close()

    @initialize(quorum=st.integers(min_value=1, max_value=3))
    def setup(self, quorum: int) -> None:
        self.quorum = quorum
        self.settings: Settings = load_settings(
            database_url=self.url, approval_quorum={"P1": quorum}
        )

        async def build() -> int:
            async with self.db.transaction() as session:
                for name, rs in ROLES.items():
                    await users.create(
                        session, username=f"{name}-{self.suffix}", password=PASSWORD, roles=rs
                    )
                lead = await users.require_user(session, username=f"lead-{self.suffix}")
                inc = await incidents.open_incident(
                    session, title="Exploit", actor=lead, severity=Severity.P1
                )
                dest = await destinations.create(
                    session,
                    name=f"dest-{self.suffix}",
                    platform=Platform.DISCORD,
                    target="123456789012345678",
                    actor=None,
                )
                cm = await users.require_user(session, username=f"cm-{self.suffix}")
                draft = await drafts.create(
                    session,
                    incident=inc,
                    template="custom",
                    variables={"message": "v0"},
                    destinations=[dest],
                    actor=cm,
                    settings=self.settings,
                )
                return draft.id

        self.draft_id = self.run(build())
        # The model.
        self.version = 1
        self.status = "draft"
        self.contributors = {"cm"}  # whoever wrote any version: the author, every editor
        self.deciders = set(DECIDERS)
        self.approved_versions: dict[str, set[int]] = {name: set() for name in DECIDERS}
        self.edits = 0

    def eligible_count(self) -> int:
        return sum(
            1
            for name in self.deciders
            if self.version in self.approved_versions[name] and name not in self.contributors
        )

    async def _act(self, username: str, action: str, **kwargs: Any) -> None:
        async with self.db.transaction() as session:
            actor = await users.require_user(session, username=f"{username}-{self.suffix}")
            draft = await drafts.require_draft(session, draft_id=self.draft_id)
            if action == "edit":
                await drafts.edit(
                    session,
                    draft=draft,
                    actor=actor,
                    settings=self.settings,
                    variables={"message": kwargs["text"]},
                )
            elif action == "submit":
                await drafts.submit(session, draft=draft, actor=actor, settings=self.settings)
            elif action == "approve":
                await drafts.approve(session, draft=draft, actor=actor, settings=self.settings)
            elif action == "reject":
                await drafts.reject(session, draft=draft, actor=actor, reason="not yet")
            elif action == "revoke":
                await flows.set_roles(
                    session, user=actor, roles=[Role.RESPONDER], actor=None, settings=self.settings
                )
            elif action == "restore":
                await flows.set_roles(
                    session,
                    user=actor,
                    roles=ROLES[username],
                    actor=None,
                    settings=self.settings,
                )

    def attempt(self, username: str, action: str, **kwargs: Any) -> type[CommsError] | None:
        try:
            self.run(self._act(username, action, **kwargs))
        except (RuleViolation, PermissionDenied) as error:
            return type(error)
        return None

    @rule(
        editor=st.sampled_from(EDITORS),
        text=st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", min_size=1, max_size=20),
    )
    def edit(self, editor: str, text: str) -> None:
        allowed = editor in ("cm", "cm2") or "dual" in self.deciders
        editable = self.status in ("draft", "in_review", "rejected", "approved")
        outcome = self.attempt(editor, "edit", text=f"{text} #{self.edits}")
        self.edits += 1
        if not (allowed and editable):
            assert outcome is not None
            return
        assert outcome is None
        self.version += 1
        self.contributors.add(editor)
        self.status = {"rejected": "draft", "approved": "in_review"}.get(self.status, self.status)

    @rule()
    def submit(self) -> None:
        outcome = self.attempt("cm", "submit")
        if self.status == "draft":
            assert outcome is None
            self.status = "in_review"
        else:
            assert outcome is RuleViolation

    @rule(who=st.sampled_from(DECIDERS))
    def approve(self, who: str) -> None:
        outcome = self.attempt(who, "approve")
        if who not in self.deciders:
            assert outcome is PermissionDenied
        elif (
            self.status != "in_review"
            or who in self.contributors
            or self.version in self.approved_versions[who]
        ):
            assert outcome is RuleViolation
        else:
            assert outcome is None
            self.approved_versions[who].add(self.version)
            if self.eligible_count() >= self.quorum:
                self.status = "approved"

    @rule(who=st.sampled_from(DECIDERS))
    def reject(self, who: str) -> None:
        outcome = self.attempt(who, "reject")
        if who not in self.deciders:
            assert outcome is PermissionDenied
        elif self.status != "in_review":
            assert outcome is RuleViolation
        else:
            assert outcome is None
            self.status = "rejected"

    @rule(who=st.sampled_from(DECIDERS))
    def revoke(self, who: str) -> None:
        assert self.attempt(who, "revoke") is None
        if who in self.deciders:
            # Their approvals are void for good; an approved draft no longer standing (nothing
            # has gone out here: no worker runs) goes back to review.
            self.approved_versions[who] = set()
            if self.status == "approved" and self.eligible_count() < self.quorum:
                self.status = "in_review"
        self.deciders.discard(who)

    @rule(who=st.sampled_from(DECIDERS))
    def restore(self, who: str) -> None:
        """The operator gives the role back: earlier approvals stay void (they approve again)."""
        assert self.attempt(who, "restore") is None
        self.deciders.add(who)

    @invariant()
    def matches_the_model(self) -> None:
        if not hasattr(self, "draft_id"):
            return

        async def read() -> tuple[str, int, int, bool]:
            async with self.db.transaction() as session:
                draft = await drafts.require_draft(session, draft_id=self.draft_id)
                state = drafts.quorum(draft, settings=self.settings)
                return draft.status, draft.version, state.have, state.met

        status, version, have, met = self.run(read())
        assert (status, version) == (self.status, self.version)
        assert have == self.eligible_count()
        # Publishable (what the worker checks) exactly when the model says a quorum stands.
        assert (status == "approved" and met) == (
            self.status == "approved" and self.eligible_count() >= self.quorum
        )
        if status == "in_review":
            assert have < self.quorum


@pytest.mark.slow
def test_gate_state_machine(database_url: str) -> None:
    GateMachine.url = database_url
    runner = GateMachine.TestCase()
    runner.settings = settings(
        max_examples=25,
        stateful_step_count=20,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    runner.runTest()
