"""Every error the emulator answers with, as one table, and how an error becomes HTTP.

The table follows ZITADEL's own error definitions (see ``docs/reference/``). ZITADEL raises an
error with an ID and an i18n key; grpc-gateway turns it into::

    HTTP <status from the gRPC code>
    {"code": 9,
     "message": "User is not active or initial (COMMAND-3NN8v)",
     "details": [{"@type": "type.googleapis.com/zitadel.v1.ErrorDetail",
                  "id": "COMMAND-3NN8v", "message": "User is not active or initial"}]}

Errors raised by commands and queries are translated (``message`` is the English text). Errors
raised by the interceptors run outside the translation handler, so they carry the raw key or a
literal (``Errors.Token.Invalid``, ``membership not found``). Errors without an ID (the gateway's
own, such as ``auth header missing``) have no ``details``: ZITADEL's marshaller omits empty fields.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Final


class GrpcCode(enum.IntEnum):
    """gRPC status codes (``google.golang.org/grpc/codes``)."""

    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# grpc-gateway runtime.HTTPStatusFromCode. FAILED_PRECONDITION is 400, not 412.
HTTP_STATUS: Final[dict[GrpcCode, int]] = {
    GrpcCode.CANCELLED: 499,
    GrpcCode.UNKNOWN: 500,
    GrpcCode.INVALID_ARGUMENT: 400,
    GrpcCode.DEADLINE_EXCEEDED: 504,
    GrpcCode.NOT_FOUND: 404,
    GrpcCode.ALREADY_EXISTS: 409,
    GrpcCode.PERMISSION_DENIED: 403,
    GrpcCode.RESOURCE_EXHAUSTED: 429,
    GrpcCode.FAILED_PRECONDITION: 400,
    GrpcCode.ABORTED: 409,
    GrpcCode.OUT_OF_RANGE: 400,
    GrpcCode.UNIMPLEMENTED: 501,
    GrpcCode.INTERNAL: 500,
    GrpcCode.UNAVAILABLE: 503,
    GrpcCode.DATA_LOSS: 500,
    GrpcCode.UNAUTHENTICATED: 401,
}

# The gRPC code an injected HTTP status carries (the inverse of the table above, picking the
# usual code where several map to one status; 502 has no gRPC code and stands for UNAVAILABLE).
_CODE_FOR_STATUS: Final[dict[int, GrpcCode]] = {
    400: GrpcCode.INVALID_ARGUMENT,
    401: GrpcCode.UNAUTHENTICATED,
    403: GrpcCode.PERMISSION_DENIED,
    404: GrpcCode.NOT_FOUND,
    409: GrpcCode.ALREADY_EXISTS,
    429: GrpcCode.RESOURCE_EXHAUSTED,
    499: GrpcCode.CANCELLED,
    500: GrpcCode.INTERNAL,
    501: GrpcCode.UNIMPLEMENTED,
    502: GrpcCode.UNAVAILABLE,
    503: GrpcCode.UNAVAILABLE,
    504: GrpcCode.DEADLINE_EXCEEDED,
}

DETAIL_TYPE: Final = "type.googleapis.com/zitadel.v1.ErrorDetail"


def code_for_status(status: int) -> GrpcCode:
    """The gRPC code that goes with an HTTP error status."""
    if status in _CODE_FOR_STATUS:
        return _CODE_FOR_STATUS[status]
    return GrpcCode.UNKNOWN if status >= 500 else GrpcCode.INVALID_ARGUMENT


@dataclass(frozen=True, slots=True)
class ErrorRow:
    """One row of the catalogue: what ZITADEL raises, and the text it sends.

    ``message`` is the text as sent: English for translated errors, the raw key or literal for
    the untranslated ones. ``id`` is empty for gateway errors, which carry no details.
    """

    id: str
    code: GrpcCode
    key: str
    message: str

    @property
    def status(self) -> int:
        """The HTTP status grpc-gateway answers with."""
        return HTTP_STATUS[self.code]

    def body(self) -> dict[str, Any]:
        """The JSON body grpc-gateway writes for this error."""
        if not self.id:
            return {"code": int(self.code), "message": self.message}
        return {
            "code": int(self.code),
            "message": f"{self.message} ({self.id})",
            "details": [{"@type": DETAIL_TYPE, "id": self.id, "message": self.message}],
        }


_UNAUTH, _DENIED = GrpcCode.UNAUTHENTICATED, GrpcCode.PERMISSION_DENIED
_NOTFOUND, _PRECOND = GrpcCode.NOT_FOUND, GrpcCode.FAILED_PRECONDITION
_INVALID, _EXHAUSTED = GrpcCode.INVALID_ARGUMENT, GrpcCode.RESOURCE_EXHAUSTED

# (key, English text) of the translated rows, from internal/static/i18n/en.yaml.
_NOT_FOUND = "Errors.User.NotFound", "User could not be found"
_NOT_ACTIVE = "Errors.User.ShouldBeActiveOrInitial", "User is not active or initial"
_NOT_LOCKED = "Errors.User.NotLocked", "User is not locked"
_ID_MISSING = "Errors.User.UserIDMissing", "User ID missing"


def _raw(error_id: str, code: GrpcCode, text: str) -> ErrorRow:
    """An untranslated row: the key or literal is sent as the message."""
    return ErrorRow(error_id, code, text, text)


class Errors:
    """The catalogue. Names say where a row is used; see the reference section in the comment."""

    # fmt: off
    # Interceptors, untranslated (§2b auth rows, §8 quota).
    AUTH_HEADER_MISSING  = _raw("",                   _UNAUTH,    "auth header missing")
    INVALID_AUTH_HEADER  = _raw("AUTH-toLo1",         _UNAUTH,    "invalid auth header")
    TOKEN_INVALID        = _raw("AUTH-7fs1e",         _UNAUTH,    "Errors.Token.Invalid")
    ORG_NOT_FOUND        = _raw("AUTH-Bs7Ds",         _DENIED,    "Organisation doesn't exist")
    NO_MEMBERSHIP        = _raw("AUTHZ-cdgFk",        _NOTFOUND,  "membership not found")
    NO_PERMISSION_V1     = _raw("AUTH-5mWD2",         _DENIED,    "No matching permissions found")
    NO_PERMISSION_V2     = _raw("AUTH-AWfge",         _DENIED,    "No matching permissions found")
    QUOTA_EXHAUSTED      = _raw("QUOTA-vjAy8",        _EXHAUSTED, "Quota.Access.Exhausted")
    # Lock (§2b).
    V1_LOCK_ID_MISSING   = ErrorRow("COMMAND-2M0sd",      _INVALID,  *_ID_MISSING)
    V1_LOCK_NOT_FOUND    = ErrorRow("COMMAND-5M9fs",      _NOTFOUND, *_NOT_FOUND)
    V1_LOCK_NOT_ACTIVE   = ErrorRow("COMMAND-3NN8v",      _PRECOND,  *_NOT_ACTIVE)
    V2_LOCK_ID_MISSING   = ErrorRow("COMMAND-agz3eczifm", _INVALID,  *_ID_MISSING)
    V2_LOCK_NOT_FOUND    = ErrorRow("COMMAND-450yxuqrh1", _NOTFOUND, *_NOT_FOUND)
    V2_LOCK_NOT_ACTIVE   = ErrorRow("COMMAND-lgws8wtsqf", _PRECOND,  *_NOT_ACTIVE)
    # Unlock (§2c).
    V1_UNLOCK_ID_MISSING = ErrorRow("COMMAND-M0dse",      _INVALID,  *_ID_MISSING)
    V1_UNLOCK_NOT_FOUND  = ErrorRow("COMMAND-M0dos",      _NOTFOUND, *_NOT_FOUND)
    V1_UNLOCK_NOT_LOCKED = ErrorRow("COMMAND-4M0ds",      _PRECOND,  *_NOT_LOCKED)
    V2_UNLOCK_ID_MISSING = ErrorRow("COMMAND-a9ld4xckax", _INVALID,  *_ID_MISSING)
    V2_UNLOCK_NOT_FOUND  = ErrorRow("COMMAND-x377t913pw", _NOTFOUND, *_NOT_FOUND)
    V2_UNLOCK_NOT_LOCKED = ErrorRow("COMMAND-olb9vb0oca", _PRECOND,  *_NOT_LOCKED)
    # Reading users (§3).
    USER_NOT_FOUND       = ErrorRow("QUERY-Dfbg2",        _NOTFOUND, *_NOT_FOUND)
    V1_USER_OTHER_ORG    = ErrorRow("MANAG-fpo4B",        _NOTFOUND, *_NOT_FOUND)
    # fmt: on


CATALOGUE: Final[tuple[ErrorRow, ...]] = tuple(
    row for row in vars(Errors).values() if isinstance(row, ErrorRow)
)


def gateway_error(code: GrpcCode, message: str) -> ErrorRow:
    """An error of the gateway itself (routing, request decoding, transport): no ID, no details."""
    return ErrorRow("", code, "", message)


@dataclass(eq=False)
class ApiError(Exception):
    """Raised inside a handler; the server answers it with the row's status and body."""

    row: ErrorRow
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 0
    """The HTTP status; 0 means the one the row's gRPC code maps to."""

    def __post_init__(self) -> None:
        super().__init__(self.row.message)
        self.status = self.status or self.row.status
        if self.row.code is GrpcCode.UNAUTHENTICATED:
            # grpc-gateway's DefaultHTTPErrorHandler sets this for every UNAUTHENTICATED status.
            self.headers.setdefault("WWW-Authenticate", self.row.body()["message"])
