"""A ZITADEL emulator for tests and demos, served over real HTTP on loopback.

Import it as ``lockoutd.testing.zitadel_emulator``. The modules, in reading order:
``errors`` (the error catalogue), ``state`` (the instance's data and auth rules), ``api`` (the
endpoints), ``oauth`` (the token endpoint), ``faults`` and ``server`` (HTTP, threads, call log).
"""

from lockoutd.testing.zitadel.errors import CATALOGUE, ErrorRow, Errors, GrpcCode
from lockoutd.testing.zitadel.faults import Fault, FaultKind
from lockoutd.testing.zitadel.server import Call, ZitadelEmulator
from lockoutd.testing.zitadel.state import (
    API_AUDIENCE_SCOPE,
    DEFAULT_ORG_ID,
    DEFAULT_SERVICE_ACCOUNT_ID,
    INSTANCE,
    UserState,
)

__all__ = [
    "API_AUDIENCE_SCOPE",
    "CATALOGUE",
    "DEFAULT_ORG_ID",
    "DEFAULT_SERVICE_ACCOUNT_ID",
    "INSTANCE",
    "Call",
    "ErrorRow",
    "Errors",
    "Fault",
    "FaultKind",
    "GrpcCode",
    "UserState",
    "ZitadelEmulator",
]
