"""What the commands share: the Explainer options, image lists, output names, safe printing."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import Field, asdict
from pathlib import Path
from typing import Any

import click

from ..config import (
    LIMITS,
    Bounds,
    method_flags,
    method_options,
    model_sha256,
    settings_with_flags,
)
from ..errors import OnnxCamError
from ..explain import Explainer
from ..methods import METHODS
from ..outdir import NAMING, is_output_folder, recorded_files
from ..result import version
from ..targets import TargetSpec, load_target_file, parse_target
from ..text import escape as safe

IMAGE_SUFFIXES = {
    ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm", ".pnm",
}  # fmt: skip


def echo(text: object, *, err: bool = False) -> None:
    """Print ``text`` as one line: every control character in it is escaped, newlines
    included, so that no name from a model or a file system can start a line of its own.
    Output of several lines is several calls."""
    click.echo(safe(text), err=err)


class InRange(click.ParamType):
    """A number in the range that :mod:`onnxcam.config` gives its setting: the command line
    refuses what the library would, in the same words, before any model is loaded."""

    def __init__(self, bounds: Bounds) -> None:
        self.bounds = bounds
        self.name = "integer" if bounds.integer else "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            try:
                value = int(value) if self.bounds.integer else float(value)
            except ValueError:
                self.fail(f"'{value}' is not {self.bounds.describe()}", param, ctx)
        problem = self.bounds.problem(value)
        if problem:
            self.fail(problem, param, ctx)
        return value


def _floats(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple | None:
    if value is None:
        return None
    try:
        values = tuple(float(v) for v in value.replace(",", " ").split())
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a list of numbers, e.g. 0.5,0.5,0.5") from None
    if len(values) not in (1, 3):
        raise click.BadParameter(f"needs 1 or 3 numbers, got {len(values)}")
    for number in values:
        problem = LIMITS[str(param.name)].problem(number)
        if problem:
            raise click.BadParameter(f"each value {problem}")
    return values


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple | None:
    if value is None:
        return None
    parts = value.lower().replace("x", " ").replace(",", " ").split()
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a size; use 224 or 224x320 (HxW)") from None
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise click.BadParameter(f"'{value}' is not a size; use 224 or 224x320 (HxW)")
    return dims


def _names(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple | None:
    if value is None:
        return None
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if not names:
        raise click.BadParameter("give one or more provider names, separated by commas")
    return names


def collect_images(paths: Iterable[Path], *, exclude: Path | None = None) -> list[Path]:
    """Files as given; folders expanded, recursively and sorted, to every entry named like an
    image (FIFOs, devices and broken links included, so that they are reported rather than
    skipped in silence). Symbolic links to folders are not followed (no loops). Outputs are
    never inputs: nothing under ``exclude`` (the output folder, when it lies inside an input
    folder) is taken, nor any file that an onnxcam run recorded in a folder on the way."""
    skip = exclude.resolve() if exclude is not None else None
    written: set[Path] = set()
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            found.append(path)
            continue
        for root, dirs, files in os.walk(path, followlinks=False):
            here = Path(root)
            if is_output_folder(here):
                written |= recorded_files(here)
            if skip is not None:
                dirs[:] = [d for d in dirs if (here / d).resolve() != skip]
            dirs.sort()
            found.extend(
                here / name
                for name in sorted(files)
                if Path(name).suffix.lower() in IMAGE_SUFFIXES
                and (here / name).resolve() not in written
            )
    return found


TARGET_HELP = (
    "What to explain (repeatable): a class number, or KIND[:VALUE][:key=value...] with KIND "
    "class, top, detection, segmentation, embedding or index, e.g. top:5, "
    "detection:box=10,20,200,240, segmentation:15 (default: every detection of a detector, the "
    "main class of a segmenter, else the top class)."
)

COMPATS = list(dict.fromkeys(name for cls in METHODS.values() for name in cls.presets))


def _method_flag(flag: Any) -> Any:
    """The click option of one method setting; its range is checked by onnxcam.config."""
    kind: Any = click.Choice(flag.choices) if flag.choices else flag.type
    return click.option(flag.flag, flag.dest, type=kind, default=None, help=flag.help)


#: Every method setting's flag (--channels, --samples, --noise, --groups, ...), from the
#: methods' options: a new setting needs no change here.
METHOD_FLAGS = [_method_flag(flag) for flag in method_flags()]

_READERS = {"floats": _floats, "size": _size, "names": _names}


def setting_option(setting: Field[Any]) -> Any:
    """The click option of one :class:`~onnxcam.config.ExplainerConfig` field, made from its
    declaration (:func:`onnxcam.config.setting`): flag, help, valid values, default."""
    meta = setting.metadata
    kwargs: dict[str, Any] = {"help": meta["help"]}
    if meta["metavar"]:
        kwargs["metavar"] = meta["metavar"]
    kind = meta["cli"]
    if kind == "flag":
        kwargs["is_flag"] = True
    elif kind == "switch":
        kwargs["default"] = None
    elif kind in _READERS:
        kwargs["callback"] = _READERS[kind]
    elif kind == "path":
        kwargs["type"] = click.Path(path_type=Path)
    elif meta["choices"] is not None:
        kwargs["type"] = click.Choice(list(meta["choices"]))
    elif meta["bounds"] is not None:
        kwargs["type"] = InRange(meta["bounds"])
    if kind not in ("flag", "switch") and setting.default is not None:
        kwargs.update(default=setting.default, show_default=True)
    return click.option(meta["flag"], setting.name, **kwargs)


SETTINGS = settings_with_flags()
size_option = setting_option(next(f for f in SETTINGS if f.name == "size"))

# Options shared by every command that builds an Explainer, in the order --help shows them:
# what to explain, how to run the model (one option per declared setting), the method's.
_EXPLAINER_OPTIONS = [
    click.option("--target", "target_specs", multiple=True, metavar="SPEC", help=TARGET_HELP),
    click.option("--target-file", type=click.Path(path_type=Path),
                 help="Targets as JSON: an object or a list of objects with 'kind' and keys."),
    *(setting_option(setting) for setting in SETTINGS),
    click.option("--compat", type=click.Choice(COMPATS), default="official",
                 show_default=True,
                 help="Reproduce another implementation's method: grad-cam (scorecam, "
                      "ablation, eigencam), torchcam (scorecam, sscam, iscam, cam)."),
    *METHOD_FLAGS,
]  # fmt: skip


def option_group(options: list[Any]) -> Any:
    """One decorator that adds ``options`` to a command, in their listed order."""

    def decorate(command: Any) -> Any:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


explainer_options = option_group(_EXPLAINER_OPTIONS)  # the shared Explainer options


def target_specs(options: dict[str, Any]) -> list[TargetSpec] | None:
    """The ``--target`` and ``--target-file`` specs, parsed before any model is loaded;
    None when neither is given (each image's default target)."""
    specs = [parse_target(text) for text in options["target_specs"]]
    if options["target_file"] is not None:
        specs += load_target_file(options["target_file"])
    return specs or None


def flags_given(options: dict[str, Any]) -> dict[str, Any]:
    """The method settings' flags and their values (None when not given)."""
    return {flag.flag: options[flag.dest] for flag in method_flags()}


def method_settings(method: str, options: dict[str, Any], *, strict: bool = True) -> Any:
    """``method``'s settings from ``--compat`` and the method flags. ``strict``: refuse a
    flag or a preset the method does not take (else it keeps its default: ``evaluate``
    gives every method what applies to it)."""
    compat = options["compat"]
    if not strict and compat not in METHODS[method].presets:
        compat = "official"
    return method_options(method, compat=compat, flags=flags_given(options), strict=strict)


def open_explainer(
    model: Path,
    options: dict[str, Any],
    method: str = "scorecam",
    *,
    strict: bool = True,
    split_head: bool = False,
) -> Explainer:
    """Build the Explainer from the shared options (targets are per call, not per model);
    ``strict``: refuse a method flag that ``method`` does not take; ``split_head``: split off
    the model's head for other methods that run on it."""
    settings = method_settings(method, options, strict=strict)
    baseline, budget_s = options["baseline"], options["budget_s"]
    if not strict and not METHODS[method].takes_baseline:
        baseline = "none"
    if not strict and not METHODS[method].takes_budget:
        budget_s = None
    given = {setting.name: options[setting.name] for setting in SETTINGS}
    given.update(baseline=baseline, budget_s=budget_s)
    if given["predictor"] is not None and given["backend"] == "ort":
        given["backend"] = "remote"  # --predictor-host alone means the served predictor
    explainer = Explainer(model, method=method, options=settings, split_head=split_head, **given)
    for note in explainer.notes:
        echo(f"note: {note}", err=True)
    return explainer


def image_files(images: tuple[Path, ...], *, exclude: Path | None = None) -> list[Path]:
    files = collect_images(images, exclude=exclude)
    if not files:
        raise click.ClickException("no image files found in " + ", ".join(map(str, images)))
    return files


def report_error(exc: OnnxCamError, after_bar: bool) -> None:
    if after_bar:
        click.echo(err=True)  # off the progress bar's line
    echo(f"Error: {exc}", err=True)


def finish(failures: int, total: int) -> None:
    if failures and total == 1:
        sys.exit(1)  # the error line already says it all
    if failures:
        raise click.ClickException(f"{failures} of {total} images failed")


def run_settings(
    explainer: Explainer, targets: list[TargetSpec] | None, alpha: float
) -> dict[str, Any]:
    """What decides the contents of a run's files (see :mod:`onnxcam.outdir`)."""
    config = explainer.config
    # The fuse rule decides the maps of several nodes; it is left out for the default rule, so
    # that folders made before the choice existed still resume.
    fused = len(explainer.candidates) > 1 and config.fuse != "equal"
    return {
        **({"fuse": config.fuse} if fused else {}),
        "model_sha256": model_sha256(config.model),
        "node": ",".join(c.tensor for c in explainer.candidates),
        "method": explainer.method.name,
        "method_options": explainer.method.options(),
        "preprocess": asdict(explainer.norm),
        "input": [explainer.spec.height, explainer.spec.width, explainer.spec.layout],
        "targets": None if targets is None else [t.spec for t in targets],
        "labels": config.labels,
        "fp16": config.fp16,
        "alpha": alpha,
        "onnxcam_version": version(),
        "naming": NAMING,
    }
