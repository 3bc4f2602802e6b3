"""The demo's stack on its own, to try lockoutd by hand: a local broker and the ZITADEL emulator.

::

    python -m lockoutd.testing.stack [--dir DIR]

starts both on free loopback ports with the demo's org, users and token, creates the topics,
writes a ready configuration (``DIR/lockoutd.yaml``, the token in ``DIR/pat``), prints what to
run next, and serves until interrupted (Ctrl-C). Run lockoutd against it, send events with
:mod:`lockoutd.testing.produce`, edit the rules and watch them reload.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

from lockoutd.testing.broker import LocalBroker
from lockoutd.testing.demo import ORG, PAT, USERS, prepare
from lockoutd.testing.zitadel_emulator import ZitadelEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lockoutd.testing.stack",
        description="Serve a local Kafka broker and the ZITADEL emulator until interrupted.",
    )
    parser.add_argument(
        "--dir", type=Path, help="where to write lockoutd.yaml and pat (default: a temporary one)"
    )
    args = parser.parse_args(argv)
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with (
        tempfile.TemporaryDirectory(prefix="lockoutd-stack-") as tmp,
        LocalBroker() as broker,
        ZitadelEmulator() as emulator,
    ):
        work = args.dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        config = prepare(broker, emulator, work)
        config_file = work / "lockoutd.yaml"
        users = "\n".join(
            f"            {login:<18} {user_id}  {state.value}"
            for user_id, login, state, _, _ in USERS
        )
        print(
            f"""\
broker      {broker.bootstrap_servers} (topics {", ".join(config.topics)}, \
{config.decisions_topic}, {config.dead_letter_topic}, {config.schedule_topic})
zitadel     {emulator.base_url} (emulator; org {ORG})
token       {PAT} (in {work / "pat"})
users
{users}
config      {config_file} (rules: {", ".join(str(p) for p in config.rule_paths)})

in another shell:
  lockoutd check --connect -c {config_file}
  lockoutd run -c {config_file}
and in a third, five wrong passwords for alice:
  for i in 1 2 3 4 5; do echo '{{"type": "auth.login.failed", "user_id": \
"{USERS[0][0]}", "org_id": "{ORG}", "reason": "password"}}'; done \\
    | python -m lockoutd.testing.produce -c {config_file}
Ctrl-C stops the broker and the emulator.""",
            flush=True,
        )
        while not stopping.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
