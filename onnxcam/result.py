"""One image's explanation: a map per target, and the JSON record that describes them."""

from __future__ import annotations

import importlib.metadata
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import check_rendering
from .confined import Confined
from .jobs import Bound
from .jobs import scores as job_scores
from .render import Mark, write_explanation, write_thumbnails
from .runner import JobResult

__all__ = ["SCHEMA_VERSION", "Provenance", "Result", "TargetResult", "file_names", "version"]

#: Version of the JSON record's layout; raised whenever a field changes meaning or moves.
SCHEMA_VERSION = 1


def version() -> str:
    """The installed onnxcam version."""
    try:
        return importlib.metadata.version("onnxcam")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def file_names(
    stem: str, targets: int, *, overlay: bool = True, emphasized: bool = False
) -> list[dict[str, str]]:
    """Per target, the names of its overlay (when there is an image to draw on), emphasized
    overlay (when asked for), grayscale map and ``.npy``: ``STEM_overlay.png`` for a single
    target, ``STEM_t{i}_overlay.png`` for target ``i`` of several."""
    tags = [stem] if targets == 1 else [f"{stem}_t{i}" for i in range(targets)]
    names = []
    for tag in tags:
        files = {"overlay": f"{tag}_overlay.png"} if overlay else {}
        if overlay and emphasized:
            files["emphasized"] = f"{tag}_emphasized.png"
        names.append({**files, "saliency": f"{tag}_saliency.png", "npy": f"{tag}.npy"})
    return names


@dataclass(frozen=True)
class TargetResult:
    """The map of one target.

    Attributes:
        saliency: float32 (H, W) in [0, 1] at the image's size.
        saliency_input: the same map at the model's input size, before that last resize.
        info: what the target says of itself: ``kind``, ``spec``, ``class_index``, ``label``,
            the clean ``score``, a ``summary`` line, and kind-specific fields.
    """

    saliency: np.ndarray
    saliency_input: np.ndarray
    info: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.info["kind"])

    @property
    def spec(self) -> str:
        return str(self.info["spec"])

    @property
    def class_index(self) -> int | None:
        return self.info.get("class_index")

    @property
    def label(self) -> str | None:
        return self.info.get("label")

    @property
    def score(self) -> float:
        return float(self.info["score"])

    def marks(self) -> tuple[Mark, ...]:
        """The box the target is about (a detection, a segmentation region), with its label
        and score, to draw on overlays; empty for targets without one."""
        box = self.info.get("box")
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            return ()
        name = self.label or (
            f"class {self.class_index}" if self.class_index is not None else self.kind
        )
        x0, y0, x1, y1 = (float(v) for v in box)
        return (((x0, y0, x1, y1), f"{name} {self.score:.2f}"),)

    def map_stats(self) -> dict[str, Any]:
        """Mean value, peak position ``[x, y]`` in image pixels, share of pixels at or above
        half the peak, and whether the map is all zero."""
        sal = self.saliency
        y, x = np.unravel_index(int(np.argmax(sal)), sal.shape)
        return {
            "mean": float(sal.mean()),
            "peak": [int(x), int(y)],
            "area_above_half": float(np.count_nonzero(sal >= 0.5) / sal.size),
            "all_zero": not bool(sal.any()),
        }


@dataclass(frozen=True)
class Provenance:
    """What every result of one explainer says of where it comes from.

    Attributes:
        model: how the record names the model (:func:`onnxcam.config.model_name`).
        node: the explained node's name, or the names joined by commas.
        tensor: the explained tensor's name, or the names joined by commas.
        batch_size: passes per run.
        preprocess: the input normalisation, as a mapping.
        provider: what serves the model.
        notes: things worth telling the user about the model.
        fuse: how the maps of several nodes combine (``equal`` or ``sum``; the record says
            it only when there are several).
        instead: the ``--node`` value to suggest when a map comes out all zero ("" for none:
            the node was named, not picked by ``auto``).
    """

    model: str
    node: str
    tensor: str
    batch_size: int
    preprocess: dict[str, Any]
    provider: str
    notes: tuple[str, ...] = field(default=())
    fuse: str = "equal"
    instead: str = ""


def _all_zero(spec: str, origin: Provenance) -> str:
    """The note on a target whose map is all zero; with a node ``auto`` picked, the node to
    try instead."""
    note = f"the map of target '{spec}' is all zero: nothing the method tried raised its score"
    if origin.instead:
        note += (
            f"; --node auto picked '{origin.node}': try --node '{origin.instead}' (the same "
            "features one layer earlier)"
        )
    return note


