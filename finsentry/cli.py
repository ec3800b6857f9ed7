"""The `finsentry` command. Each stage registers its own commands; this module wires them up."""

from __future__ import annotations

import typer

from finsentry.alerts import cli as alerts_cli
from finsentry.dashboards import cli as dashboards_cli
from finsentry.drift import cli as drift_cli
from finsentry.feedback import cli as feedback_cli
from finsentry.models import cli as models_cli
from finsentry.queries import cli as queries_cli
from finsentry.services import cli as services_cli
from finsentry.settings import Settings
from finsentry.sources import cli as sources_cli
from finsentry.streams import cli as streams_cli
from finsentry.training import cli as training_cli

app = typer.Typer(
    help="finsentry: real-time financial sentiment monitor.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def main(ctx: typer.Context) -> None:
    """Settings come from FINSENTRY_* environment variables (and an optional .env file)."""
    ctx.obj = Settings()


for stage in (
    services_cli,
    sources_cli,
    streams_cli,
    training_cli,
    models_cli,
    queries_cli,
    dashboards_cli,
    alerts_cli,
    feedback_cli,
    drift_cli,
):
    stage.register(app)
