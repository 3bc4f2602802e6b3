"""The emulated ZITADEL instance: orgs, users, service accounts, their roles, tokens and keys.

Plain data and synchronous rules, no HTTP and no locking: the emulator serialises every access
under one lock. Checks raise :class:`~.errors.ApiError` with a row of the catalogue, so the HTTP
layer only picks which rows apply to which endpoint.
"""

from __future__ import annotations

import enum
import itertools
import secrets
import time
from collections.abc import Iterator, Mapping, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from lockoutd.testing.zitadel.errors import ApiError, ErrorRow, Errors


class UserState(enum.StrEnum):
    """A user's state, valued as ZITADEL's enum names (v1 numbering differs from v2's)."""

    ACTIVE = "USER_STATE_ACTIVE"
    INACTIVE = "USER_STATE_INACTIVE"
    LOCKED = "USER_STATE_LOCKED"
    INITIAL = "USER_STATE_INITIAL"
    DELETED = "USER_STATE_DELETED"
    SUSPEND = "USER_STATE_SUSPEND"


INSTANCE: Final = "instance"
"""The membership scope of instance-wide (``IAM_*``) roles; any other scope is an org id."""

# cmd/defaults.yaml InternalAuthZ.RolePermissionMappings, reduced to the permissions the
# emulated endpoints check (reference §5). A role not listed here grants nothing.
_USER_MANAGER = frozenset({"user.read", "user.global.read", "user.write"})
_OWNER = _USER_MANAGER | {"user.delete", "user.credential.write", "org.read"}
ROLE_PERMISSIONS: Final[Mapping[str, frozenset[str]]] = {
    "ORG_USER_MANAGER": _USER_MANAGER,
    "ORG_OWNER": _OWNER,
    "ORG_OWNER_VIEWER": frozenset({"user.read", "user.global.read", "org.read"}),
    "IAM_USER_MANAGER": _USER_MANAGER,
    "IAM_OWNER": _OWNER | {"iam.read", "iam.write", "events.read", "action.target.write"},
    "IAM_OWNER_VIEWER": frozenset({"user.read", "user.global.read", "iam.read", "events.read"}),
}

DEFAULT_ORG_ID: Final = "100000000000000000"
"""The org every instance starts with (ZITADEL's first org); service accounts live here."""
DEFAULT_SERVICE_ACCOUNT_ID: Final = "100000000000000001"
NO_EXPIRY: Final = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
"""What ZITADEL stores when a PAT or key has no expiry (internal/domain/expiration.go)."""
API_AUDIENCE_SCOPE: Final = "urn:zitadel:iam:org:project:id:zitadel:aud"


@dataclass(slots=True)
class Org:
    id: str
    name: str


@dataclass(slots=True)
class User:
    """A human or machine user. ``login_name`` doubles as the username and preferred login
    name; ``other_login_names`` are further names ZITADEL knows the user by (one per verified
    domain of its org, say)."""

    id: str
    org_id: str
    login_name: str
    state: UserState
    machine: bool
    created_at: datetime
    changed_at: datetime
    sequence: int
    other_login_names: list[str] = field(default_factory=list)

    @property
    def login_names(self) -> list[str]:
        """Every login name, the preferred one first (``loginNames`` in the API)."""
        return [self.login_name, *self.other_login_names]


