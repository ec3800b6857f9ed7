"""`finsentry services up|down|status`: the local real Kafka and Elasticsearch."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from finsentry.settings import Settings

services_app = typer.Typer(help="Local real Kafka and Elasticsearch (fetched with Maven).")


class Service(StrEnum):
    kafka = "kafka"
    elasticsearch = "elasticsearch"


def _external_note(settings: Settings, console: Console) -> bool:
    if settings.manage_services:
        return False
    console.print(
        "FINSENTRY_MANAGE_SERVICES is false: external services are configured "
        f"(Kafka {settings.kafka_bootstrap}, Elasticsearch {settings.es_url}); "
        "`finsentry services check` tests them."
    )
    return True


@services_app.command()
def up(
    ctx: typer.Context,
    only: Service | None = typer.Option(None, "--only", help="Start just this one."),
) -> None:
    """Fetch (first time), start and wait until healthy; harmless when already running."""
    from finsentry.services import manager

    settings: Settings = ctx.obj
    console = Console(stderr=True)
    try:
        manager.up(settings, only.value if only else None, console)
    except manager.ServiceError as exc:
        console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from exc


@services_app.command()
def down(
    ctx: typer.Context,
    only: Service | None = typer.Option(None, "--only", help="Stop just this one."),
) -> None:
    """Stop the local services (data is kept under the state dir)."""
    from finsentry.services import manager

    settings: Settings = ctx.obj
    console = Console(stderr=True)
    try:
        manager.down(settings, only.value if only else None, console)
    except manager.ServiceError as exc:
        console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from exc


@services_app.command()
def status(ctx: typer.Context) -> None:
    """Show whether each local service runs and answers its health check."""
    from finsentry.services import manager

    settings: Settings = ctx.obj
    console = Console()
    if _external_note(settings, console):
        return
    table = Table(title=f"local services ({settings.state_dir})")
    for column in ("service", "version", "running", "pid", "url", "healthy"):
        table.add_column(column)
    for item in manager.status(settings).values():
        table.add_row(
            item.name,
            item.version,
            "yes" if item.running else "no",
            str(item.pid or "-"),
            item.url,
            "[green]yes[/green]" if item.healthy else "[red]no[/red]",
        )
    console.print(table)


@services_app.command()
def check(
    ctx: typer.Context,
    kafka: bool = typer.Option(False, "--kafka", help="Kafka at FINSENTRY_KAFKA_BOOTSTRAP."),
    elasticsearch: bool = typer.Option(
        False, "--elasticsearch", help="Elasticsearch at FINSENTRY_ES_URL."
    ),
    group: str | None = typer.Option(None, help="This consumer group must have members."),
    url: list[str] = typer.Option([], help="This URL must answer 2xx (repeatable)."),
) -> None:
    """Check the configured (local or external) endpoints; exit 1 if any fails.

    Without options: Kafka and Elasticsearch. The compose healthchecks use it."""
    from finsentry.services import health

    settings: Settings = ctx.obj
    if not (kafka or elasticsearch or group or url):
        kafka = elasticsearch = True
    results: list[health.CheckResult] = []
    if kafka or group:
        results += health.check_kafka(settings, group)
    if elasticsearch:
        results.append(health.check_elasticsearch(settings))
    results += [health.check_url(u) for u in url]
    console = Console()
    for result in results:
        mark = "[green]ok[/green]" if result.ok else "[red]FAIL[/red]"
        console.print(f"{mark} {result.name}: {result.detail}", highlight=False)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@services_app.command("kafka-tls")
def kafka_tls(
    folder: Path = typer.Argument(..., help="Where ca.crt and server.pem go."),
    host: list[str] = typer.Option(["localhost", "127.0.0.1"], help="Names/IPs (repeatable)."),
    owner: str | None = typer.Option(None, help="UID:GID to own the files (the broker's)."),
    days: int = typer.Option(365, min=1, help="Validity of the certificates."),
) -> None:
    """Make a CA and a Kafka broker certificate (PEM) unless valid ones are there: what
    `services up` does for a SASL_SSL broker; docker-compose.sasl.yml runs it once."""
    from finsentry.services.tls import make_server_tls, needs_new_certificate, server_tls_files

    files = server_tls_files(folder)
    if needs_new_certificate(files):
        files = make_server_tls(folder, tuple(host), days)
        typer.echo(f"made {files.ca_cert} and {files.keystore} for {', '.join(host)}")
    else:
        typer.echo(f"{files.keystore} is valid; kept")
    if owner is not None:
        uid, _, gid = owner.partition(":")
        for path in (files.ca_cert, files.keystore):
            os.chown(path, int(uid), int(gid or uid))


def register(app: typer.Typer) -> None:
    """Add the `services` command group to the main app."""
    app.add_typer(services_app, name="services")
