"""The emulated endpoints: routing, the checks each one runs in ZITADEL's order, and the JSON.

Handlers are synchronous functions of the instance and a decoded request; they return a
:class:`Reply` or raise :class:`~.errors.ApiError`. The server runs them under its lock.

Check order, which decides which error a client sees when several apply:

- v1 (``/management/v1``): token → org header → permission in the context org → id → user in
  the context org → state. A user of another org is indistinguishable from a missing one.
- v2 and v2beta (``/v2``, ``/v2beta``): token → org header (if sent) → id → user anywhere in the
  instance → state → permission on the user's own org (also when the caller acts on itself;
  only reading a user lets a caller read itself without the permission).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from lockoutd.testing.zitadel.errors import ApiError, ErrorRow, Errors, GrpcCode, gateway_error
from lockoutd.testing.zitadel.state import INSTANCE, Caller, Instance, User, UserState


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """A request as the handlers see it: path captures decoded, header names lower-case."""

    method: str
    params: tuple[str, ...]
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Instance, ApiRequest], Reply]


# -- JSON as grpc-gateway writes it -----------------------------------------------------------


def timestamp(moment: datetime) -> str:
    """protojson's Timestamp: RFC 3339 in UTC with 0, 3 or 6 fractional digits."""
    moment = moment.astimezone(UTC)
    micros = moment.microsecond
    if micros == 0:
        fraction = ""
    elif micros % 1000 == 0:
        fraction = f".{micros // 1000:03d}"
    else:
        fraction = f".{micros:06d}"
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def change_details(user: User) -> dict[str, Any]:
    """``details`` of a change response; ``creationDate`` is not filled there."""
    return {
        "sequence": str(user.sequence),
        "changeDate": timestamp(user.changed_at),
        "resourceOwner": user.org_id,
    }


def object_details(user: User) -> dict[str, Any]:
    return {
        "sequence": str(user.sequence),
        "creationDate": timestamp(user.created_at),
        "changeDate": timestamp(user.changed_at),
        "resourceOwner": user.org_id,
    }


def _profile_names(user: User) -> tuple[str, str]:
    return user.login_name.split("@", 1)[0], "User"


def _email(user: User) -> str:
    return user.login_name if "@" in user.login_name else f"{user.login_name}@example.com"


def user_v1(user: User) -> dict[str, Any]:
    """``zitadel.user.v1.User``; empty and default fields are omitted, as protojson does."""
    body: dict[str, Any] = {
        "id": user.id,
        "details": object_details(user),
        "state": str(user.state),
        "userName": user.login_name,
        "loginNames": user.login_names,
        "preferredLoginName": user.login_name,
    }
    if user.machine:
        body["machine"] = {"name": user.login_name}
    else:
        first, last = _profile_names(user)
        body["human"] = {
            "profile": {
                "firstName": first,
                "lastName": last,
                "displayName": f"{first} {last}",
                "preferredLanguage": "en",
            },
            "email": {"email": _email(user), "isEmailVerified": True},
        }
    return body


def user_v2(user: User) -> dict[str, Any]:
    """``zitadel.user.v2.User``. v2 has no SUSPEND: it maps to UNSPECIFIED, which is omitted."""
    body: dict[str, Any] = {"userId": user.id, "details": object_details(user)}
    if user.state is not UserState.SUSPEND:
        body["state"] = str(user.state)
    body |= {
        "username": user.login_name,
        "loginNames": user.login_names,
        "preferredLoginName": user.login_name,
    }
    if user.machine:
        body["machine"] = {"name": user.login_name}
    else:
        given, family = _profile_names(user)
        body["human"] = {
            "profile": {
                "givenName": given,
                "familyName": family,
                "displayName": f"{given} {family}",
                "preferredLanguage": "en",
            },
            "email": {"email": _email(user), "isVerified": True},
        }
    return body


def list_reply(
    instance: Instance, users: list[User], query: Mapping[str, Any], *, v2: bool
) -> Reply:
    """A list response; protojson omits ``totalResult`` "0" and an empty ``result``."""
    offset = _integer(query.get("offset", 0))
    limit = _integer(query.get("limit", 0)) or 100  # SystemDefaults.DefaultQueryLimit
    page = users[offset : offset + limit]
    render = user_v2 if v2 else user_v1
    details: dict[str, Any] = {}
    if users:
        details["totalResult"] = str(len(users))
    details["processedSequence"] = str(instance.sequence)
    details["timestamp" if v2 else "viewTimestamp"] = timestamp(datetime.now(UTC))
    body: dict[str, Any] = {"details": details}
    if page:
        body["result"] = [render(user) for user in page]
    return Reply(200, body)


