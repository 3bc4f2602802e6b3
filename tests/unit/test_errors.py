"""Which error a task group's failure is reported as (README, "Operations")."""

from __future__ import annotations

from lockoutd.errors import KafkaUnavailable, ZitadelConfigError, reported_error


def test_a_refusal_inside_nested_task_groups_is_reported_as_itself() -> None:
    refusal = ZitadelConfigError("ZITADEL knows no org 999")
    inner = ExceptionGroup("lock calls", [refusal, ZitadelConfigError("the same, again")])
    outer = ExceptionGroup("daemon tasks", [inner])
    assert reported_error(outer) is refusal


def test_a_group_with_an_unforeseen_fault_is_reported_whole() -> None:
    group = ExceptionGroup("daemon tasks", [KafkaUnavailable("down"), KeyError("bug")])
    assert reported_error(group) is group


def test_an_error_outside_a_group_is_itself() -> None:
    error = ValueError("plain")
    assert reported_error(error) is error
