"""The child processes of `finsentry run` (worker, alerter, background training): started so
that none outlives it, stopped within a bounded grace period.

- `interrupt_on_stop_signals`: SIGINT, SIGTERM and SIGHUP raise `KeyboardInterrupt` in the
  main thread. SIGINT is set explicitly because a process started in the background of a
  non-interactive shell (`cmd &` in a script, a CI step, a test suite run that way) inherits
  SIGINT *ignored*, and Python then installs no handler: Ctrl-C or `kill -INT` did nothing
  and `finsentry run` kept going until it was killed, leaving its children behind.
- `Supervisor.spawn`: each child leads its own process group (a stop reaches what it started
  too, and a terminal's Ctrl-C reaches only the supervisor, which stops the children in
  order), reads nothing from the terminal, and gets SIGTERM from the kernel if the supervisor
  dies without stopping it (Linux `PR_SET_PDEATHSIG`, e.g. after SIGKILL).
- `Supervisor.stop`: SIGTERM to every child's group, up to `grace_s` for them to exit
  (a second Ctrl-C stops the waiting), then SIGKILL to the groups and reap.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import NoReturn

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1
REAP_TIMEOUT_S = 10.0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def interrupt_on_stop_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt (main thread only)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _interrupt)


@contextlib.contextmanager
def _stop_signals_ignored() -> Iterator[None]:
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _child_setup(nice: int) -> Callable[[], None]:
    """Runs in the child between fork and exec: die with the parent (Linux), lower priority."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
    parent = os.getpid()

    def setup() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)
        if nice:
            os.nice(nice)

    return setup


def _signal_group(child: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)


def finsentry_command(*args: str) -> list[str]:
    """The command line of `finsentry ARGS` with this interpreter."""
    return [sys.executable, "-m", "finsentry", *args]


def exit_now(code: int | str | None) -> NoReturn:
    """End the process at once, as `sys.exit(code)` would but without the interpreter's
    teardown (logs and standard streams are flushed first)."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def _subcommand(command: list[str]) -> str:
    """`worker` for `python -m finsentry worker ...`; else the program's name."""
    if command[1:3] == ["-m", "finsentry"] and len(command) > 3:
        return command[3]
    return Path(command[0]).name


def outcome(returncode: int | None, killed: bool) -> str:
    """How a child ended, in words: `exit 0`, `SIGTERM`, `killed`."""
    if killed:
        return "killed"
    if returncode is None:
        return "still running"
    if returncode < 0:
        return signal.Signals(-returncode).name
    return f"exit {returncode}"


class Supervisor:
    """Starts child processes; `stop` stops them all."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(
        self, command: list[str], log_path: Path, *, nice: int = 0, name: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `command`, its output appended to `log_path`; `name` (default: the
        subcommand, e.g. `worker`) is how `stop` reports it."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log_file:
            child = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                process_group=0,
                preexec_fn=_child_setup(nice),
            )
        name = name or _subcommand(command)
        self.children[name if name not in self.children else f"{name}-{child.pid}"] = child
        return child

    def stop(self, threads: tuple[threading.Thread, ...] = ()) -> dict[str, str]:
        """SIGTERM to the children's groups; up to `grace_s` for them (and `threads`) to
        finish; then SIGKILL to the groups and reap every child. Returns how each ended."""
        for child in self.children.values():
            if child.poll() is None:
                _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        try:
            for thread in threads:
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
            for child in self.children.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except KeyboardInterrupt:
            log.warning("interrupted again: killing the children now")
        killed: set[str] = set()
        with _stop_signals_ignored():  # killing and reaping is not interrupted half-way
            for name, child in self.children.items():
                if child.poll() is None:
                    log.warning("%s did not stop within %.0f s: killed", name, self.grace_s)
                    killed.add(name)
                # Also whatever the child started that is still in its group.
                _signal_group(child, signal.SIGKILL)
            for name, child in self.children.items():
                try:
                    child.wait(timeout=REAP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    log.error("%s survived SIGKILL for %.0f s", name, REAP_TIMEOUT_S)
        return {
            name: outcome(child.returncode, name in killed) for name, child in self.children.items()
        }
