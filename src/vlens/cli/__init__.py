"""The `vlens` command. Each area of the package adds its commands from its own module."""

from __future__ import annotations

import importlib
import sys

from rich.console import Console
from rich.markup import escape

from vlens.cli.apps import app
from vlens.errors import VlensError

# Command modules, imported for their side effect of attaching commands to `app`.
COMMAND_MODULES = [
    "vlens.cli.pipeline",
    "vlens.cli.predict",
    "vlens.cli.analyze",
    "vlens.cli.report",
    "vlens.cli.world",
    "vlens.cli.vlm",
    "vlens.cli.vlm_train",
]

for _name in COMMAND_MODULES:
    importlib.import_module(_name)


def main() -> None:
    """Entry point: run the CLI, turning `VlensError` into a one-line message and exit code 2."""
    try:
        app(standalone_mode=False)
    except VlensError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(2)
    except OSError as e:  # disk full, permission denied...: one line, not a traceback
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(1)
    except SystemExit:
        raise
    except Exception as e:  # click's usage errors arrive here in non-standalone mode
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(1)
        raise
