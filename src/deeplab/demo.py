"""The main job on the embedded default: DeepLab-LargeFOV (tiny) + CRF on real street photos.

1. The network: a ``deeplab-largefov-tiny`` checkpoint the package ships, trained from
   scratch on a CPU: on CamVid street scenes (``data="camvid"``, the default) or on
   :class:`deeplab.data.SyntheticScenes` of seed 0 (``data="synthetic"``, which can also
   train one here in a few minutes with ``train=True``).
2. Images it never trained on are scored with :func:`deeplab.evaluate.evaluate` without and
   with the dense CRF (paper section 4), with the boundary trimap (Fig. 5): the CamVid val
   photos shipped in the package (or a whole CamVid folder), or held-out synthetic scenes
   (another seed). CamVid's void is not a thin outline band, so its trimap bands are
   measured from the label's class changes (:mod:`deeplab.metrics.trimap`).
3. A self-contained HTML report (:mod:`deeplab.report`): the mean IoU table, the trimap
   curves, and for a few images the image, the DCNN result, the DCNN+CRF result and the
   ground truth, with the belief maps of the image's main object class after CRF
   iterations 1, 2 and 10 (paper Fig. 2). ``results.json`` / ``results.md`` hold the figures.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deeplab.crf import CRFParams
from deeplab.data.camvid import CAMVID_CLASSES, CamVid
from deeplab.data.classes import IGNORE_INDEX
from deeplab.data.image_io import save_png
from deeplab.data.palettes import palette_for
from deeplab.data.sample import SegmentationDataset
from deeplab.data.synthetic import SYNTHETIC_CLASSES, SyntheticScenes
from deeplab.evaluate import EvalResult, evaluate
from deeplab.models import (
    SHIPPED_CAMVID,
    SHIPPED_MODEL,
    SHIPPED_WEIGHTS,
    SYNTHETIC_WEIGHTS,
    DeepLab,
    load_checkpoint,
    load_network,
    shipped_camvid_root,
    shipped_crf_params,
    shipped_weights,
)
from deeplab.predict import Predictor, refine
from deeplab.report import Figure, ReportData, ScenePanel, write_report

__all__ = [
    "BELIEF_ITERATIONS",
    "CAMVID_STUFF",
    "DEMO_DATA",
    "FALLBACK_RECIPE",
    "DemoOptions",
    "DemoResult",
    "demo_recipe",
    "main_class",
    "panel_scenes",
    "run_demo",
    "scene_panel",
    "shipped_training",
    "train_demo_model",
]

log = logging.getLogger(__name__)

BELIEF_ITERATIONS: tuple[int, ...] = (1, 2, 10)
"""CRF iterations whose beliefs the report shows (paper Fig. 2)."""

HELD_OUT_SEED = 1  # training uses scene family 0; `deeplab evaluate` scores family 1 too

DEMO_DATA: tuple[str, ...] = ("camvid", "synthetic")
"""What the demo can run on: CamVid street photos (default) or synthetic scenes."""

CAMVID_STUFF: tuple[str, ...] = ("sky", "building", "road", "pavement", "tree")
"""CamVid's large background classes: the belief maps show an object class instead."""

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total) with stage "train", "evaluate" or "panels"."""


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs on.

    ``data``: "camvid" (the shipped CamVid model on CamVid val photos: those shipped in the
    package, or all of ``camvid_root``'s val split, at most ``limit``) or "synthetic"
    (``scenes`` held-out synthetic scenes of family ``seed``). ``size``: (H, W) of the
    synthetic scenes, those trained on (seed 0) and those scored; None: the size the shipped
    checkpoint was trained on (128x128). ``weights``: a checkpoint, or None for the shipped
    one (ignored with ``train``). ``crf``: CRF parameters, or None for the ones tuned for the
    shipped checkpoint (else the ``deeplab-largefov`` preset). ``train`` (synthetic only):
    train the network here first, ``train_iterations`` SGD iterations (None: the shipped
    checkpoint's).
    """

    data: str = "camvid"
    camvid_root: Path | None = None
    limit: int | None = None
    scenes: int = 100
    seed: int = HELD_OUT_SEED
    size: tuple[int, int] | None = None
    panels: int = 4
    weights: Path | None = None
    train: bool = False
    train_iterations: int | None = None
    crf: CRFParams | None = None
    workers: int = 0


