"""Commands of the streaming path: `worker`, `ingest`, `simulate` and the main job, `run`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import typer

from finsentry.settings import Settings


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj if isinstance(ctx.obj, Settings) else Settings()


@contextmanager
def _exit_on_refused_login() -> Iterator[None]:
    """A broker refusing the configured credentials or CA: the reason and exit 1."""
    from finsentry.services.kafka_login import KafkaLoginError

    try:
        yield
    except KafkaLoginError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def worker(
    ctx: typer.Context,
    loglevel: str = typer.Option("INFO", help="Worker log level."),
) -> None:
    """Run the scoring worker: raw topic -> models -> Elasticsearch (+ scored topic)."""
    from finsentry.streams.worker import run_worker

    with _exit_on_refused_login():
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

    with _exit_on_refused_login():
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

    with _exit_on_refused_login():
        stats = simulate_to_kafka(_settings(ctx), rate=rate, limit=limit, seed=seed)
    typer.echo(f"sent {stats.sent} items ({stats.failed} failed)")
    if stats.failed:
        raise typer.Exit(1)


def _feed(
    settings: Settings,
    replay_file: Path | None,
    rate: float,
    stop: threading.Event,
    sources_file: Path | None = None,
) -> None:
    if sources_file is not None:
        from finsentry.sources.cli import load_or_exit
        from finsentry.sources.runner import run_blocking

        run_blocking(settings, load_or_exit(settings, sources_file), stop_event=stop)
    elif replay_file is not None:
        from finsentry.feeds.replay import replay

        replay(settings, replay_file, rate=rate, progress=False)
    else:
        from finsentry.alerts.demo import demo_burst_tickers
        from finsentry.feeds.simulator import simulate_to_kafka

        # The demo: the simulated news events hit the demo watchlist (alerts/demo.py).
        simulate_to_kafka(
            settings,
            rate=rate,
            seed=7,
            progress=False,
            stop_event=stop,
            burst_tickers=demo_burst_tickers(settings),
        )


def _log_to_file(path: Path) -> None:
    """Send this process's log records to `path`: lines printed under the live view would
    push it down the terminal instead of letting it redraw in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    file_handler = logging.FileHandler(path)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(file_handler)


def run(
    ctx: typer.Context,
    replay_file: Path | None = typer.Option(
        None, "--replay", exists=True, dir_okay=False, help="Replay this file, not the simulator."
    ),
    sources_file: Path | None = typer.Option(
        None, "--sources", exists=True, dir_okay=False, help="Poll these real sources (YAML)."
    ),
    rate: float = typer.Option(20.0, help="Feed rate, items per second."),
    no_feed: bool = typer.Option(False, help="Start no feed: score what arrives on Kafka."),
    duration: float | None = typer.Option(None, help="Stop after this many seconds."),
) -> None:
    """The main job: local services, a model (trained first if there is none), the worker,
    the alerter, a feed, and a live terminal view. Ctrl-C stops everything."""
    from finsentry.alerts.demo import demo_alerter_args
    from finsentry.streams.live_view import run_live_view
    from finsentry.streams.supervisor import (
        Supervisor,
        finsentry_command,
        interrupt_on_stop_signals,
    )
    from finsentry.training.defaults import ensure_bootstrap, needs_default_model

    settings = _settings(ctx)
    if sources_file is not None:  # a bad sources file stops here, before anything starts
        from finsentry.sources.cli import load_or_exit

        load_or_exit(settings, sources_file)
    # Ctrl-C stops everything even where SIGINT came ignored (a background job of a script).
    interrupt_on_stop_signals()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if settings.manage_services:
        from finsentry.services import manager

        manager.up(settings)
    logs = settings.state_dir / "logs"
    supervisor = Supervisor(grace_s=settings.run_stop_grace)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        if needs_default_model(settings):
            # Fresh machine: a bootstrap model in seconds, the default one in the background
            # (the worker swaps it in when it is promoted; the live view shows the progress).
            typer.echo("no default model yet: training the bootstrap model (seconds)")
            typer.echo(f"serving {ensure_bootstrap(settings)}")
            # At a lower CPU priority: the worker comes first.
            supervisor.spawn(
                finsentry_command("models", "train-default"),
                logs / "training.log",
                nice=5,
                name="training",
            )
            typer.echo(f"training the default model in the background; log in {logs}")
        supervisor.spawn(finsentry_command("worker"), logs / "worker.log")
        supervisor.spawn(
            finsentry_command("alerter", *demo_alerter_args(settings)), logs / "alerter.log"
        )
        # Drift watch (drift/) and, with FINSENTRY_RETRAIN_EVERY_HOURS, re-training on the
        # analysts' labels (training/retrain.py): both below the worker's CPU priority.
        supervisor.spawn(finsentry_command("drift", "--watch"), logs / "drift.log", nice=10)
        if settings.retrain_every_hours > 0:
            every = ("--every", str(settings.retrain_every_hours))
            new = ("--min-new", str(settings.retrain_min_feedback))
            supervisor.spawn(
                finsentry_command("retrain", *every, *new), logs / "retrain.log", nice=10
            )
        typer.echo(f"worker and alerter started; logs in {logs}")
        _log_to_file(logs / "run.log")  # the live view owns the terminal from here on
        if not no_feed:
            threads.append(
                threading.Thread(
                    target=_feed,
                    args=(settings, replay_file, rate, stop, sources_file),
                    daemon=True,
                    name="feed",
                )
            )
            threads[-1].start()
        if duration is not None:
            timer = threading.Timer(duration, stop.set)
            timer.daemon = True  # Ctrl-C before the duration must not wait for it
            timer.start()
        run_live_view(settings, stop_event=stop)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        ended = supervisor.stop(tuple(threads))
        with suppress(OSError):  # the terminal may be gone (SIGHUP)
            typer.echo("stopped: " + ", ".join(f"{name} {how}" for name, how in ended.items()))


def register(app: typer.Typer) -> None:
    for command in (run, worker, ingest, simulate):
        app.command()(command)
