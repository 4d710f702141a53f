"""The ``clusterip-ctl`` click group, lazy command loading, and the mapping of errors to exit codes.

Why lazy: commands that talk to ZooKeeper import kazoo; ``config check`` and ``which`` must stay fast
and usable on a machine without it. To add a command, write ``controller/ctl/cmd_NAME.py`` holding a
click command (or group) and add one line to ``COMMANDS``.

Exit codes (documented in docs/configuration.md): 0 success; 1 an operation failed (ZooKeeper,
backend, ...); 2 bad usage or an invalid configuration; 3 ``import`` found hosts that disagree;
70 internal error (a bug: please report it). Expected errors never print a traceback.
"""

from __future__ import annotations

import errno
import importlib
import sys
from collections.abc import Sequence
from typing import Any

import click

from controller.core.errors import ClusterIPFailoverError, ConfigError

#: command name -> (module, attribute) of the click command implementing it.
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("controller.ctl.cmd_config", "config_group"),
    "import": ("controller.ctl.cmd_import", "import_group"),
    "history": ("controller.ctl.cmd_history", "history"),
    "which": ("controller.ctl.cmd_which", "which"),
    "status": ("controller.ctl.cmd_status", "status"),
    "nodes": ("controller.ctl.cmd_nodes", "nodes"),
    "drain": ("controller.ctl.cmd_drain", "drain"),
    "undrain": ("controller.ctl.cmd_drain", "undrain"),
    "move": ("controller.ctl.cmd_move", "move"),
    "failback": ("controller.ctl.cmd_failback", "failback"),
    "pause": ("controller.ctl.cmd_pause", "pause"),
    "resume": ("controller.ctl.cmd_pause", "resume"),
    "acl": ("controller.ctl.cmd_acl", "acl_group"),
}

EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE


def report_internal_error(err: BaseException) -> None:
    click.echo(
        f"clusterip-ctl: internal error: {type(err).__name__}: {err}; please report this with the command you ran",
        err=True,
    )


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command is used or listed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module, attribute = COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClusterIPFailoverError as err:
            prefix = "" if isinstance(err, ConfigError) else "clusterip-ctl: error: "
            for line in err.lines():
                click.echo(prefix + line, err=True)
            ctx.exit(err.exit_code)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except OSError as err:
            if err.errno == errno.EPIPE:  # output piped into `head`: click handles it quietly
                raise
            report_internal_error(err)
            ctx.exit(EXIT_INTERNAL)
        except Exception as err:
            report_internal_error(err)
            ctx.exit(EXIT_INTERNAL)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clusterip-failover", prog_name="clusterip-ctl")
def cli() -> None:
    """Operate clusterip-failover: check configs, import existing rules, locate clients."""


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the CLI; anything unexpected outside a command is exit 70, no traceback."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="clusterip-ctl")
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as err:
        report_internal_error(err)
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