@dataclass
class DemoResult:
    """The evaluation, where the files went, and the time each stage took (seconds)."""

    evaluation: EvalResult
    report: Path
    weights: Path
    crf: CRFParams
    files: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


# The shipped checkpoint's recipe and training data (configs/deeplab-largefov-tiny-synthetic.json),
# for a package that lacks the checkpoint, which otherwise records both in its metadata.
FALLBACK_RECIPE: dict[str, Any] = {
    "model": SHIPPED_MODEL,
    "init": None,
    "iterations": 2200,
    "batch": 8,
    "crop": 129,
    "lr": 0.02,
    "classifier_lr_mult": 1.0,
    "input_lr_mult": 0.003,
    "lr_step": 1700,
    "log_every": 20,
    "workers": 0,
}
DEFAULT_SIZE = (128, 128)


def shipped_training() -> tuple[dict[str, Any], tuple[int, int]]:
    """(recipe fields, scene size) the shipped synthetic checkpoint was trained with, as its
    metadata records them; :data:`FALLBACK_RECIPE` and :data:`DEFAULT_SIZE` where it does not."""
    recipe, size = dict(FALLBACK_RECIPE), DEFAULT_SIZE
    path = shipped_weights("synthetic")
    if path is None:
        return recipe, size
    _, meta = load_checkpoint(path)
    try:
        recipe = dict(json.loads(meta.extra["recipe"]))
    except (KeyError, ValueError, TypeError):
        log.info("%s records no recipe; --train uses the built-in one", path)
    try:
        h, w = json.loads(meta.extra["data"])["synthetic_size"]
        size = (int(h), int(w))
    except (KeyError, ValueError, TypeError):
        log.info("%s records no scene size; assuming %dx%d", path, *DEFAULT_SIZE)
    return recipe, size


def demo_recipe(iterations: int | None = None) -> Any:
    """The recipe ``--train`` uses: the shipped checkpoint's (:func:`shipped_training`), so
    that ``deeplab demo --train`` retrains it, optionally for another number of
    ``iterations`` (the learning-rate step moves in proportion). Its first version was
    ``deeplab-largefov-tiny`` from scratch on 129x129 crops, batch 8, SGD at lr 0.02 (1x for
    the classifier, 0.003x for conv1_1, which reads raw 0..255 pixels), 2200 iterations with
    a 10x drop at 1700; much shorter runs (1000 iterations) predict only the background."""
    from deeplab.train import resolve_recipe

    fields, _ = shipped_training()
    total = int(fields.get("iterations", FALLBACK_RECIPE["iterations"]))
    n = total if iterations is None else int(iterations)
    step = int(fields.get("lr_step", total))
    fields.update(
        model=SHIPPED_MODEL,
        iterations=n,
        lr_step=max(1, round(step * n / total)),
        checkpoint_every=max(1, n),  # one checkpoint, at the end: nothing to resume here
    )
    return resolve_recipe(SHIPPED_MODEL, overrides=fields)


def train_demo_model(
    run_dir: Path,
    iterations: int | None = None,
    size: tuple[int, int] = DEFAULT_SIZE,
    progress: Progress | None = None,
) -> tuple[DeepLab, Path]:
    """Train ``deeplab-largefov-tiny`` on synthetic scenes (seed 0) of ``size`` into
    ``run_dir`` with :func:`demo_recipe`."""
    from deeplab.data import DataSpec
    from deeplab.train import train

    recipe = demo_recipe(iterations)

    def callback(event: dict[str, Any]) -> None:
        if progress is not None and event["event"] == "step":
            progress("train", int(event["iteration"]), recipe.iterations)

    result = train(
        recipe,
        DataSpec(kind="synthetic", synthetic_seed=0, synthetic_size=size),
        run_dir,
        device="cpu",
        callback=callback,
    )
    if result.model_path is None:
        raise RuntimeError(f"training in {run_dir} stopped before writing a model")
    return result.model.eval(), result.model_path


