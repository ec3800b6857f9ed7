"""`finsentry feedback list|export`: analysts' labels, and the labels as a training file."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer

from finsentry.settings import Settings

feedback_app = typer.Typer(help="Analysts' labels (POST /v1/items/{id}/labels on the API).")


@feedback_app.command("list")
def list_labels(
    ctx: typer.Context,
    analyst: str | None = typer.Option(None),
    item: str | None = typer.Option(None, help="Item id."),
    ticker: str | None = typer.Option(None, help="A labelled company."),
    disagrees: bool | None = typer.Option(
        None, "--disagrees/--agrees", help="Only labels that differ from (match) the model's."
    ),
    since: datetime | None = typer.Option(None, help="Labelled at or after (ISO 8601, UTC)."),
    size: int = typer.Option(50, min=1, max=1000),
) -> None:
    """Labels, newest first: who, when, the label and what the model had said."""
    from finsentry.es_client import make_es_client
    from finsentry.feedback.store import FeedbackFilter, search_feedback

    settings: Settings = ctx.obj
    where = FeedbackFilter(
        analyst=analyst, item=item, ticker=ticker, disagrees=disagrees, since=since, size=size
    )
    total, docs = search_feedback(make_es_client(settings), settings.feedback_index, where)
    typer.echo(f"{total} label(s) match; newest {len(docs)}:")
    for doc in docs:
        given = [
            f"sentiment {doc.labels.sentiment} (model {doc.model.sentiment})"
            if doc.labels.sentiment
            else "",
            f"topic {doc.labels.topic} (model {doc.model.topic})" if doc.labels.topic else "",
            *(f"{c.ticker} {c.sentiment}" for c in doc.labels.companies),
        ]
        shown = "; ".join(g for g in given if g)
        typer.echo(
            f"{doc.labelled_at:%Y-%m-%d %H:%M} {doc.analyst:<16} {doc.item_id[:40]:<40} {shown}"
            f"  [model {doc.model.version}]"
        )


@feedback_app.command("export")
def export(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", dir_okay=False, help="JSON lines file to write."),
    since: datetime | None = typer.Option(None, help="Only labels given at or after (UTC)."),
) -> None:
    """Write the labels as a training file (one JSON line per item; see feedback/export.py):
    `finsentry train --task sentiment --data F --label-col sentiment`, `--entity-data F`,
    or `finsentry retrain --feedback F`."""
    from finsentry.es_client import make_es_client
    from finsentry.feedback.export import training_examples, write_examples
    from finsentry.feedback.store import scan_feedback

    settings: Settings = ctx.obj
    examples = training_examples(
        scan_feedback(make_es_client(settings), settings.feedback_index, since)
    )
    write_examples(examples, out)
    counts = {
        "sentiment": sum(e.sentiment is not None for e in examples),
        "topic": sum(e.topic is not None for e in examples),
        "companies": sum(len({x.value.casefold() for x in e.entities}) for e in examples),
    }
    shown = ", ".join(f"{n} {what}" for what, n in counts.items())
    typer.echo(f"wrote {len(examples)} labelled item(s) to {out} ({shown} labels)")


def register(app: typer.Typer) -> None:
    app.add_typer(feedback_app, name="feedback")
