"""Each method of the gradient-free family pinned on the tiny CNN against a deliberately naive
re-implementation written here, loop by loop, from the paper's formula (and for the random
methods, their seeded draws plus the statistical property that matters)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import SIZE, K, TinyWeights, build_tiny
from onnx import helper, numpy_helper
from tiny_heads import DET_SIZE, build_detector, build_segmenter, scene

from onnxcam import ConfigError, Explainer
from onnxcam.cli import cli
from onnxcam.methods import Clean, create
from onnxcam.methods.ablation import AblationOptions
from onnxcam.methods.groupcam import GroupCamOptions
from onnxcam.methods.iscam import IntegratedOptions
from onnxcam.methods.rise import RiseOptions
from onnxcam.methods.sscam import SmoothOptions
from onnxcam.preprocess import InputSpec, Normalization

ATOL = 2e-5


# ----------------------------------------------------------------------------- the naive side


def x_of(image: np.ndarray) -> np.ndarray:
    return (image / 255.0).transpose(2, 0, 1)[None]


def up(small: np.ndarray) -> np.ndarray:
    """Bilinear with half-pixel centres (OpenCV's convention), to the input size."""
    return cv2.resize(small.astype(np.float64), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)


def minmax(m: np.ndarray) -> np.ndarray:
    span = m.max() - m.min()
    return (m - m.min()) / span if span > 0 else np.zeros_like(m)


def relu_max(summed_small: np.ndarray) -> np.ndarray:
    cam = np.maximum(up(summed_small), 0.0)
    return cam / cam.max() if cam.max() > 0 else cam


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def head_logits(w: TinyWeights, acts: np.ndarray) -> np.ndarray:
    """The tiny CNN after its ReLU: global average pooling and the linear layer."""
    return acts.mean(axis=(1, 2)) @ w.fc_w.T.astype(np.float64) + w.fc_b


def prob(w: TinyWeights, x: np.ndarray, c: int) -> float:
    return float(softmax(w.logits(x)[0])[c])


def explained(model, image, method: str, **kwargs) -> tuple[np.ndarray, int]:
    result = Explainer(model, preset="unit", method=method, **kwargs).explain(image)
    return result.saliency_input, result.class_index


def distinct(acts: np.ndarray) -> list[int | None]:
    """Per channel: the index of its distinct mask in run order (None: constant)."""
    seen: list[bytes] = []
    owner: list[int | None] = []
    for a in acts:
        if a.max() == a.min():
            owner.append(None)
            continue
        key = minmax(a).astype(np.float32).tobytes()
        if key not in seen:
            seen.append(key)
        owner.append(seen.index(key))
    return owner


# ----------------------------------------------------------------------------- Score-CAM family


def test_iscam_matches_the_naive_integral(tiny, weights, image):
    steps = 4
    cam, c = explained(tiny, image, "iscam", options=IntegratedOptions(samples=steps))
    x = x_of(image)
    acts = weights.features(x)[0]
    summed = np.zeros(acts.shape[1:])
    for k in range(K):
        if acts[k].max() == acts[k].min():
            continue  # a constant channel carries no location
        mask = minmax(up(acts[k]))
        score = 0.0
        for i in range(1, steps + 1):
            coefficient = sum(j / steps for j in range(1, i + 1))
            score += prob(weights, x * coefficient * mask, c) / steps
        summed += score * acts[k]
    np.testing.assert_allclose(cam, relu_max(summed), atol=ATOL)


def test_sscam_matches_the_naive_loop_with_the_same_draws(tiny, weights, image):
    samples, sigma, seed = 3, 0.5, 7
    options = SmoothOptions(samples=samples, noise=sigma, seed=seed)
    cam, c = explained(tiny, image, "sscam", options=options)
    x = x_of(image)
    acts = weights.features(x)[0]
    owner = distinct(acts)
    runs = 1 + max(o for o in owner if o is not None)
    # noise of repeat r for the j-th distinct mask: the j-th draw of that repeat's generator
    noise = []
    for r in range(samples):
        rng = np.random.default_rng((seed, r))
        noise.append([rng.standard_normal((SIZE, SIZE), dtype=np.float32) for _ in range(runs)])
    summed = np.zeros(acts.shape[1:])
    for k in range(K):
        if owner[k] is None:
            continue
        mask = minmax(up(acts[k]))
        score = np.mean(
            [prob(weights, x * (mask + sigma * noise[r][owner[k]]), c) for r in range(samples)]
        )
        summed += score * acts[k]
    np.testing.assert_allclose(cam, relu_max(summed), atol=ATOL)


def test_sscam_without_noise_is_scorecam_and_its_noise_is_centred(tiny, image):
    quiet, _ = explained(tiny, image, "sscam", options=SmoothOptions(samples=2, noise=0.0))
    plain, _ = explained(tiny, image, "scorecam")
    np.testing.assert_allclose(quiet, plain, atol=1e-6)
    # the property SS-CAM rests on: the noisy masks average to the mask, spread by sigma
    method = create("sscam", options=SmoothOptions(noise=0.3, seed=1))
    masks = np.full((2, 32, 32), 0.25, np.float32)
    draws = np.stack([method.perturb(masks, r, method._generator(r)) for r in range(400)])
    assert abs(draws.mean() - 0.25) < 4 * 0.3 / np.sqrt(draws.size)
    assert draws.std() == pytest.approx(0.3, rel=0.01)


def test_groupcam_matches_the_naive_groups(tiny, weights, image):
    cam, c = explained(tiny, image, "groupcam", options=GroupCamOptions(groups=2))
    x = x_of(image)
    acts = weights.features(x)[0]
    hwc = x[0].transpose(1, 2, 0).astype(np.float32)
    kernel = 2 * round(51 / 224 * SIZE / 2) + 1
    blurred = cv2.GaussianBlur(hwc, (kernel, kernel), 50 / 224 * SIZE, borderType=4)
    blurred = blurred.transpose(2, 0, 1)[None].astype(np.float64)
    base = prob(weights, blurred, c)
    summed = np.zeros((SIZE, SIZE))
    for group in ([0, 1, 2], [3, 4]):  # 5 channels in 2 groups: ceil(5 / 2) = 3 per group
        s = np.maximum(sum(acts[k] for k in group), 0.0)
        s = np.where(s > np.percentile(s, 70), s, 0.0)
        if s.max() == s.min():
            continue
        mask = minmax(up(s))
        weight = prob(weights, x * mask + blurred * (1 - mask), c) - base
        summed += weight * mask
    expected = np.maximum(summed, 0.0)
    np.testing.assert_allclose(cam, expected / expected.max(), atol=ATOL)


# ----------------------------------------------------------------------------- no passes


def test_cam_matches_the_class_weights(tiny, weights, image):
    cam, c = explained(tiny, image, "cam")
    acts = weights.features(x_of(image))[0]
    summed = sum(float(weights.fc_w[c, k]) * acts[k] for k in range(K))
    np.testing.assert_allclose(cam, relu_max(summed), atol=ATOL)


def test_cam_names_what_it_found_when_the_head_is_not_pooling_and_linear(tmp_path, weights):
    path = build_tiny(tmp_path / "m.onnx", weights)
    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type == "GlobalAveragePool":
            node.op_type = "GlobalMaxPool"
    onnx.save(model, str(path))
    with pytest.raises(ConfigError, match="GlobalMaxPool 'head/gap' is not a global average"):
        Explainer(path, preset="unit", method="cam")


def test_eigencam_is_the_first_principal_component_by_power_iteration(tiny, weights, image):
    cam, _ = explained(tiny, image, "eigencam")
    acts = weights.features(x_of(image))[0]
    rows = acts.reshape(K, -1).T
    rows = rows - rows.mean(axis=0)
    v = np.ones(K)
    for _ in range(500):
        v = rows.T @ (rows @ v)
        v /= np.linalg.norm(v)
    projection = (rows @ v).reshape(acts.shape[1:])
    mean = acts.mean(axis=0)
    if np.corrcoef(projection.ravel(), mean.ravel())[0, 1] < 0:
        projection = -projection
    np.testing.assert_allclose(cam, relu_max(projection), atol=1e-4)
    result = Explainer(tiny, preset="unit", method="eigencam").explain(image, target="class:0")
    assert any("does not depend on the target" in note for note in result.notes)


# ----------------------------------------------------------------------------- the head alone


@pytest.mark.parametrize("weight", ["relative", "norm"])
def test_ablation_matches_the_naive_head_loop(tiny, weights, image, weight):
    cam, c = explained(tiny, image, "ablation", options=AblationOptions(weight=weight))
    acts = weights.features(x_of(image))[0]
    y = head_logits(weights, acts)[c]
    summed = np.zeros(acts.shape[1:])
    for k in range(K):
        ablated = acts.copy()
        ablated[k] = 0.0
        drop = y - head_logits(weights, ablated)[c]
        norm = np.linalg.norm(acts[k])
        if weight == "relative":
            summed += drop / abs(y) * acts[k]
        elif norm > 0:
            summed += drop / norm * acts[k]
    np.testing.assert_allclose(cam, relu_max(summed), atol=ATOL)


def test_recipro_matches_the_naive_cell_loop(tiny, weights, image):
    cam, c = explained(tiny, image, "recipro")
    acts = weights.features(x_of(image))[0]
    h, w = acts.shape[1:]
    grid = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            kept = np.zeros_like(acts)
            kept[:, i, j] = acts[:, i, j]
            grid[i, j] = softmax(head_logits(weights, kept))[c]
    np.testing.assert_allclose(cam, up(minmax(grid)), atol=ATOL)


def test_recipro_gaussian_keeps_each_cells_weighted_neighbourhood(tiny, weights, image):
    """``--kernel gaussian``: each pass keeps the 3×3 neighbourhood of its cell weighted
    [[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16, cut at the border (not renormalised)."""
    from onnxcam.methods.recipro import ReciproOptions

    cam, c = explained(tiny, image, "recipro", options=ReciproOptions(kernel="gaussian"))
    acts = weights.features(x_of(image))[0]
    h, w = acts.shape[1:]
    kernel = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16.0
    grid = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            mask = np.zeros((h, w))
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    if 0 <= i + di < h and 0 <= j + dj < w:
                        mask[i + di, j + dj] = kernel[di + 1, dj + 1]
            grid[i, j] = softmax(head_logits(weights, acts * mask))[c]
    np.testing.assert_allclose(cam, up(minmax(grid)), atol=ATOL)
    onehot, _ = explained(tiny, image, "recipro")
    assert np.abs(cam - onehot).max() > 1e-3  # a different mosaic, a different map


def skip_model(path, w: TinyWeights, extra: np.ndarray):
    """The tiny CNN plus a branch from the image to the logits that skips the node:
    ``logits = fc(GAP(feat)) + GAP(input) @ extra``."""
    model = onnx.load(str(build_tiny(path, w)))
    g = model.graph
    fc = next(n for n in g.node if n.op_type == "Gemm")
    fc.output[0] = "logits_a"
    g.node.extend(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["img_gap"], name="skip/gap"),
            helper.make_node("Flatten", ["img_gap"], ["img_flat"], name="skip/flat"),
            helper.make_node("MatMul", ["img_flat", "extra"], ["logits_b"], name="skip/mm"),
            helper.make_node("Add", ["logits_a", "logits_b"], ["logits"], name="skip/add"),
        ]
    )
    g.initializer.append(numpy_helper.from_array(extra.astype(np.float32), "extra"))
    onnx.save(model, str(path))
    return path


