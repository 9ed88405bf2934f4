"""Running a server as a local child process (tests and benchmarks): a free port, a start that
logs to a file, and a stop that reaches the server's worker processes too."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_process(command: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    """Start in a new session (its own process group) with output to ``log``."""
    with log.open("w") as out:
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_process_group(process: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM the process group (servers fork workers), SIGKILL what is left after ``grace_s``: of the
    group and of the process tree, since a server's workers may leave the group."""
    import psutil

    try:
        tree = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    _, alive = psutil.wait_procs(tree, timeout=max(1.0, grace_s / 3))
    for child in alive:  # psutil checks the start time, so a reused pid is never signalled
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
