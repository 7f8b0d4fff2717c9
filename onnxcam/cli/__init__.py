"""The command line: a thin click adapter over the library. The only package that prints."""

from __future__ import annotations

import contextlib
from typing import Any

import click

from ..errors import OnnxCamError
from ..result import version
from .common import safe
from .evaluate import evaluate
from .explain import explain
from .export import export_command
from .nodes import nodes
from .report import report
from .serve import serve

__all__ = ["cli", "main"]


class _Cli(click.Group):
    """Turns library errors into one line and a non-zero exit; ``--debug`` shows tracebacks.
    Click's own errors quote what was typed (an unknown option, a path): they are escaped
    too, so that every error is one line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.ClickException as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:  # the commands' options are parsed in here
            raise _one_line(exc) from None
        except (click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:  # `onnxcam nodes m.onnx | head`: click ends quietly
            raise
        except OnnxCamError as exc:
            if _debug(ctx):
                raise
            raise click.ClickException(safe(exc)) from None
        except Exception as exc:
            if _debug(ctx):
                raise
            raise click.ClickException(
                safe(
                    f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
                )
            ) from None


def _one_line(exc: click.ClickException) -> click.ClickException:
    """``exc`` with what its message quotes escaped: the usage line and hint that click
    shows above a usage error are its own, and so is the help shown for no arguments."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        return exc
    message = safe(exc.format_message())
    if isinstance(exc, click.UsageError):  # exit 2, as every usage error
        return click.UsageError(message, ctx=exc.ctx)
    return click.ClickException(message)  # exit 1


def _debug(ctx: click.Context) -> bool:
    return bool((ctx.obj or {}).get("debug"))


@click.group(cls=_Cli)
@click.version_option(version(), prog_name="onnxcam")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Saliency maps (Score-CAM) for image models exported to ONNX."""
    ctx.obj = {"debug": debug}


cli.add_command(nodes)
cli.add_command(explain)
cli.add_command(evaluate)
cli.add_command(export_command)
cli.add_command(report)
cli.add_command(serve)


def main() -> None:
    """Console-script entry point."""
    _quiet_opencv()
    cli(prog_name="onnxcam")


def _quiet_opencv() -> None:
    # OpenCV writes decoder warnings straight to stderr; onnxcam reports bad images itself.
    import cv2

    with contextlib.suppress(AttributeError):
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
