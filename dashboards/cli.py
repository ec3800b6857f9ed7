"""Command-line entry points of this stage (registered on the main `finsentry` app):
`finsentry dashboards generate|check|push` and `finsentry alerter`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from finsentry.settings import Settings

if TYPE_CHECKING:
    from finsentry.dashboards.config import GrafanaConfig

dashboards_app = typer.Typer(help="Grafana as code: provisioning files and API push.")

# Options several commands share.
RulesFile = Annotated[Path, typer.Option(help="AlertRules YAML/JSON (default: settings).")]
EsUrl = Annotated[str, typer.Option(help="Elasticsearch URL as Grafana sees it.")]


def _config(settings: Settings, rules_file: Path | None, es_url: str | None) -> GrafanaConfig:
    from finsentry.alerts.rules import load_rules
    from finsentry.dashboards.config import GrafanaConfig

    rules = load_rules(rules_file or settings.alert_rules_file)
    return GrafanaConfig.from_settings(settings, rules, es_url=es_url)


def _tree(settings: Settings, rules_file: Path | None, es_url: str | None) -> dict[str, str]:
    """The provisioning tree as the code renders it now."""
    from finsentry.dashboards.provisioning import render_tree

    return render_tree(_config(settings, rules_file, es_url))


@dashboards_app.command("generate")
def generate(
    ctx: typer.Context,
    out: Path = typer.Option(None, help="Tree to write (default: dashboards/provisioning)."),
    rules_file: RulesFile = None,
    es_url: EsUrl = None,
) -> None:
    """Write the Grafana provisioning tree (datasources, dashboards, alerting)."""
    from finsentry.dashboards.provisioning import DEFAULT_ROOT, write_tree

    root = out or DEFAULT_ROOT
    changed = write_tree(root, _tree(ctx.obj, rules_file, es_url))
    for path in changed:
        typer.echo(f"wrote {root / path}")
    typer.echo(f"{len(changed)} file(s) changed under {root}")


@dashboards_app.command("check")
def check(
    ctx: typer.Context,
    out: Path = typer.Option(None, help="Tree to compare (default: dashboards/provisioning)."),
    rules_file: RulesFile = None,
    es_url: EsUrl = None,
) -> None:
    """Exit 1 when the provisioning tree is stale against the code."""
    from finsentry.dashboards.provisioning import DEFAULT_ROOT, stale_files

    stale = stale_files(out or DEFAULT_ROOT, _tree(ctx.obj, rules_file, es_url))
    for path in stale:
        typer.echo(f"stale: {path}")
    raise typer.Exit(1 if stale else 0)


@dashboards_app.command("push")
def push_command(
    ctx: typer.Context,
    url: str = typer.Option(None, help="Grafana URL (default: FINSENTRY_GRAFANA_URL)."),
    token: str = typer.Option(None, help="Service account token (default: settings)."),
    rules_file: RulesFile = None,
    es_url: EsUrl = None,
) -> None:
    """Upsert datasources, dashboards and alerting in a running Grafana."""
    from grafana_client import GrafanaApi

    from finsentry.dashboards.push import push, push_env

    settings: Settings = ctx.obj
    credential: str | tuple[str, str] | None = token
    if credential is None and settings.grafana_token is not None:
        credential = settings.grafana_token.get_secret_value()
    if credential is None and settings.grafana_admin_password is not None:
        credential = ("admin", settings.grafana_admin_password.get_secret_value())
    api = GrafanaApi.from_url(url or settings.grafana_url, credential=credential)
    done = push(api, _config(settings, rules_file, es_url), push_env(settings, os.environ))
    for item in done:
        typer.echo(f"{item.action:8} {item.kind:14} {item.uid}")


def alerter(
    ctx: typer.Context,
    rules_file: RulesFile = None,
    loglevel: str = typer.Option("info", help="debug | info | warning | error"),
) -> None:
    """Run the stream alerter (Faust app `<app_id>-alerts`) until interrupted."""
    from faust import Worker

    from finsentry.alerts.app import create_app
    from finsentry.alerts.rules import load_rules
    from finsentry.services.kafka_login import KafkaLoginError, verify_kafka_login

    settings: Settings = ctx.obj
    try:
        verify_kafka_login(settings)
    except KafkaLoginError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    alerter_app = create_app(settings, load_rules(rules_file or settings.alert_rules_file))
    worker = Worker(alerter_app.app, loglevel=loglevel)
    # No startup spinner: Faust would set the root logger to DEBUG for it, and every debug
    # record of aiokafka and Faust would then be built (and dropped) at full event rate.
    worker.spinner = None
    # Per-request logs are noise, and httpx's would carry webhook URLs (secrets).
    for name in ("httpx", "httpcore", "elastic_transport", "elasticsearch"):
        logging.getLogger(name).setLevel(logging.WARNING)
    worker.execute_from_commandline()


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the main app."""
    app.add_typer(dashboards_app, name="dashboards")
    app.command("alerter")(alerter)
