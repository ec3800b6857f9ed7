"""Process primitives shared by the local services: pid files, ports, detached start, stop."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel


class ServiceError(RuntimeError):
    """A local service could not be fetched, started or reached; the message says why."""


class ServiceStatus(BaseModel):
    name: str
    version: str
    running: bool
    pid: int | None
    url: str
    healthy: bool


def read_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in `pid_file` if that process is alive and `marker` occurs in its command line
    or working directory (so a recycled pid of an unrelated process is not mistaken for the
    service)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    proc = Path(f"/proc/{pid}")
    try:
        identity = proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode()
        identity += " " + os.readlink(proc / "cwd")
        state = proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
    if marker not in identity or state == "Z":
        return None
    return pid


def process_alive(pid: int) -> bool:
    """True while process `pid` runs (not a zombie; one of ours is reaped). Unlike
    `read_pid` this asks nothing of its command line: between fork and exec a child started
    a moment ago still shows its parent's, and would read as gone."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def ensure_ports_free(service: str, ports: Mapping[str, int]) -> None:
    for what, port in ports.items():
        if port_open(port):
            raise ServiceError(
                f"{service}: port {port} ({what}) is already in use by another process. "
                f"Stop it (see `ss -ltnp 'sport = :{port}'`) or choose another port "
                "with the FINSENTRY_* port settings."
            )


def start_detached(
    command: Sequence[str],
    *,
    log_file: Path,
    pid_file: Path,
    env: Mapping[str, str],
    cwd: Path,
    user: str | None = None,
) -> int:
    """Start `command` in its own session (it outlives this process), output to `log_file`;
    as the OS `user` when given (needs root)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    account = pwd.getpwnam(user) if user else None
    with log_file.open("ab") as log:
        log.write(f"\n--- finsentry: starting {' '.join(command)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                user=account.pw_uid if account else None,
                group=account.pw_gid if account else None,
                extra_groups=[] if account else None,
            )
        except OSError as exc:
            raise ServiceError(f"could not run {command[0]}: {exc}") from exc
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def stop_process_group(pid: int, timeout: float = 60.0) -> None:
    """SIGTERM the service's process group, then SIGKILL it if it has not exited in time."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # The group leader may be a zombie of ours while the group is otherwise gone.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until_healthy(
    service: str,
    healthy: Callable[[], bool],
    alive: Callable[[], bool],
    *,
    timeout: float,
    log_file: Path,
) -> float:
    """Poll `healthy` until it is true; returns the seconds waited. Raises with the log file's
    location when the process dies or the timeout passes."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if healthy():
            return time.monotonic() - start
        if not alive():
            raise ServiceError(
                f"{service} exited during start-up; see {log_file}:\n{tail(log_file)}"
            )
        time.sleep(1.0)
    raise ServiceError(
        f"{service} did not become healthy within {timeout:.0f}s; see {log_file}:\n{tail(log_file)}"
    )


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