def main_class(label: np.ndarray, num_classes: int, skip: Sequence[int] = (0,)) -> int:
    """The scene's main object class: the most frequent non-void label not in ``skip``
    (the background classes); without one, the most frequent label (0 if all void)."""
    labelled = label[label != IGNORE_INDEX]
    values = labelled[~np.isin(labelled, np.asarray(skip, dtype=labelled.dtype))]
    if values.size == 0:
        values = labelled
    if values.size == 0:
        return 0
    return int(np.bincount(values, minlength=num_classes).argmax())


def scene_panel(
    predictor: Predictor,
    sample: Any,
    params: CRFParams,
    class_names: tuple[str, ...],
    skip: Sequence[int] = (0,),
) -> ScenePanel:
    """Image, DCNN, DCNN+CRF, ground truth and the beliefs of the main class
    (:func:`main_class`): the DCNN's softmax, then the CRF marginals after the iterations
    in :data:`BELIEF_ITERATIONS`."""
    image, label = sample.image, sample.label
    logits = predictor.logits(image)
    cls = main_class(label, len(class_names), skip)
    z = np.exp(logits - logits.max(0, keepdims=True))
    beliefs = [("DCNN output", z[cls] / z.sum(0))]
    want = set(BELIEF_ITERATIONS) | {params.iterations}
    seen: dict[int, np.ndarray] = {}

    def keep(it: int, q: np.ndarray) -> None:
        if it + 1 in want:
            seen[it + 1] = q.copy()

    # Beliefs need iteration 10 even when the CRF in use stops earlier.
    longest = params.replace(iterations=max(params.iterations, *BELIEF_ITERATIONS))
    refine(image, logits, longest, callback=keep)
    beliefs += [(f"CRF iteration {it}", seen[it][cls]) for it in BELIEF_ITERATIONS]
    final = seen[params.iterations] if params.iterations > 0 else logits
    return ScenePanel(
        name=sample.name,
        image=image,
        dcnn=np.asarray(logits.argmax(0), dtype=np.uint8),
        crf=np.asarray(final.argmax(0), dtype=np.uint8),
        truth=label,
        belief_class=class_names[cls],
        beliefs=beliefs,
    )


def panel_scenes(
    predictor: Predictor,
    scenes: Any,
    count: int,
    num_classes: int,
    min_found: float = 0.3,
    skip: Sequence[int] = (0,),
) -> list[int]:
    """Indices of ``count`` scenes to show: first those whose main object class the network
    finds (its argmax covers at least ``min_found`` of that class's pixels), so that the
    belief maps show the class where it is; then, if too few, other scenes with an
    object, then any. A scene whose object the network misses would show belief maps of
    an absent class, uniformly near 0."""
    found: list[int] = []
    with_object: list[int] = []
    others: list[int] = []
    for i in range(len(scenes)):
        if len(found) >= count:
            break
        label = scenes[i].label
        cls = main_class(label, num_classes, skip)
        if cls in skip:
            others.append(i)
            continue
        truth = label == cls
        dcnn = predictor.logits(scenes[i].image).argmax(0)
        if float((dcnn[truth] == cls).mean()) >= min_found:
            found.append(i)
        else:
            with_object.append(i)
    return (found + with_object + others)[:count]


def _panel_strip(panel: ScenePanel, palette: np.ndarray) -> np.ndarray:
    from deeplab.data.classes import colorize

    labels = [colorize(x, palette) for x in (panel.dcnn, panel.crf, panel.truth)]
    return np.concatenate([panel.image, *labels], axis=1)


@dataclass
class _Inputs:
    """What one demo run scores: the network, its CRF, the images and how to show them."""

    model: DeepLab
    weights: Path
    crf: CRFParams
    dataset: SegmentationDataset
    limit: int | None
    data_note: str
    band: str
    skip: tuple[int, ...]
    title: str


