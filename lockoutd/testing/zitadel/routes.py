"""Which handler answers which request, decided on the raw path.

Routing splits the path as sent, before any percent-decoding, and decodes only the captured
segment: an id containing ``%2F`` stays one id (and simply does not exist) instead of reaching
another endpoint. Unknown paths and methods get grpc-gateway's own routing errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

from lockoutd.testing.zitadel.api import (
    V1_LOCK,
    V1_UNLOCK,
    V2_LOCK,
    V2_UNLOCK,
    Handler,
    my_memberships,
    my_permissions,
    my_user,
    v1_change,
    v1_get_user,
    v1_list_users,
    v1_user_by_login_name,
    v2_change,
    v2_get_user,
    v2_list_users,
)
from lockoutd.testing.zitadel.errors import ApiError, GrpcCode, gateway_error
from lockoutd.testing.zitadel.oauth import token_endpoint


@dataclass(frozen=True, slots=True)
class Route:
    """``pattern`` segments are literals, or ``*`` for one captured segment."""

    method: str
    pattern: tuple[str, ...]
    operation: str
    handler: Handler

    def capture(self, segments: Sequence[str]) -> tuple[str, ...] | None:
        """The decoded captures if the raw ``segments`` fit the pattern."""
        if len(segments) != len(self.pattern):
            return None
        captured: list[str] = []
        for want, got in zip(self.pattern, segments, strict=True):
            if want == "*":
                captured.append(unquote(got))
            elif want != got:
                return None
        return tuple(captured)


def _route(method: str, path: str, operation: str, handler: Handler) -> Route:
    return Route(method, tuple(path.strip("/").split("/")), operation, handler)


LOCK_OPERATIONS: Final = frozenset({"v1.lock", "v2.lock", "v2beta.lock"})

# fmt: off
ROUTES: Final[tuple[Route, ...]] = (
    _route("POST", "/management/v1/users/_search",      "v1.list_users",   v1_list_users),
    _route("GET",  "/management/v1/global/users/_by_login_name", "v1.user_by_login_name",
           v1_user_by_login_name),
    _route("POST", "/management/v1/users/*/_lock",      "v1.lock",         v1_change(V1_LOCK)),
    _route("POST", "/management/v1/users/*/_unlock",    "v1.unlock",       v1_change(V1_UNLOCK)),
    _route("GET",  "/management/v1/users/*",            "v1.get_user",     v1_get_user),
    _route("POST", "/v2/users",                         "v2.list_users",   v2_list_users),
    _route("POST", "/v2/users/*/lock",                  "v2.lock",         v2_change(V2_LOCK)),
    _route("POST", "/v2/users/*/unlock",                "v2.unlock",       v2_change(V2_UNLOCK)),
    _route("GET",  "/v2/users/*",                       "v2.get_user",     v2_get_user),
    _route("POST", "/v2beta/users/*/lock",              "v2beta.lock",     v2_change(V2_LOCK)),
    _route("POST", "/v2beta/users/*/unlock",            "v2beta.unlock",   v2_change(V2_UNLOCK)),
    _route("POST", "/auth/v1/permissions/zitadel/me/_search", "auth.my_permissions",
           my_permissions),
    _route("GET",  "/auth/v1/users/me",                 "auth.my_user",    my_user),
    _route("POST", "/auth/v1/memberships/me/_search",   "auth.my_memberships", my_memberships),
    _route("POST", "/oauth/v2/token",                   "oauth.token",     token_endpoint),
)
# fmt: on


@dataclass(frozen=True, slots=True)
class Match:
    route: Route
    params: tuple[str, ...]

    @property
    def user_id(self) -> str | None:
        """The user the request is about, when its path names one."""
        return self.params[0] if self.params else None


def resolve(method: str, raw_path: str) -> Match | ApiError:
    """The route for a request, or the routing error grpc-gateway would answer."""
    segments = raw_path.strip("/").split("/")
    path_matched = False
    for route in ROUTES:
        params = route.capture(segments)
        if params is None:
            continue
        if route.method == method:
            return Match(route, params)
        path_matched = True
    if path_matched:  # ZITADEL's routing error handler keeps 405 but sends code 12
        return ApiError(gateway_error(GrpcCode.UNIMPLEMENTED, "Method Not Allowed"), status=405)
    return ApiError(gateway_error(GrpcCode.NOT_FOUND, "Not Found"))