@dataclass(slots=True)
class Token:
    """A bearer token: a PAT (no expiry) or an access token issued by the token endpoint."""

    user_id: str
    expires_at: float | None
    api_audience: bool
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class MachineKey:
    key_id: str
    user_id: str
    public_key: RSAPublicKey
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent an authenticated request, and the org it acts in (``x-zitadel-orgid`` or own)."""

    user_id: str
    org_id: str


@dataclass
class Instance:
    """One ZITADEL instance. Not thread-safe; see the module docstring."""

    orgs: dict[str, Org] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    roles: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    keys: dict[str, MachineKey] = field(default_factory=dict)
    sequence: int = 0
    issuer: str = ""
    """The instance URL: what a JWT assertion's ``aud`` must contain."""
    access_token_lifetime: float = 43200.0
    """Seconds an issued access token stays valid; ZITADEL's default is 12h."""
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(200000000000000000))

    def __post_init__(self) -> None:
        self.add_org(DEFAULT_ORG_ID, "ZITADEL")

    # -- setup ------------------------------------------------------------------------------

    def new_id(self) -> str:
        """A fresh ZITADEL-style numeric id."""
        return str(next(self._ids))

    def next_sequence(self) -> int:
        """Count one more event in the instance (what list answers show as processedSequence)."""
        self.sequence += 1
        return self.sequence

    def add_org(self, org_id: str, name: str = "") -> Org:
        org = self.orgs.get(org_id)
        if org is None:
            org = self.orgs[org_id] = Org(org_id, name or f"org-{org_id}")
        elif name:
            org.name = name
        return org

    def add_user(
        self,
        user_id: str,
        *,
        org_id: str,
        login_name: str | None,
        state: UserState,
        machine: bool,
    ) -> User:
        if user_id in self.users:
            raise ValueError(f"user {user_id!r} exists already")
        login_name = login_name or f"user-{user_id}"
        if self.user_by_login_name(login_name) is not None:
            raise ValueError(f"login name {login_name!r} is taken")
        self.add_org(org_id)
        now = datetime.now(UTC)
        self.next_sequence()
        user = User(user_id, org_id, login_name, state, machine, now, now, sequence=1)
        self.users[user_id] = user
        return user

    def user(self, user_id: str) -> User:
        """The user with this id, deleted or not; KeyError if it was never added."""
        try:
            return self.users[user_id]
        except KeyError:
            raise KeyError(f"no user {user_id!r} in the emulator") from None

    def change_state(self, user: User, state: UserState) -> None:
        """Record an event that puts ``user`` into ``state``.

        As in ZITADEL's eventstore, a user's ``sequence`` counts the events of that user alone
        (one more per change) and ``changed_at`` is the newest event's time; a lock or unlock
        answers them, and a read of the user shows them until the next change.
        """
        self.next_sequence()
        user.state = state
        user.changed_at = datetime.now(UTC)
        user.sequence += 1

    def service_account(self, user_id: str, org_id: str | None) -> User:
        """The machine user behind a PAT or key, created in ``org_id`` (or the default org)."""
        existing = self.users.get(user_id)
        if existing is None:
            return self.add_user(
                user_id,
                org_id=org_id or DEFAULT_ORG_ID,
                login_name=f"service-account-{user_id}",
                state=UserState.ACTIVE,
                machine=True,
            )
        if org_id is not None and org_id != existing.org_id:
            raise ValueError(f"user {user_id!r} belongs to org {existing.org_id!r}, not {org_id!r}")
        return existing

    def set_roles(self, user_id: str, roles: Mapping[str, Set[str]] | None) -> None:
        """Replace a user's memberships: scope (``"instance"`` or an org id) -> role names."""
        memberships: dict[str, frozenset[str]] = {}
        for scope, names in (roles or {}).items():
            for name in names:
                if name.startswith("IAM_") != (scope == INSTANCE):
                    raise ValueError(f"role {name!r} cannot be granted on scope {scope!r}")
            if scope != INSTANCE:
                self.add_org(scope)
            if names:
                memberships[scope] = frozenset(names)
        self.roles[user_id] = memberships

    def add_pat(self, token: str, user_id: str) -> None:
        """A personal access token: no expiry, valid for the API."""
        self.tokens[token] = Token(user_id, expires_at=None, api_audience=True)

    def issue_token(self, user_id: str, *, api_audience: bool) -> tuple[str, float]:
        """A new opaque access token and the time it expires at."""
        token = secrets.token_urlsafe(32)
        expires_at = time.time() + self.access_token_lifetime
        self.tokens[token] = Token(user_id, expires_at, api_audience)
        return token, expires_at

    # -- lookups ----------------------------------------------------------------------------

    def find_user(self, user_id: str, *, org_id: str | None = None) -> User | None:
        """The live (not deleted) user with this id, optionally only within one org."""
        user = self.users.get(user_id)
        if user is None or user.state is UserState.DELETED:
            return None
        if org_id is not None and user.org_id != org_id:
            return None
        return user

    def live_users(self) -> list[User]:
        return [u for u in self.users.values() if u.state is not UserState.DELETED]

    def user_by_login_name(self, login_name: str) -> User | None:
        """Exact match, ignoring case (ZITADEL lower-cases the name before the lookup)."""
        wanted = login_name.lower()
        for user in self.live_users():
            if any(name.lower() == wanted for name in user.login_names):
                return user
        return None

    def add_login_name(self, user_id: str, login_name: str) -> None:
        """Give a user one more login name, as a newly verified org domain does."""
        if self.user_by_login_name(login_name) is not None:
            raise ValueError(f"login name {login_name!r} is taken")
        self.user(user_id).other_login_names.append(login_name)

    # -- authentication and authorization ---------------------------------------------------

    def authenticate(self, authorization: str | None, org_header: str | None) -> Caller:
        """Check the bearer token, then the org header (internal/api/authz/context.go order)."""
        if authorization is None:
            raise ApiError(Errors.AUTH_HEADER_MISSING)
        scheme, _, value = authorization.partition(" ")
        if scheme != "Bearer" or not value:
            raise ApiError(Errors.INVALID_AUTH_HEADER)
        token = self.tokens.get(value)
        if (
            token is None
            or token.revoked
            or not token.api_audience
            or (token.expires_at is not None and token.expires_at <= time.time())
        ):
            raise ApiError(Errors.TOKEN_INVALID)
        caller = self.find_user(token.user_id)
        if caller is None:
            raise ApiError(Errors.TOKEN_INVALID)
        org_id = org_header or caller.org_id
        if org_id not in self.orgs:
            raise ApiError(Errors.ORG_NOT_FOUND)
        return Caller(caller.id, org_id)

    def permissions(self, user_id: str, org_id: str) -> frozenset[str] | None:
        """What ``user_id``'s instance and ``org_id`` memberships allow; None without any."""
        memberships = self.roles.get(user_id, {})
        names = memberships.get(INSTANCE, frozenset()) | memberships.get(org_id, frozenset())
        if not names:
            return None
        return frozenset().union(*(ROLE_PERMISSIONS.get(name, frozenset()) for name in names))

    def require(self, caller: Caller, org_id: str, permission: str, denied: ErrorRow) -> None:
        """Raise unless the caller holds ``permission`` in ``org_id`` (permissions.go)."""
        granted = self.permissions(caller.user_id, org_id)
        if granted is None:
            raise ApiError(Errors.NO_MEMBERSHIP)
        if permission not in granted:
            raise ApiError(denied)

    def may(self, caller: Caller, org_id: str, permission: str) -> bool:
        return permission in (self.permissions(caller.user_id, org_id) or ())

    def machine_key(self, key_id: str, user_id: str) -> MachineKey | None:
        key = self.keys.get(key_id)
        if key is None or key.user_id != user_id or key.expires_at <= datetime.now(UTC):
            return None
        return key
