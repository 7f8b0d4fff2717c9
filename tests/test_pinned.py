"""Every method on the shipped shapes models gives the maps stored in tests/data (written by
tools/pinned_maps.py): a refactor that changes any map by more than 1e-6 fails here."""

from __future__ import annotations

import numpy as np

from tools.pinned_maps import STORED, compare, compute


def test_every_method_on_the_shapes_models_gives_the_stored_maps():
    with np.load(STORED) as data:
        stored = {key: data[key] for key in data.files}
    now = compute()
    assert sum(v.dtype.kind == "f" and float(v.max()) > 0.5 for v in stored.values()) >= 30
    report = compare(stored, now)
    changed = {k: v for k, v in report.items() if isinstance(v, str) or v > 1e-6}
    assert not changed, changed
