"""`finsentry run`'s children: stopped within the grace period, killed after it, with what
they started, and never left behind, even when the supervisor itself is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from finsentry.streams.supervisor import Supervisor

STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"  # noqa: E501
POLITE = "import time; print('ready', flush=True); time.sleep(60)"


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stop_terminates_then_kills_after_the_grace(tmp_path: Path) -> None:
    supervisor = Supervisor(grace_s=1.5)
    polite = supervisor.spawn(_python(POLITE), tmp_path / "polite.log", name="polite")
    stubborn = supervisor.spawn(_python(STUBBORN), tmp_path / "stubborn.log", name="stubborn")
    for name in ("polite", "stubborn"):
        _wait_for(lambda n=name: "ready" in (tmp_path / f"{n}.log").read_text())

    started = time.monotonic()
    ended = supervisor.stop()
    took = time.monotonic() - started

    assert ended == {"polite": "SIGTERM", "stubborn": "killed"}
    assert polite.returncode == -signal.SIGTERM
    assert stubborn.returncode == -signal.SIGKILL
    assert 1.5 <= took < 5.0


def test_stop_also_ends_what_a_child_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    parent = textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", {STUBBORN!r}])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(60)
    """)
    supervisor = Supervisor(grace_s=0.5)
    supervisor.spawn(_python(parent), tmp_path / "parent.log")
    _wait_for(lambda: pid_file.exists() and pid_file.read_text() != "")
    grandchild = int(pid_file.read_text())

    supervisor.stop()

    _wait_for(lambda: _gone(grandchild), timeout=5.0)


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux only")
def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from finsentry.streams.supervisor import Supervisor
        child = Supervisor(grace_s=1).spawn([{sys.executable!r}, "-c", {POLITE!r}], Path({str(tmp_path / "child.log")!r}))
        Path({str(pid_file)!r}).write_text(str(child.pid))
        time.sleep(60)
    """)  # noqa: E501
    supervisor = subprocess.Popen(_python(script))
    try:
        _wait_for(lambda: pid_file.exists() and pid_file.read_text() != "")
        child = int(pid_file.read_text())
        supervisor.send_signal(signal.SIGKILL)  # no chance to stop anything
        supervisor.wait(timeout=10)
        _wait_for(lambda: _gone(child), timeout=5.0)
    finally:
        supervisor.kill()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_stop_signals_interrupt_even_when_sigint_came_ignored(sig: signal.Signals) -> None:
    script = (
        "import time; from finsentry.streams.supervisor import interrupt_on_stop_signals; "
        "interrupt_on_stop_signals()\n"
        "try:\n    print('ready', flush=True)\n    time.sleep(60)\n"
        "except KeyboardInterrupt as exc:\n    print('stopped by', exc)"
    )

    def ignore_sigint() -> None:  # as in a background job of a non-interactive shell
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(
        _python(script), stdout=subprocess.PIPE, text=True, preexec_fn=ignore_sigint
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        os.kill(proc.pid, sig)
        assert proc.communicate(timeout=10)[0] == f"stopped by {sig.name}\n"
        assert proc.returncode == 0
    finally:
        proc.kill()