@dataclass(frozen=True)
class Result:
    """One image explained for one or more targets, all from one set of passes.

    ``image`` is None when a caller's tensor was explained without an image; the maps are
    then at the tensor's size and no overlay is drawn. The attributes ``saliency``,
    ``class_index``, ``label``, ``score`` and ``top5`` are the first target's; ``targets`` has
    them all.
    """

    image: np.ndarray | None
    targets: tuple[TargetResult, ...]
    model: str
    node: str
    tensor: str
    method: str
    options: dict[str, Any]
    stats: dict[str, int]
    provider: str
    timings: dict[str, float]
    source: str | None = None
    notes: tuple[str, ...] = ()

    @classmethod
    def from_passes(cls, bound: Bound, outcome: JobResult, origin: Provenance) -> Result:
        """Each target's map from the scores of an image's passes, and its record's fields."""
        t0 = time.perf_counter()
        fwd, plan, method = bound.fwd, bound.plan, bound.method
        scores = job_scores(outcome, len(bound.targets))
        notes = list(origin.notes)
        if not method.class_specific:
            notes.append(f"method '{method.name}' does not depend on the target")
        maps = []
        made_all = method.combine_many(bound.clean, plan, scores, bound.clean_scores)
        for target, made in zip(bound.targets, made_all, strict=True):
            cam, info = made.map, {**target.describe(), **made.info}
            if not cam.any():
                notes.append(_all_zero(info["spec"], origin))
            shown = cam if fwd.geometry is None else fwd.geometry.map_to_image(cam)
            maps.append(TargetResult(shown, cam, info))
        timings = {
            "preprocess_s": fwd.preprocess_s,
            "activation_s": fwd.activation_s,
            "masks_s": outcome.build_s,
            "masked_s": outcome.run_s,
            "combine_s": time.perf_counter() - t0,
        }
        timings["total_s"] = sum(timings.values())
        return cls(
            image=fwd.rgb,
            targets=tuple(maps),
            model=origin.model,
            node=origin.node,
            tensor=origin.tensor,
            method=method.name,
            options={
                **method.options(),
                "batch_size": origin.batch_size,
                "preprocess": dict(origin.preprocess),
                "input_size": [fwd.spec.height, fwd.spec.width],
                **(fwd.geometry.describe() if fwd.geometry is not None else {}),
                "layout": fwd.spec.layout,
                "input": "tensor" if fwd.given_tensor else "image",
                **({"fuse": origin.fuse} if len(fwd.features) > 1 else {}),
            },
            stats=dict(plan.stats),
            provider=origin.provider,
            timings=timings,
            source=fwd.source,
            notes=tuple(notes),
        )

    @property
    def saliency(self) -> np.ndarray:
        return self.targets[0].saliency

    @property
    def saliency_input(self) -> np.ndarray:
        return self.targets[0].saliency_input

    @property
    def class_index(self) -> int | None:
        return self.targets[0].class_index

    @property
    def label(self) -> str | None:
        return self.targets[0].label

    @property
    def score(self) -> float:
        return self.targets[0].score

    @property
    def top5(self) -> tuple[tuple[int, str | None, float], ...]:
        rows = self.targets[0].info.get("top5", [])
        return tuple((r["index"], r["label"], r["score"]) for r in rows)

    @property
    def channels_total(self) -> int:
        return self.stats.get("channels_total", 0)

    @property
    def channels_used(self) -> int:
        return self.stats.get("channels_used", 0)

    @property
    def channels_skipped(self) -> int:
        return self.stats.get("channels_skipped", 0)

    @property
    def channels_dropped(self) -> int:
        return self.stats.get("channels_dropped", 0)

    @property
    def masked_passes(self) -> int:
        return self.stats.get("masked_passes", 0)

    def to_record(self, *, stem: str | None = None, emphasized: bool = False) -> dict[str, Any]:
        """The JSON record (no arrays); with ``stem``, the names of the files :meth:`save`
        writes under that stem."""
        first = self.targets[0]
        entries = []
        names = None
        if stem is not None:
            names = file_names(
                stem, len(self.targets), overlay=self.image is not None, emphasized=emphasized
            )
        for i, target in enumerate(self.targets):
            entry = {k: v for k, v in target.info.items() if k != "top5"}
            entry["map"] = target.map_stats()
            if names is not None:
                entry["files"] = names[i]
            entries.append(entry)
        record: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "source": self.source,
            "model": self.model,
            "node": self.node,
            "tensor": self.tensor,
            "class_index": first.class_index,
            "label": first.label,
            "score": first.score,
            "top5": first.info.get("top5", []),
            "method": self.method,
            "options": self.options,
            **self.stats,
            "provider": self.provider,
            "timings": self.timings,
            "image_size": [int(first.saliency.shape[1]), int(first.saliency.shape[0])],
            "notes": list(self.notes),
            "onnxcam_version": version(),
            "targets": entries,
        }
        if names is not None and stem is not None:
            record["files"] = {"json": f"{stem}.json", **(names[0] if len(names) == 1 else {})}
        return record

    def save(
        self,
        out_dir: str | Path | Confined,
        *,
        stem: str | None = None,
        alpha: float = 0.5,
        emphasize: float | None = None,
        thumbnails: bool = False,
    ) -> dict:
        """Write each target's overlay PNG, grayscale PNG and ``.npy`` map, and the JSON
        record (see :func:`file_names`); return the written paths. With ``emphasize`` (a
        threshold in [0, 1]), also an overlay of the map through a steep sigmoid around it,
        so the attended region stands out and the rest fades. With ``thumbnails``, also the
        report's pictures of the image (``thumbs/``). Every file stays inside ``out_dir``
        (:class:`~onnxcam.confined.Confined`).

        Raises:
            ConfigError: ``alpha`` or ``emphasize`` outside [0, 1] (NaN included).
            OutputError: a file cannot be written, or would leave ``out_dir``.
        """
        check_rendering(alpha, emphasize)
        name = stem or (Path(self.source).stem if self.source else "image")
        emphasized = emphasize is not None
        out = out_dir if isinstance(out_dir, Confined) else Confined(Path(out_dir))
        paths = write_explanation(
            out,
            self.image,
            [t.saliency for t in self.targets],
            file_names(
                name, len(self.targets), overlay=self.image is not None, emphasized=emphasized
            ),
            self.to_record(stem=name, emphasized=emphasized),
            f"{name}.json",
            alpha=alpha,
            source=self.source,
            emphasis=emphasize,
            marks=[t.marks() for t in self.targets],
        )
        if thumbnails:
            write_thumbnails(
                out, name, self.image, self.saliency, alpha=alpha, marks=self.targets[0].marks()
            )
        return paths