# -- request bodies and search queries ----------------------------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _camel_keys(value: Any) -> Any:
    """protojson accepts both lowerCamelCase and the proto's snake_case field names."""
    if isinstance(value, dict):
        return {_camel(key): _camel_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_camel_keys(item) for item in value]
    return value


def json_body(request: ApiRequest) -> dict[str, Any]:
    """The JSON object body; empty counts as ``{}`` (grpc-gateway ignores io.EOF)."""
    if not request.body.strip():
        return {}
    try:
        decoded = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad_request(f"proto: syntax error: {exc}") from None
    if not isinstance(decoded, dict):
        raise _bad_request("proto: body must be an object")
    result: dict[str, Any] = _camel_keys(decoded)
    return result


def _bad_request(message: str) -> ApiError:
    return ApiError(gateway_error(GrpcCode.INVALID_ARGUMENT, message))


def _integer(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _bad_request(f"invalid integer {value!r}") from None
    if number < 0:
        raise _bad_request(f"invalid integer {value!r}")
    return number


_TEXT_METHODS: Final = (
    "TEXT_QUERY_METHOD_EQUALS",
    "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE",
    "TEXT_QUERY_METHOD_STARTS_WITH",
    "TEXT_QUERY_METHOD_STARTS_WITH_IGNORE_CASE",
    "TEXT_QUERY_METHOD_CONTAINS",
    "TEXT_QUERY_METHOD_CONTAINS_IGNORE_CASE",
    "TEXT_QUERY_METHOD_ENDS_WITH",
    "TEXT_QUERY_METHOD_ENDS_WITH_IGNORE_CASE",
)
_V1_STATES: Final = ("USER_STATE_UNSPECIFIED", "USER_STATE_ACTIVE", "USER_STATE_INACTIVE",
                     "USER_STATE_DELETED", "USER_STATE_LOCKED", "USER_STATE_SUSPEND",
                     "USER_STATE_INITIAL")  # fmt: skip
_V2_STATES: Final = ("USER_STATE_UNSPECIFIED", "USER_STATE_ACTIVE", "USER_STATE_INACTIVE",
                     "USER_STATE_DELETED", "USER_STATE_LOCKED", "USER_STATE_INITIAL")  # fmt: skip
_TYPES: Final = ("TYPE_UNSPECIFIED", "TYPE_HUMAN", "TYPE_MACHINE")


def _enum_name(value: Any, names: Sequence[str]) -> str:
    """An enum given by name or by number, as protojson accepts both."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    if isinstance(value, str) and value in names:
        return value
    raise _bad_request(f"invalid value for enum: {value!r}")


def _text_matches(query: Mapping[str, Any], field_name: str, candidate: str) -> bool:
    wanted = query.get(field_name, "")
    if not isinstance(wanted, str):
        raise _bad_request(f"{field_name} must be a string")
    method = _enum_name(query.get("method", 0), _TEXT_METHODS).removeprefix("TEXT_QUERY_METHOD_")
    if method.endswith("_IGNORE_CASE"):
        method = method.removesuffix("_IGNORE_CASE")
        wanted, candidate = wanted.lower(), candidate.lower()
    if method == "EQUALS":
        return candidate == wanted
    if method == "STARTS_WITH":
        return candidate.startswith(wanted)
    if method == "CONTAINS":
        return wanted in candidate
    return candidate.endswith(wanted)


def _query_matches(user: User, query: Any, *, v2: bool) -> bool:
    """One ``SearchQuery`` (a oneof) against a user."""
    if not isinstance(query, dict) or len(query) > 1:
        raise _bad_request("a search query must set exactly one query type")
    if not query:
        return True
    ((kind, value),) = query.items()
    if not isinstance(value, dict):
        raise _bad_request(f"{kind} must be an object")
    match kind:
        case "loginNameQuery":
            # Any of the user's login names (NewUserLoginNameExistsQuery).
            return any(_text_matches(value, "loginName", name) for name in user.login_names)
        case "userNameQuery":
            return _text_matches(value, "userName", user.login_name)
        case "inUserIdsQuery":
            return user.id in value.get("userIds", [])
        case "organizationIdQuery" if v2:
            return user.org_id == value.get("organizationId")
        case "stateQuery":
            return str(user.state) == _enum_name(
                value.get("state", 0), _V2_STATES if v2 else _V1_STATES
            )
        case "typeQuery":
            wanted_type = _enum_name(value.get("type", 0), _TYPES)
            return wanted_type == ("TYPE_MACHINE" if user.machine else "TYPE_HUMAN")
        case "andQuery":
            return all(_query_matches(user, q, v2=v2) for q in value.get("queries", []))
        case "orQuery":
            return any(_query_matches(user, q, v2=v2) for q in value.get("queries", []))
        case "notQuery":
            return not _query_matches(user, value.get("query", {}), v2=v2)
    raise ApiError(gateway_error(GrpcCode.UNIMPLEMENTED, f"emulator: {kind} is not emulated"))


def _search(users: list[User], body: Mapping[str, Any], *, v2: bool) -> list[User]:
    queries = body.get("queries", [])
    if not isinstance(queries, list):
        raise _bad_request("queries must be a list")
    return [u for u in users if all(_query_matches(u, q, v2=v2) for q in queries)]


def _list_query(body: Mapping[str, Any]) -> Mapping[str, Any]:
    query = body.get("query", {})
    if not isinstance(query, dict):
        raise _bad_request("query must be an object")
    return query


# -- handlers -----------------------------------------------------------------------------------


def _caller(instance: Instance, request: ApiRequest) -> Caller:
    return instance.authenticate(
        request.headers.get("authorization"), request.headers.get("x-zitadel-orgid")
    )


@dataclass(frozen=True, slots=True)
class StateChange:
    """Lock or unlock, with the rows one API version raises for it."""

    allowed: frozenset[UserState]
    new_state: UserState
    id_missing: ErrorRow
    not_found: ErrorRow
    wrong_state: ErrorRow


V1_LOCK: Final = StateChange(
    frozenset({UserState.ACTIVE, UserState.INITIAL}), UserState.LOCKED,
    Errors.V1_LOCK_ID_MISSING, Errors.V1_LOCK_NOT_FOUND, Errors.V1_LOCK_NOT_ACTIVE,
)  # fmt: skip
V1_UNLOCK: Final = StateChange(
    frozenset({UserState.LOCKED}), UserState.ACTIVE,
    Errors.V1_UNLOCK_ID_MISSING, Errors.V1_UNLOCK_NOT_FOUND, Errors.V1_UNLOCK_NOT_LOCKED,
)  # fmt: skip
V2_LOCK: Final = StateChange(
    frozenset({UserState.ACTIVE, UserState.INITIAL}), UserState.LOCKED,
    Errors.V2_LOCK_ID_MISSING, Errors.V2_LOCK_NOT_FOUND, Errors.V2_LOCK_NOT_ACTIVE,
)  # fmt: skip
V2_UNLOCK: Final = StateChange(
    frozenset({UserState.LOCKED}), UserState.ACTIVE,
    Errors.V2_UNLOCK_ID_MISSING, Errors.V2_UNLOCK_NOT_FOUND, Errors.V2_UNLOCK_NOT_LOCKED,
)  # fmt: skip


def v1_change(change: StateChange) -> Handler:
    """``POST /management/v1/users/{id}/_lock`` or ``_unlock``."""

    def handle(instance: Instance, request: ApiRequest) -> Reply:
        json_body(request)  # the gateway decodes the body before the call reaches ZITADEL
        caller = _caller(instance, request)
        instance.require(caller, caller.org_id, "user.write", Errors.NO_PERMISSION_V1)
        (user_id,) = request.params
        if not user_id:
            raise ApiError(change.id_missing)
        user = instance.find_user(user_id, org_id=caller.org_id)
        if user is None:
            raise ApiError(change.not_found)
        if user.state not in change.allowed:
            raise ApiError(change.wrong_state)
        instance.change_state(user, change.new_state)
        return Reply(200, {"details": change_details(user)})

    return handle


def v2_change(change: StateChange) -> Handler:
    """``POST /v2/users/{userId}/lock`` or ``unlock`` (and the same under ``/v2beta``)."""

    def handle(instance: Instance, request: ApiRequest) -> Reply:
        json_body(request)
        caller = _caller(instance, request)
        (user_id,) = request.params
        if not user_id:
            raise ApiError(change.id_missing)
        user = instance.find_user(user_id)
        if user is None:
            raise ApiError(change.not_found)
        if user.state not in change.allowed:
            raise ApiError(change.wrong_state)
        # No exception for the caller itself: since 2025-09 ZITADEL's lock and unlock
        # check user.write with allowSelfManagement false (internal/command/user_v2.go).
        instance.require(caller, user.org_id, "user.write", Errors.NO_PERMISSION_V2)
        instance.change_state(user, change.new_state)
        return Reply(200, {"details": change_details(user)})

    return handle


def v1_get_user(instance: Instance, request: ApiRequest) -> Reply:
    caller = _caller(instance, request)
    instance.require(caller, caller.org_id, "user.read", Errors.NO_PERMISSION_V1)
    user = instance.find_user(request.params[0])
    if user is None:
        raise ApiError(Errors.USER_NOT_FOUND)
    if user.org_id != caller.org_id:
        raise ApiError(Errors.V1_USER_OTHER_ORG)
    return Reply(200, {"user": user_v1(user)})


def v1_list_users(instance: Instance, request: ApiRequest) -> Reply:
    body = json_body(request)
    caller = _caller(instance, request)
    instance.require(caller, caller.org_id, "user.read", Errors.NO_PERMISSION_V1)
    in_org = [u for u in instance.live_users() if u.org_id == caller.org_id]
    return list_reply(instance, _search(in_org, body, v2=False), _list_query(body), v2=False)


def v1_user_by_login_name(instance: Instance, request: ApiRequest) -> Reply:
    caller = _caller(instance, request)
    instance.require(caller, caller.org_id, "user.global.read", Errors.NO_PERMISSION_V1)
    login_name = request.query.get("loginName", request.query.get("login_name", ""))
    if not 1 <= len(login_name) <= 200:  # the request's validate rules, checked after auth
        raise _bad_request(
            "invalid GetUserByLoginNameGlobalRequest.LoginName: value length must be between "
            "1 and 200 runes, inclusive"
        )
    # Exact, ignoring case; ZITADEL also answers not-found when more than one user matches.
    user = instance.user_by_login_name(login_name)
    if user is None:
        raise ApiError(Errors.USER_NOT_FOUND)
    return Reply(200, {"user": user_v1(user)})


def v2_get_user(instance: Instance, request: ApiRequest) -> Reply:
    caller = _caller(instance, request)
    user = instance.find_user(request.params[0])
    if user is None:
        raise ApiError(Errors.USER_NOT_FOUND)
    if user.id != caller.user_id:
        instance.require(caller, user.org_id, "user.read", Errors.NO_PERMISSION_V2)
    return Reply(200, {"details": object_details(user), "user": user_v2(user)})


def v2_list_users(instance: Instance, request: ApiRequest) -> Reply:
    """Results are filtered to users the caller may read: an empty list may mean "not allowed"."""
    body = json_body(request)
    caller = _caller(instance, request)
    readable = [
        u
        for u in instance.live_users()
        if u.id == caller.user_id or instance.may(caller, u.org_id, "user.read")
    ]
    return list_reply(instance, _search(readable, body, v2=True), _list_query(body), v2=True)


# -- the Auth API: the caller's own user, memberships and permissions ---------------------------
# It needs an authenticated caller only; x-zitadel-orgid sets the context org, as everywhere.


def my_user(instance: Instance, request: ApiRequest) -> Reply:
    """``GET /auth/v1/users/me`` (GetMyUser): the caller's own user in the v1 shape."""
    caller = _caller(instance, request)
    return Reply(200, {"user": user_v1(instance.user(caller.user_id))})


def my_memberships(instance: Instance, request: ApiRequest) -> Reply:
    """``POST /auth/v1/memberships/me/_search`` (ListMyMemberships): one entry per scope,
    ``iam`` or ``orgId``; protojson omits an empty ``result``."""
    json_body(request)
    caller = _caller(instance, request)
    result = []
    for scope, roles in sorted(instance.roles.get(caller.user_id, {}).items()):
        membership: dict[str, Any] = {"userId": caller.user_id, "roles": sorted(roles)}
        if scope == INSTANCE:
            membership["iam"] = True
        else:
            membership["orgId"] = scope
        result.append(membership)
    body: dict[str, Any] = {"details": {"processedSequence": str(instance.sequence)}}
    if result:
        body["details"]["totalResult"] = str(len(result))
        body["result"] = result
    return Reply(200, body)


def my_permissions(instance: Instance, request: ApiRequest) -> Reply:
    """``POST /auth/v1/permissions/zitadel/me/_search`` (ListMyZitadelPermissions): what the
    caller's memberships in the context org and on the instance allow; any caller may ask."""
    caller = _caller(instance, request)
    granted = instance.permissions(caller.user_id, caller.org_id) or frozenset()
    return Reply(200, {"result": sorted(granted)} if granted else {})