def _load_weights(given: Path | None, data: str, asset: str) -> tuple[DeepLab, Path]:
    """``given`` or the shipped checkpoint for ``data``, resolved as ``deeplab segment``
    resolves ``--weights`` (:func:`deeplab.models.load_network`)."""
    found = given if given is not None else shipped_weights(data)
    if found is None:
        hint = "train one with `deeplab demo --data synthetic --train` (a few minutes) or "
        raise FileNotFoundError(
            f"this installation has no shipped checkpoint deeplab/assets/{asset}: "
            + (hint if data == "synthetic" else "")
            + "pass --weights FILE"
        )
    return load_network(None, found).model, Path(found)


def _check_classes(model: DeepLab, weights: Path, expected: tuple[str, ...], what: str) -> None:
    names = tuple(model.class_names) or expected
    if names != expected:
        raise ValueError(f"{weights} predicts {names}; {what}: {expected}")


def _camvid_inputs(opts: DemoOptions) -> _Inputs:
    if opts.train:
        raise ValueError(
            "--train retrains the synthetic-scene model only (--data synthetic); the CamVid "
            "model's recipe is configs/deeplab-largefov-tiny-camvid.json (README, CamVid)"
        )
    model, weights = _load_weights(opts.weights, "camvid", SHIPPED_WEIGHTS)
    root = opts.camvid_root or shipped_camvid_root()
    if root is None:
        raise FileNotFoundError(
            f"this installation has no shipped CamVid photos deeplab/assets/{SHIPPED_CAMVID}: "
            "pass --camvid-root DIR (a CamVid folder with val/, valannot/, val.txt)"
        )
    dataset = CamVid(root, "val")
    _check_classes(model, weights, CAMVID_CLASSES, "CamVid has")
    shipped = opts.camvid_root is None
    n = len(dataset) if opts.limit is None else min(opts.limit, len(dataset))
    note = (
        f"{n} CamVid val photos shipped in the package"
        if shipped
        else f"{n} CamVid val photos of {root}"
    ) + " (480x360; never trained on)"
    return _Inputs(
        model, weights, opts.crf or shipped_crf_params("camvid") or CRFParams.preset(
            "deeplab-largefov"), dataset, opts.limit, note, "boundary",
        tuple(CAMVID_CLASSES.index(c) for c in CAMVID_STUFF),
        "DeepLab v1 demo: DCNN and fully connected CRF on CamVid street scenes",
    )  # fmt: skip


def _synthetic_inputs(opts: DemoOptions, progress: Progress | None, out: Path) -> _Inputs:
    size = opts.size or shipped_training()[1]
    if opts.train:
        model, weights = train_demo_model(out / "train", opts.train_iterations, size, progress)
    else:
        model, weights = _load_weights(opts.weights, "synthetic", SYNTHETIC_WEIGHTS)
    _check_classes(model, weights, SYNTHETIC_CLASSES, "the synthetic scenes have")
    params = opts.crf or shipped_crf_params("synthetic") or CRFParams.preset("deeplab-largefov")
    scenes = SyntheticScenes(opts.scenes, size=size, seed=opts.seed)
    note = f"{opts.scenes} held-out synthetic scenes, seed {opts.seed}, {size[0]}x{size[1]}"
    return _Inputs(
        model, weights, params, scenes, None, note, "void", (0,),
        "DeepLab v1 demo: DCNN and fully connected CRF on synthetic scenes",
    )  # fmt: skip


