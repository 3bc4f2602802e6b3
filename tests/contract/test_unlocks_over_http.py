"""Undoing a temporary lock through the real client and the ZITADEL emulator over HTTP, when an
answer on the path is not ZITADEL's (README, "Temporary locks and escalation")."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from lockoutd.act.schedule import UnlockSchedule
from lockoutd.act.temporary import TemporaryLocks
from lockoutd.act.unlocker import RETRY_SECONDS, UNEXPECTED_TRIES, Unlocker
from lockoutd.act.zitadel import ZitadelClient
from lockoutd.decide.decision import Decision, Outcome
from lockoutd.report.metrics import Metrics
from lockoutd.rules.model import LockAction
from lockoutd.settings import ZitadelSettings
from lockoutd.testing.zitadel_emulator import Fault, UserState, ZitadelEmulator
from tests.unit.helpers import Clock, RecordingWriter

pytestmark = pytest.mark.timeout(20)

ORG = "100000000000000001"
USER = "200000000000000001"
PAT = "pat-0123456789-secret"
TEN_MINUTES = LockAction.model_validate({"duration": "10m"})
PAGE = b"<html><body>404 Not Found</body></html>"


@pytest.fixture
async def zitadel() -> AsyncIterator[tuple[ZitadelEmulator, ZitadelClient]]:
    with ZitadelEmulator() as emu:
        emu.add_org(ORG)
        emu.add_pat(PAT, roles={"instance": {"IAM_USER_MANAGER"}})
        emu.add_user(USER, org_id=ORG)
        settings = ZitadelSettings(base_url=emu.base_url, api="v1", pat=SecretStr(PAT))
        async with ZitadelClient(settings, metrics=Metrics(), wait_initial=0.01) as client:
            yield emu, client


async def _locked_for_ten_minutes(
    client: ZitadelClient, clock: Clock
) -> tuple[Unlocker, list[Decision], float]:
    schedule = UnlockSchedule()
    writer = RecordingWriter(schedule)
    locks = TemporaryLocks(client, schedule, writer, clock=clock)
    result = await locks.lock(USER, ORG, rule="otp", action=TEN_MINUTES)
    assert result.unlock_at is not None
    reported: list[Decision] = []

    async def report(decision: Decision) -> None:
        reported.append(decision)

    unlocker = Unlocker(schedule, client, writer, owns=lambda _: True, report=report, clock=clock)
    return unlocker, reported, result.unlock_at


async def test_one_answer_that_is_not_zitadels_does_not_leave_a_temporary_lock_for_good(
    zitadel: tuple[ZitadelEmulator, ZitadelClient],
) -> None:
    """A proxy's 404 page answers the unlock once. It used to end the unlock as ``failed`` and
    the user stayed locked for good; it is tried again later, and the user is unlocked."""
    emu, client = zitadel
    clock = Clock()
    unlocker, reported, unlock_at = await _locked_for_ten_minutes(client, clock)
    emu.set_fault(Fault.answer(404, PAGE, times=1), path_contains="/_unlock")

    clock.now = unlock_at
    assert await unlocker.unlock_due() == []
    assert emu.state_of(USER) is UserState.LOCKED
    clock.now += RETRY_SECONDS
    [decision] = await unlocker.unlock_due()
    assert decision.outcome is Outcome.UNLOCKED
    assert emu.state_of(USER) is UserState.ACTIVE
    assert reported == [decision]


async def test_answers_that_are_never_zitadels_fail_the_unlock_after_a_few_tries(
    zitadel: tuple[ZitadelEmulator, ZitadelClient],
) -> None:
    """The same page every time: after a few tries the unlock is ``failed``, saying what was
    answered, and the user is left locked for an administrator (never retried without end)."""
    emu, client = zitadel
    clock = Clock()
    unlocker, _reported, unlock_at = await _locked_for_ten_minutes(client, clock)
    emu.set_fault(Fault.answer(404, PAGE), path_contains="/_unlock")

    clock.now = unlock_at
    for _ in range(UNEXPECTED_TRIES - 1):
        assert await unlocker.unlock_due() == []
        clock.now += RETRY_SECONDS
    [decision] = await unlocker.unlock_due()
    assert decision.outcome is Outcome.FAILED
    assert decision.error is not None
    assert "HTTP 404" in decision.error
    assert emu.state_of(USER) is UserState.LOCKED
    clock.now += RETRY_SECONDS
    assert await unlocker.unlock_due() == []
    assert len([c for c in emu.calls if c.path.endswith("/_unlock")]) == UNEXPECTED_TRIES