def test_a_head_that_reads_a_skip_connection_gets_its_clean_value(tmp_path, weights, image):
    extra = np.random.default_rng(3).normal(0, 2.0, (3, 3))
    path = skip_model(tmp_path / "skip.onnx", weights, extra)
    explainer = Explainer(path, preset="unit", method="ablation", node="features/relu")
    result = explainer.explain(image)
    assert any("'logits_b'" in note and "clean values" in note for note in result.notes)
    assert explainer.head_cost()["clean"] == ["logits_b"]
    x = x_of(image)
    acts = weights.features(x)[0]
    skip = x.mean(axis=(2, 3)) @ extra
    c = result.class_index
    y = (head_logits(weights, acts) + skip)[0, c]
    summed = np.zeros(acts.shape[1:])
    for k in range(K):
        ablated = acts.copy()
        ablated[k] = 0.0
        summed += (y - (head_logits(weights, ablated) + skip)[0, c]) / abs(y) * acts[k]
    np.testing.assert_allclose(result.saliency_input, relu_max(summed), atol=ATOL)
    onnx.checker.check_model(onnx.load(str(path)))  # the user's file is untouched and valid
    assert len(onnx.load(str(path)).graph.output) == 1


# ----------------------------------------------------------------------------- RISE


def test_rise_matches_the_naive_mask_loop(tiny, weights, image):
    options = RiseOptions(samples=40, cells=4, keep=0.5, seed=3)
    cam, c = explained(tiny, image, "rise", options=options)
    x = x_of(image)
    grids_seq, shifts_seq = np.random.SeedSequence(3).spawn(2)
    grids_rng, shifts_rng = np.random.default_rng(grids_seq), np.random.default_rng(shifts_seq)
    cell = -(-SIZE // 4)
    masks, scores = [], []
    for _ in range(40):
        grid = (grids_rng.random((4, 4)) < 0.5).astype(np.float32)
        dy, dx = shifts_rng.integers(0, (cell, cell), size=2)
        big = cv2.resize(grid, (5 * cell, 5 * cell), interpolation=cv2.INTER_LINEAR)
        mask = big[dy : dy + SIZE, dx : dx + SIZE].astype(np.float64)
        masks.append(mask)
        scores.append(prob(weights, x * mask, c))
    mean = np.mean(scores)
    summed = sum((s - mean) * m for s, m in zip(scores, masks, strict=True)) / (40 * 0.5)
    np.testing.assert_allclose(cam, minmax(summed), atol=1e-4)


def _clean(size: int = 32) -> Clean:
    spec = InputSpec("input", "NCHW", size, size, 1, np.dtype(np.float32))
    x = np.ones((1, 1, size, size), np.float32)
    acts = np.ones((1, 2, 2), np.float32)
    return Clean(x, None, acts, spec, Normalization())


def test_rise_masks_keep_their_share_and_find_what_the_score_reads():
    clean = _clean()
    method = create("rise", options=RiseOptions(samples=2000, cells=6, keep=0.3, seed=0))
    plan = method.plan(clean)
    masked = np.concatenate([block[:, 0] for block in plan.inputs(256)])  # x = 1: the masks
    assert masked.shape == (2000, 32, 32)
    assert masked.mean() == pytest.approx(0.3, abs=0.01)  # E[M] = p
    # a model that only looks at the top-left quarter: the map is brightest there
    scores = masked[:, :16, :16].mean(axis=(1, 2))[:, None]
    cam = method.combine_many(clean, plan, scores, [1.0])[0].map
    assert cam[:16, :16].mean() > 3 * cam[16:, 16:].mean()
    # and a model that ignores the image gets an all-zero map, not the masks' noise
    flat = method.combine_many(clean, plan, np.full((2000, 1), 0.7), [0.7])[0].map
    assert not flat.any()


def test_rise_scores_detections_by_drise_similarity(tmp_path):
    path = build_detector(tmp_path / "det.onnx", "yolov8")
    options = RiseOptions(samples=64, cells=4)
    explainer = Explainer(path, node="backbone/relu", preset="unit", method="rise", options=options)
    image = scene(objects=((0, (0, 0, 8, 8)),))
    result = explainer.explain(image)
    assert result.targets and all(t.info["mode"] == "drise" for t in result.targets)
    forced = explainer.explain(image, target="detection:mode=iou")
    assert all(t.info["mode"] == "iou" for t in forced.targets)


# ----------------------------------------------------------------------------- every target kind

SPATIAL = ["scorecam", "sscam", "iscam", "groupcam", "ablation", "recipro", "eigencam", "rise"]
FAST = {
    "sscam": SmoothOptions(samples=2),
    "iscam": IntegratedOptions(samples=2),
    "rise": RiseOptions(samples=64, cells=4),
}


@pytest.mark.parametrize("method", SPATIAL)
@pytest.mark.parametrize("kind", ["detection", "segmentation"])
def test_every_method_explains_detections_and_segments(tmp_path, method, kind):
    if kind == "detection":
        path = build_detector(tmp_path / "m.onnx", "yolov8")
        image = scene(objects=((0, (0, 0, 8, 8)), (2, (16, 16, 32, 32))))
    else:
        path = build_segmenter(tmp_path / "m.onnx")
        image = scene(objects=((1, (8, 8, 24, 24)),))
    maps = []
    for batch in (1, 5):
        explainer = Explainer(
            path, node="backbone/relu", preset="unit", method=method, batch_size=batch,
            options=FAST.get(method),
        )  # fmt: skip
        result = explainer.explain(image)
        assert result.targets
        for t in result.targets:
            assert t.saliency.shape == (DET_SIZE, DET_SIZE) and np.isfinite(t.saliency).all()
        maps.append(np.stack([t.saliency for t in result.targets]))
    np.testing.assert_array_equal(maps[0], maps[1])


def test_a_cut_after_another_cut_is_fed_not_recomputed(tiny):
    from onnxcam import graph

    head = graph.split_head(graph.load_model(tiny), ["conv", "feat"])
    assert [n.op_type for n in head.model.graph.node] == ["GlobalAveragePool", "Flatten", "Gemm"]
    assert {i.name for i in head.model.graph.input} >= {"conv", "feat"}
    onnx.checker.check_model(head.model)


def test_the_head_is_split_off_only_when_a_method_needs_it(tiny, image):
    from onnxcam.evaluate import evaluate

    plain = Explainer(tiny, preset="unit")
    assert plain.prepared.head is None
    with pytest.raises(ConfigError, match="split_head=True"):
        evaluate(plain, image, methods=["ablation"], steps=2, road=False)
    both = Explainer(tiny, preset="unit", split_head=True)
    (ablated,) = evaluate(both, image, methods=["ablation"], steps=2, road=False)
    alone, _ = explained(tiny, image, "ablation")
    np.testing.assert_allclose(ablated.saliency, alone, atol=1e-6)


def test_several_nodes_make_one_map_each_fused_as_equals(tiny, image):
    both, _ = explained(tiny, image, "eigencam", node="features/conv,features/relu")
    conv, _ = explained(tiny, image, "eigencam", node="features/conv")
    relu, _ = explained(tiny, image, "eigencam", node="features/relu")
    fused = (conv.astype(np.float64) + relu) / 2
    np.testing.assert_allclose(both, fused / fused.max(), atol=1e-5)
    # ablating the upstream node changes nothing once the downstream one is fed its clean
    # value: its map is zero, and the fused map is the downstream node's own
    both, _ = explained(tiny, image, "ablation", node="features/conv,features/relu")
    relu, _ = explained(tiny, image, "ablation", node="features/relu")
    np.testing.assert_allclose(both, relu, atol=1e-6)


def test_cli_explain_takes_a_method_its_flags_and_records_them(tiny, image, tmp_path):
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), image[:, :, ::-1])
    out = tmp_path / "out"
    args = ["explain", str(tiny), str(path), "--preset", "unit", "-o", str(out)]
    result = CliRunner().invoke(cli, [*args, "--method", "rise", "--samples", "16", "--seed", "3"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "img.json").read_text())
    assert record["method"] == "rise" and record["options"]["samples"] == 16
    assert record["options"]["seed"] == 3 and record["masked_passes"] == 16
    again = CliRunner().invoke(cli, [*args, "--overwrite", "--method", "ablation"])
    assert again.exit_code == 0, again.output
    record = json.loads((out / "img.json").read_text())
    assert record["method"] == "ablation" and record["head_passes"] == K - 1  # one dead
    bad = CliRunner().invoke(cli, [*args, "--overwrite", "--method", "cam", "--samples", "4"])
    assert bad.exit_code == 1 and "method 'cam' takes no --samples; methods that do" in bad.output
    assert "Traceback" not in bad.output
