"""Command-line entry points of this stage (registered on the main `finsentry` app)."""

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the main app."""
