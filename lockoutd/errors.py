"""Every exception lockoutd raises on purpose.

::

    LockoutdError
    ├── ConfigError              a setting or rule file is wrong; fix it and start again
    ├── ZitadelError
    │   ├── ZitadelConfigError   ZITADEL refuses lockoutd itself (token, permission, org)
    │   ├── ZitadelUnavailable   ZITADEL did not answer usefully after all retries (retriable)
    │   ├── UnexpectedAnswer     an answer lockoutd does not know; that one action fails
    │   │   └── EventRefused     ZITADEL refuses what one event claims (its org, its user)
    │   └── InvalidUserId        an id that could change the request path; the event is refused
    └── KafkaUnavailable         the broker could not be reached (retriable)
        └── KafkaRefused         the broker refused records for good; retrying cannot help

Outcomes such as ``already_locked`` or ``unknown_user`` are values, never exceptions. Callers read
``retriable`` instead of keeping lists of exception types. Task groups wrap what their tasks raise;
:func:`reported_error` is the one place that unwraps them.
"""

from __future__ import annotations

from typing import Any


class LockoutdError(Exception):
    """Base of every error lockoutd raises on purpose."""

    retriable: bool = False


class ConfigError(LockoutdError):
    """The configuration or a rule file is wrong.

    ``problems`` holds one ``file:line: message`` string per problem, so that every error is
    reported at once instead of one per start.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class ZitadelError(LockoutdError):
    """ZITADEL answered in a way lockoutd cannot turn into an outcome."""


class ZitadelConfigError(ZitadelError):
    """ZITADEL refuses lockoutd itself: a bad token, or a permission the service account lacks
    in its own org and on the instance (an org or a user an event names is :class:`EventRefused`).

    Skipping users quietly would leave attacks unanswered, so the daemon stops and the
    supervisor's restart loop makes the fault visible.
    """


class ZitadelUnavailable(ZitadelError):
    """ZITADEL stayed unreachable or overloaded through every retry."""

    retriable = True


class UnexpectedAnswer(ZitadelError):
    """ZITADEL answered with something lockoutd does not expect (a 409, an unknown error id).

    Repeating the request would only repeat the answer, and one odd user must not stop every
    other lock: the action's outcome is ``failed``, with this message as its error.
    """


class EventRefused(UnexpectedAnswer):
    """ZITADEL refuses what one event claims, while lockoutd itself is fine.

    The event names an org ZITADEL does not know, or a user of an org where the service account
    may not act although it can act in its own org. Anyone who can write a record can make such a
    claim, so it must not stop the daemon: that action's outcome is ``failed``. ``reason`` is
    ``unknown_org`` or ``no_permission`` (the label of ``lockoutd_refused_actions_total``).
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class InvalidUserId(ZitadelError):
    """A user id that is not a ZITADEL id and could change the request path.

    ZITADEL ids are digit strings; anything else is refused before it reaches a URL.
    """


class KafkaUnavailable(LockoutdError):
    """The Kafka cluster could not be reached."""

    retriable = True


def reported_error(error: BaseException) -> BaseException:
    """The error to report for ``error``, which a task group may have wrapped (at any depth).

    When every error in the group is one lockoutd raised on purpose (ZITADEL refusing lockoutd,
    say, met by several lock calls at once), the first of them is the one to report: its message
    says what to fix. A group holding anything else is returned whole, so that no traceback of
    an unforeseen fault is lost.
    """
    if not isinstance(error, BaseExceptionGroup):
        return error
    _, others = error.split(LockoutdError)
    if others is not None:
        return error
    first: BaseException = error
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


class KafkaRefused(KafkaUnavailable):
    """Kafka refused records for good: too large, an invalid topic, not authorized.

    Every other record of the call was delivered. It is a ``KafkaUnavailable`` for callers that
    publish one record and answer "not confirmed" either way; a caller that retries must not
    retry this one: ``refused`` holds each record with the broker's error.
    """

    retriable = False

    def __init__(self, refused: list[tuple[Any, str]]) -> None:
        self.refused = refused
        super().__init__("; ".join(error for _, error in refused))
