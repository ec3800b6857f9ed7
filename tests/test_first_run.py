"""The first run on a fresh machine: no artifact at all. `finsentry run` serves the bootstrap
model within seconds, trains the default model in the background (a tiny configuration
here), promotes it, the worker swaps it in, and the bootstrap model's items are re-scored
by themselves, each exactly once. Then Ctrl-C stops it and every process it started."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from finsentry.models.registry import read_live, read_training_status
from finsentry.settings import Settings
from tests.support.tiny_artifact import build_tiny_base
from tests.support.worker_process import settings_env

pytestmark = pytest.mark.integration

TINY_TRAINING = {
    "epochs": 1,
    "max_train_samples": 200,
    "baselines": False,
    "batch_size": 16,
    "eval_batch_size": 64,
    "max_length": 64,
    "entity_data": None,  # the per-company head has its own tests (test_entity_head.py)
}
STOP_GRACE_S = 10.0
STOP_BOUND_S = STOP_GRACE_S + 20.0  # the children's grace, then kill, reap and exit


def _ignore_sigint() -> None:
    """As in a background job of a non-interactive shell (`pytest ... &`): SIGINT ignored,
    which a child inherits (the defect this guards against: Ctrl-C then did nothing)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _descendants(pid: int) -> dict[psutil.Process, str]:
    """The processes `pid` started (and theirs), with their command lines."""
    found = {}
    try:
        for proc in psutil.Process(pid).children(recursive=True):
            try:
                found[proc] = " ".join(proc.cmdline()).replace(" -m finsentry", " finsentry")
            except psutil.Error:  # gone, or a zombie about to be reaped
                continue
    except psutil.NoSuchProcess:
        pass
    return found


def _alive(processes: dict[psutil.Process, str]) -> list[str]:
    alive = []
    for proc, command in processes.items():
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{proc.pid} {command}")
        except psutil.NoSuchProcess:
            continue
    return alive


def _docs(es: Any, index: str) -> list[dict[str, Any]]:
    es.indices.refresh(index=index, ignore_unavailable=True)
    response = es.options(ignore_status=404).search(
        index=index,
        size=5000,
        version=True,
        source=["model_version", "previous_model_version"],
    )
    return [
        {"_version": h["_version"], **h["_source"]}
        for h in response.get("hits", {}).get("hits", [])
    ]


def test_first_run_serves_the_bootstrap_model_then_swaps_in_the_default(
    settings: Settings, es: Any, tmp_path: Path
) -> None:
    models, state = tmp_path / "models", tmp_path / "state"
    base = build_tiny_base(tmp_path / "tiny-base")
    env = settings_env(settings.model_copy(update={"max_wait": 0.2}), models)
    del env["FINSENTRY_MODEL_PATH"]
    env.update(
        FINSENTRY_MODELS_DIR=str(models),
        FINSENTRY_STATE_DIR=str(state),
        FINSENTRY_BOOTSTRAP_MAX_SAMPLES="300",
        FINSENTRY_DEFAULT_TRAIN_OVERRIDES=json.dumps({**TINY_TRAINING, "base_model": str(base)}),
        FINSENTRY_DEFAULT_STUDENT="false",  # the student stage: test_default_student.py
        FINSENTRY_MODEL_POLL_INTERVAL="0.5",
        FINSENTRY_DEVICE="cpu",
        FINSENTRY_RESCORE_NICE="0",
        FINSENTRY_RUN_STOP_GRACE=str(STOP_GRACE_S),
    )
    started = time.monotonic()
    run = subprocess.Popen(
        [sys.executable, "-m", "finsentry", "run", "--rate", "4", "--duration", "400"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_ignore_sigint,
    )
    seen_bootstrap = False
    try:
        deadline = started + 360
        while True:
            assert run.poll() is None, run.stdout.read().decode()[-3000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, (
                f"status {read_training_status(models)}; "
                f"{(state / 'logs' / 'training.log').read_text(errors='replace')[-3000:]}"
            )
            docs = _docs(es, settings.items_index)
            versions = {d["model_version"] for d in docs}
            seen_bootstrap |= any(v.startswith("bootstrap-tfidf-") for v in versions)
            status = read_training_status(models)
            done = status is not None and status.phase == "done"
            if (
                seen_bootstrap
                and done
                and docs
                and not any(v.startswith("bootstrap-tfidf-") for v in versions)
            ):
                break
            time.sleep(1.0)
    finally:
        started_by_run = _descendants(run.pid)
        run.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        try:
            output = run.communicate(timeout=STOP_BOUND_S + 30)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            for proc in started_by_run:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            output = run.communicate()[0].decode(errors="replace")
        stopped_in = time.monotonic() - interrupted
    # Ctrl-C: a clean exit within the bound, no process it started still running.
    assert stopped_in <= STOP_BOUND_S and run.returncode == 0, (
        f"exit {run.returncode} {stopped_in:.0f} s after SIGINT: {output[-1500:]}"
    )
    commands = " | ".join(started_by_run.values())
    assert "finsentry worker" in commands and "finsentry alerter" in commands, commands
    assert _alive(started_by_run) == []
    # ... and the worker and the alerter stopped by themselves, within the grace period.
    assert "worker exit 0" in output and "alerter exit 0" in output, output[-1500:]
    assert "training the bootstrap model" in output

    pointer = read_live(models)
    assert pointer is not None and not pointer.live.version.startswith("bootstrap-tfidf-")
    assert [e.version[:16] for e in pointer.history] == ["bootstrap-tfidf-"]
    assert pointer.live.reason.startswith("default model, ")  # int8, or why not
    assert status is not None and status.version == pointer.live.version

    time.sleep(1.5)  # anything written twice would show in _version
    docs = _docs(es, settings.items_index)
    rescored = [d for d in docs if d.get("previous_model_version")]
    assert rescored, "the bootstrap model scored items that were re-scored"
    for doc in docs:
        assert doc["model_version"] == pointer.live.version
        if doc.get("previous_model_version"):
            assert doc["previous_model_version"].startswith("bootstrap-tfidf-")
            assert doc["_version"] == 2  # indexed once, re-scored once
        else:
            assert doc["_version"] == 1
