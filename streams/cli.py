"""Commands of the streaming path: `worker`, `ingest`, `simulate` and the main job, `run`."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import typer

from finsentry.settings import Settings


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj if isinstance(ctx.obj, Settings) else Settings()


def worker(
    ctx: typer.Context,
    loglevel: str = typer.Option("INFO", help="Worker log level."),
) -> None:
    """Run the scoring worker: raw topic -> models -> Elasticsearch (+ scored topic)."""
    from finsentry.streams.worker import run_worker

    run_worker(_settings(ctx), loglevel=loglevel)


def ingest(
    ctx: typer.Context,
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL or CSV file."),
    rate: float = typer.Option(0.0, help="Items per second (0: as fast as possible)."),
    limit: int | None = typer.Option(None, help="Send at most this many rows."),
    source: str | None = typer.Option(None, help="Source name for rows without one."),
) -> None:
    """Replay a JSONL or CSV file into the raw topic."""
    from finsentry.feeds.replay import replay

    sent = replay(_settings(ctx), path, rate=rate, limit=limit, source=source)
    typer.echo(f"sent {sent} items to {_settings(ctx).topic_raw}")


def simulate(
    ctx: typer.Context,
    rate: float = typer.Option(20.0, help="Items per second."),
    limit: int | None = typer.Option(None, help="Stop after this many items (default: never)."),
    seed: int = typer.Option(7, help="Random seed."),
) -> None:
    """Send an endless, realistic market stream (with negative bursts) to the raw topic."""
    from finsentry.feeds.simulator import simulate_to_kafka

    stats = simulate_to_kafka(_settings(ctx), rate=rate, limit=limit, seed=seed)
    typer.echo(f"sent {stats.sent} items ({stats.failed} failed)")
    if stats.failed:
        raise typer.Exit(1)


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "finsentry", *args], stdout=log, stderr=subprocess.STDOUT
    )


def _feed(settings: Settings, replay_file: Path | None, rate: float, stop: threading.Event) -> None:
    if replay_file is not None:
        from finsentry.feeds.replay import replay

        replay(settings, replay_file, rate=rate, progress=False)
    else:
        from finsentry.feeds.simulator import simulate_to_kafka

        simulate_to_kafka(settings, rate=rate, seed=7, progress=False, stop_event=stop)


def run(
    ctx: typer.Context,
    replay_file: Path | None = typer.Option(
        None, "--replay", exists=True, dir_okay=False, help="Replay this file, not the simulator."
    ),
    rate: float = typer.Option(20.0, help="Feed rate, items per second."),
    no_feed: bool = typer.Option(False, help="Start no feed: score what arrives on Kafka."),
    duration: float | None = typer.Option(None, help="Stop after this many seconds."),
) -> None:
    """The main job: local services, a model (trained first if there is none), the worker,
    the alerter, a feed, and a live terminal view. Ctrl-C stops everything."""
    from finsentry.streams.live_view import run_live_view
    from finsentry.training.defaults import ensure_default_artifact

    settings = _settings(ctx)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if settings.manage_services:
        from finsentry.services import manager

        manager.up(settings)
    ensure_default_artifact(settings, progress=True)

    logs = settings.state_dir / "logs"
    children = [_spawn(["worker"], logs / "worker.log"), _spawn(["alerter"], logs / "alerter.log")]
    typer.echo(f"worker and alerter started; logs in {logs}")
    stop = threading.Event()
    if not no_feed:
        threading.Thread(
            target=_feed, args=(settings, replay_file, rate, stop), daemon=True, name="feed"
        ).start()
    if duration is not None:
        threading.Timer(duration, stop.set).start()
    try:
        run_live_view(settings, stop_event=stop)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for child in children:
            child.terminate()
        deadline = time.monotonic() + 30
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()


def register(app: typer.Typer) -> None:
    for command in (run, worker, ingest, simulate):
        app.command()(command)