def run_demo(
    out_dir: str | Path,
    options: DemoOptions | None = None,
    progress: Progress | None = None,
) -> DemoResult:
    """Run the demo (module docstring) and write its files to ``out_dir``."""
    opts = options or DemoOptions()
    if opts.data not in DEMO_DATA:
        raise ValueError(f"demo data {opts.data!r}: expected one of {DEMO_DATA}")
    out = Path(out_dir)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    if opts.data == "camvid":
        inputs = _camvid_inputs(opts)
    else:
        inputs = _synthetic_inputs(opts, progress, out)
        if opts.train:
            seconds["train"] = time.perf_counter() - start
    model, weights, params = inputs.model, inputs.weights, inputs.crf
    class_names = tuple(inputs.dataset.class_names)
    palette = palette_for(class_names)
    total = len(inputs.dataset) if inputs.limit is None else min(inputs.limit, len(inputs.dataset))

    t = time.perf_counter()
    result = evaluate(
        model,
        inputs.dataset,
        crf=params,
        workers=opts.workers,
        trimap=inputs.band,
        limit=inputs.limit,
        progress=None if progress is None else (lambda n: progress("evaluate", n, total)),
    )
    seconds["evaluate"] = time.perf_counter() - t

    t = time.perf_counter()
    method = "DCNN"  # the trimap legend then matches the report table (DCNN, DCNN-CRF)
    info = {"model": SHIPPED_MODEL, "weights": str(weights), "data": inputs.data_note}
    paths = result.write(out, method, **info)
    predictor = Predictor(model)
    panels = []
    count = min(opts.panels, total)
    for n, i in enumerate(
        panel_scenes(predictor, inputs.dataset, count, len(class_names), skip=inputs.skip)
    ):
        panel = scene_panel(predictor, inputs.dataset[i], params, class_names, inputs.skip)
        panels.append(panel)
        save_png(out / "scenes" / f"{panel.name}.png", _panel_strip(panel, palette))
        if progress is not None:
            progress("panels", n + 1, count)
    seconds["panels"] = time.perf_counter() - t

    if result.crf is None or "trimap" not in paths:
        raise RuntimeError("evaluate() returned no CRF or trimap scores")
    band = (
        "the pixels within the given distance of a class change in the ground truth "
        "(CamVid's void pixels are not a thin outline band)"
        if inputs.band == "boundary"
        else "the void band of the ground truth"
    )
    figures = [
        Figure(
            "Trimap: accuracy near object boundaries (paper Fig. 5)",
            paths["trimap"].read_bytes(),
            f"Pixel accuracy and mean IoU within a band of the given width around the object "
            f"boundaries: {band}.",
        )
    ]
    for key, name in (("confusion", "DCNN"), ("confusion_crf", "DCNN+CRF")):
        if key in paths:
            figures.append(
                Figure(
                    f"Confusion matrix, {name}",
                    paths[key].read_bytes(),
                    "Rows: true class, columns: predicted class, over all scored images; "
                    "each row sums to 100% (the share of that class's pixels given each "
                    f"label; void not counted). {paths[key].name} in the output folder.",
                )
            )
    curve = out / "train" / "training_curve.png"
    if opts.train and curve.is_file():
        figures.append(Figure("Training curve", curve.read_bytes()))
    summary = [
        ("network", f"{SHIPPED_MODEL} ({sum(p.numel() for p in model.parameters()):,} weights)"),
        ("weights", f"{weights}" + (" (trained by this run)" if opts.train else "")),
        ("images", inputs.data_note),
        ("CRF", json.dumps(params.to_dict())),
        (
            "mean IoU",
            f"DCNN {100 * result.mean_iou:.2f}%, DCNN+CRF {100 * result.crf.mean_iou():.2f}%",
        ),
        (
            "time",
            ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
            + f"; total {time.perf_counter() - start:.1f} s",
        ),
    ]
    report = write_report(
        out / "report.html",
        ReportData(
            title=inputs.title,
            class_names=class_names,
            methods={"DCNN": result.plain, "DCNN+CRF": result.crf},
            summary=summary,
            figures=figures,
            panels=panels,
            palette=palette,
        ),
    )
    seconds["total"] = time.perf_counter() - start
    files = [report, *paths.values(), *(out / "scenes" / f"{p.name}.png" for p in panels)]
    log.info("demo: mIoU %.4f -> %.4f with the CRF", result.mean_iou, result.crf.mean_iou())
    return DemoResult(result, report, weights, params, files, seconds)
