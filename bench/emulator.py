"""The ZITADEL emulator in a process of its own, so the benchmark's load does not slow it.

Every lock call it receives is written (user id and arrival time by the wall clock) to
``--calls-out``, rewritten at most every 0.2 s while calls come in, and once more on SIGTERM.

    python -m bench.emulator --port 8099 --pat-file pat --users attacked.txt --calls-out calls.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from lockoutd.testing.zitadel_emulator import ZitadelEmulator

ORG_ID = "300"


def _dump(emulator: ZitadelEmulator, path: Path) -> int:
    calls = [{"user_id": c.user_id, "at": c.at, "status": c.status} for c in emulator.lock_calls()]
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(calls), encoding="utf-8")
    os.replace(temporary, path)
    return len(calls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.emulator")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pat-file", type=Path, required=True)
    parser.add_argument("--users", type=Path, action="append", default=[])
    parser.add_argument("--calls-out", type=Path, required=True)
    args = parser.parse_args(argv)
    emulator = ZitadelEmulator("127.0.0.1", args.port)
    emulator.add_org(ORG_ID)
    for users in args.users:
        for user in users.read_text(encoding="utf-8").split():
            emulator.add_user(user, org_id=ORG_ID)
    emulator.add_pat(
        args.pat_file.read_text(encoding="utf-8").strip(),
        roles={"instance": {"IAM_USER_MANAGER"}},
        org_id=ORG_ID,
    )
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with emulator:
        print(f"ready {emulator.base_url}", flush=True)
        written = -1
        while not stopping.wait(0.2):
            if len(emulator.lock_calls()) != written:
                written = _dump(emulator, args.calls_out)
        _dump(emulator, args.calls_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
