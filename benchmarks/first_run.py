"""First run on a fresh machine: minutes from `finsentry run` to the first scored item.

Starts `finsentry run` as a user would on a machine without a model (an empty models folder,
fresh topics and indices; Kafka and Elasticsearch already up, as after `make install` and
`finsentry services up`), and times: the bootstrap model (trained and promoted), the first
scored item searchable in Elasticsearch, and with `--wait-default` the default model
(trained in the background, exported to int8, promoted, swapped in; about an hour on two
CPU cores) and the re-scoring of the bootstrap model's items.

    .venv/bin/python benchmarks/first_run.py
    .venv/bin/python benchmarks/first_run.py --wait-default --timeout 7200
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

from finsentry.es_client import make_es_client
from finsentry.models.registry import read_live, read_training_status
from finsentry.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--wait-default", action="store_true", help="wait for the default model")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--keep", type=Path, default=None, help="models folder to keep")
    args = parser.parse_args()

    base = Settings()
    tag = f"firstrun{uuid.uuid4().hex[:8]}"
    scratch = Path(tempfile.mkdtemp(prefix="finsentry-first-run-"))
    models = args.keep or scratch / "models"
    env = {
        **os.environ,
        "FINSENTRY_APP_ID": tag,
        "FINSENTRY_TOPIC_RAW": f"{tag}.raw",
        "FINSENTRY_TOPIC_SCORED": f"{tag}.scored",
        "FINSENTRY_TOPIC_DEAD_LETTERS": f"{tag}.dl",
        "FINSENTRY_TOPIC_ALERTS": f"{tag}.alerts",
        "FINSENTRY_ITEMS_INDEX": f"{tag}-items",
        "FINSENTRY_ALERTS_INDEX": f"{tag}-alerts",
        "FINSENTRY_DEAD_LETTERS_INDEX": f"{tag}-dl",
        "FINSENTRY_MODELS_DIR": str(models),
        "FINSENTRY_STATE_DIR": str(scratch / "state"),  # logs, consumer state
        "FINSENTRY_MANAGE_SERVICES": "false",  # up already; their pid files are not in there
        "FINSENTRY_METRICS_PORT": "0",
    }
    es = make_es_client(base)
    index = env["FINSENTRY_ITEMS_INDEX"]
    started = time.monotonic()
    run = subprocess.Popen(
        [sys.executable, "-m", "finsentry", "run", "--rate", str(args.rate)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marks: dict[str, float] = {}
    try:
        while time.monotonic() - started < args.timeout and run.poll() is None:
            now = time.monotonic() - started
            live = read_live(models)
            if "bootstrap model live" not in marks and live is not None:
                marks["bootstrap model live"] = now
            if "first scored item searchable" not in marks:
                found = es.options(ignore_status=404).count(index=index).get("count", 0)
                if found:
                    marks["first scored item searchable"] = now
                    if not args.wait_default:
                        break
            status = read_training_status(models)
            if status is not None and status.version and "default model live" not in marks:
                marks["default model live"] = now
            if status is not None and status.phase in {"done", "failed"}:
                marks[f"training {status.phase}: {status.message}"] = now
                break
            time.sleep(0.5)
        if run.poll() is not None:
            marks[f"finsentry run exited by itself, code {run.returncode}"] = (
                time.monotonic() - started
            )
    finally:
        run.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        try:
            run.wait(timeout=60)
            marks["exited after Ctrl-C (from the Ctrl-C)"] = time.monotonic() - interrupted
        except subprocess.TimeoutExpired:
            run.kill()  # its children get SIGTERM from the kernel (PR_SET_PDEATHSIG)
        for name in (index, env["FINSENTRY_ALERTS_INDEX"], env["FINSENTRY_DEAD_LETTERS_INDEX"]):
            es.options(ignore_status=404).indices.delete(index=name)
    table = Table(title=f"first run from an empty models folder ({models}; logs in {scratch})")
    table.add_column("milestone")
    table.add_column("seconds after `finsentry run`", justify="right")
    table.add_column("minutes", justify="right")
    for name, seconds in marks.items():
        table.add_row(name, f"{seconds:.1f}", f"{seconds / 60:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
