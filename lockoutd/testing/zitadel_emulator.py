"""The ZITADEL emulator's public face, and a small command line for manual runs and demos.

::

    with ZitadelEmulator() as emu:
        emu.add_user("259242039378444290", org_id="300", login_name="alice@acme.example")
        emu.add_pat("pat-1", roles={"instance": {"IAM_USER_MANAGER"}})
        httpx.post(f"{emu.base_url}/v2/users/259242039378444290/lock", json={},
                   headers={"Authorization": "Bearer pat-1"})

The implementation lives in :mod:`lockoutd.testing.zitadel`. From a shell::

    python -m lockoutd.testing.zitadel_emulator --port 8080 --pat-file /tmp/pat \\
        --user 259242039378444290:300:alice@acme.example
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from lockoutd.testing.zitadel import (
    API_AUDIENCE_SCOPE,
    CATALOGUE,
    DEFAULT_ORG_ID,
    DEFAULT_SERVICE_ACCOUNT_ID,
    INSTANCE,
    Call,
    ErrorRow,
    Errors,
    Fault,
    FaultKind,
    GrpcCode,
    UserState,
    ZitadelEmulator,
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
    "main",
]


def _user(spec: str) -> tuple[str, str, str | None, UserState]:
    """``ID:ORG[:LOGIN[:STATE]]``, STATE as ``LOCKED`` or ``USER_STATE_LOCKED``."""
    parts = spec.split(":")
    if not 2 <= len(parts) <= 4 or not all(parts[:2]):
        raise argparse.ArgumentTypeError(f"expected ID:ORG[:LOGIN[:STATE]], got {spec!r}")
    login = parts[2] if len(parts) > 2 and parts[2] else None
    state = UserState.ACTIVE
    if len(parts) == 4:
        name = parts[3].upper().removeprefix("USER_STATE_")
        try:
            state = UserState[name]
        except KeyError:
            raise argparse.ArgumentTypeError(f"unknown state {parts[3]!r}") from None
    return parts[0], parts[1], login, state


def _role(spec: str) -> tuple[str, str]:
    scope, _, role = spec.rpartition(":")
    if not scope or not role:
        raise argparse.ArgumentTypeError(f"expected SCOPE:ROLE, got {spec!r}")
    return scope, role


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lockoutd.testing.zitadel_emulator",
        description="Serve the ZITADEL emulator until interrupted.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--pat-file",
        type=Path,
        help="the service account's PAT: read from this file, or generated and written to it",
    )
    parser.add_argument("--key-file", type=Path, help="write a service-account key file here")
    parser.add_argument(
        "--role",
        type=_role,
        action="append",
        metavar="SCOPE:ROLE",
        help="membership of the service account; SCOPE is 'instance' or an org id "
        "(default: instance:IAM_USER_MANAGER)",
    )
    parser.add_argument(
        "--user",
        type=_user,
        action="append",
        default=[],
        metavar="ID:ORG[:LOGIN[:STATE]]",
        help="add a user; may be repeated",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    roles: dict[str, set[str]] = {}
    for scope, role in args.role or [(INSTANCE, "IAM_USER_MANAGER")]:
        roles.setdefault(scope, set()).add(role)

    emulator = ZitadelEmulator(args.host, args.port)
    for user_id, org_id, login_name, state in args.user:
        emulator.add_user(user_id, org_id=org_id, login_name=login_name, state=state)
    if args.pat_file is not None:
        if args.pat_file.exists():
            token = args.pat_file.read_text().strip()
        else:
            token = secrets.token_urlsafe(32)
            args.pat_file.write_text(token + "\n")
        emulator.add_pat(token, roles=roles)
    if args.key_file is not None:
        key_file = emulator.add_service_account_key(roles=roles)
        args.key_file.write_text(json.dumps(key_file, indent=2) + "\n")

    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with emulator:
        print(f"ZITADEL emulator serving on {emulator.base_url}", file=sys.stderr, flush=True)
        while not stopping.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
