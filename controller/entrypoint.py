"""Running a click command as a service's ``main()``: one-line errors and documented exit codes.

Shared by ``clusterip-controller`` and ``clusterip-node-hook`` so both map failures the same way:
the project's own errors print their lines and exit with their ``exit_code``; anything else is a
bug and prints one line, exit 70; never a traceback.
"""

from __future__ import annotations

import sys

import click

from controller.core.errors import ClusterIPFailoverError

EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE


def run(cli: click.Command, prog_name: str, argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ClusterIPFailoverError as exc:
        for line in exc.lines():
            click.echo(f"{prog_name}: error: {line}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        click.echo(f"{prog_name}: internal error: {type(exc).__name__}: {exc}; please report", err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(0)
