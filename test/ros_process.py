"""Run a ROS process for a test with the test's DDS environment, and stop it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ros_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # A child must re-run the ROS wheel bootstrap of its own interpreter.
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    env["PYTHONUNBUFFERED"] = "1"
    # Children run the source tree under test, like the test process itself.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


@contextmanager
def running(
    args: Sequence[str], log: Path, extra_env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """Start `python args...` (or an executable when args[0] is a path), yield it, then SIGINT it."""
    command = [sys.executable, *args] if not args[0].startswith("/") else list(args)
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, cwd=REPO, env=ros_env(extra_env), stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
