"""Map foreign weights onto DeepLab variants: pure functions, state dict in, state dict out.

Three sources are understood:

* **torchvision VGG-16** (``features.N.*``, ``classifier.{0,3,6}.*``; RGB input on 0..1
  normalised by the ImageNet mean/std): the input normalisation and the RGB->BGR flip are
  folded into ``conv1_1`` (:func:`fold_torchvision_input`), fc6/fc7 become convolutions
  and are decimated (:func:`decimate_fc`), the 1000-way classifier is dropped.
* **Caffe** layer blobs (``.caffemodel``, see :mod:`deeplab.models.caffe`): the authors'
  released DeepLab nets and their reduced ImageNet init nets ``vgg16_128`` / ``vgg16_20M``,
  mapped by layer name through :func:`caffe_layer_table`; a full-size VGG-16 fc6/fc7 (such
  as ``VGG_ILSVRC_16_layers``) is decimated the same way as torchvision's.
* **our own** state dicts (keys ``conv1_1.weight`` ...; a ``module.`` prefix is stripped).

Every function returns the mapped tensors and a :class:`ConversionReport` listing what was
mapped, what the target still misses (left at its fresh initialisation, e.g. a new fc8) and
what the source had that was not used, with the reason. Shape conflicts raise ValueError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from deeplab.models.surgery import (
    TORCHVISION_MEAN,
    TORCHVISION_STD,
    conv_form,
    decimate_fc,
    decimation_taps,
    fold_torchvision_input,
)
from deeplab.models.variants import MSC_TAPS, VGG16_BLOCKS, Variant, get_variant
from deeplab.models.vgg import conv_names

__all__ = [
    "TORCHVISION_MEAN",
    "TORCHVISION_STD",
    "ConversionReport",
    "caffe_layer_table",
    "decimate_fc",
    "decimation_taps",
    "fold_torchvision_input",
    "map_caffe",
    "map_deeplab",
    "map_torchvision_vgg16",
    "target_shapes",
]

Shape = tuple[int, ...]


@dataclass
class ConversionReport:
    """What a mapping did. ``mapped``: (source key, target key, note); ``missing``: target
    keys without a source tensor; ``unexpected``: (source key, shape, reason)."""

    source_format: str
    mapped: list[tuple[str, str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[tuple[str, Shape, str]] = field(default_factory=list)

    def lines(self, shapes: Mapping[str, Shape] | None = None) -> list[str]:
        """Human-readable report, one tensor per line."""
        out = [f"source format: {self.source_format}"]
        for src, dst, note in self.mapped:
            shape = f" {tuple(shapes[dst])}" if shapes and dst in shapes else ""
            out.append(f"mapped      {src} -> {dst}{shape}" + (f" ({note})" if note else ""))
        out += [f"missing     {key} (fresh initialisation)" for key in self.missing]
        out += [f"unexpected  {key} {shape} ({why})" for key, shape, why in self.unexpected]
        out.append(
            f"{len(self.mapped)} mapped, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected"
        )
        return out


def target_shapes(variant: Variant | str, num_classes: int) -> dict[str, Shape]:
    """State-dict key -> shape of a variant, computed on the meta device (no memory)."""
    from deeplab.models.deeplab import DeepLab

    with torch.device("meta"):
        model = DeepLab(get_variant(variant), num_classes)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


class _Mapper:
    """Shared bookkeeping of the map_* functions: shape checks, fc decimation, the report."""

    def __init__(self, variant: Variant | str, num_classes: int, source_format: str) -> None:
        self.variant = get_variant(variant)
        self.shapes = target_shapes(self.variant, num_classes)
        self.out: dict[str, torch.Tensor] = {}
        self.report = ConversionReport(source_format)
        self.conflicts: list[str] = []
        self.fc6_step = 1

    def put(self, src: str, dst: str, tensor: torch.Tensor, note: str = "") -> None:
        want = self.shapes.get(dst)
        if want is None:
            self.report.unexpected.append((src, tuple(tensor.shape), "no such tensor in target"))
        elif tuple(tensor.shape) != want:
            self.conflicts.append(f"{src} -> {dst}: expected {want}, got {tuple(tensor.shape)}")
        else:
            self.out[dst] = tensor
            self.report.mapped.append((src, dst, note))

    def put_fc(self, src: str, layer: str, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """fc6/fc7 from conv or fc form, decimated when the source is larger (full VGG)."""
        want = self.shapes[f"{layer}.weight"]
        try:
            w = conv_form(weight, self.fc6_step * want[1] if layer == "fc7" else want[1])
        except ValueError as exc:
            self.conflicts.append(f"{src}.weight -> {layer}.weight: {exc}")
            return
        bias = bias.reshape(-1)
        note = ""
        if tuple(w.shape) != want:
            if layer == "fc6":
                self.fc6_step = max(w.shape[0] // want[0], 1)
            in_step = self.fc6_step if layer == "fc7" else 1
            try:
                w, bias = decimate_fc(w, bias, want[2], want[0], in_step)
            except ValueError as exc:
                self.conflicts.append(f"{src}.weight -> {layer}.weight: {exc}")
                return
            note = f"decimated from {tuple(weight.shape)}"
        self.put(f"{src}.weight", f"{layer}.weight", w, note)
        self.put(f"{src}.bias", f"{layer}.bias", bias)

    def finish(self) -> tuple[dict[str, torch.Tensor], ConversionReport]:
        if self.conflicts:
            raise ValueError(
                f"weights do not fit {self.variant.name!r}:\n  " + "\n  ".join(self.conflicts)
            )
        self.report.missing = [k for k in self.shapes if k not in self.out]
        return self.out, self.report


def _torchvision_conv_indices() -> list[int]:
    """Indices of VGG-16's convolutions in torchvision's ``features`` Sequential."""
    indices, i = [], 0
    for n in VGG16_BLOCKS:
        for _ in range(n):
            indices.append(i)
            i += 2  # conv, ReLU
        i += 1  # max pool
    return indices


def map_torchvision_vgg16(
    state_dict: Mapping[str, torch.Tensor], variant: Variant | str, num_classes: int = 21
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """torchvision ``vgg16`` state dict -> DeepLab state dict (ImageNet initialisation).

    conv1_1 absorbs the input convention (:func:`fold_torchvision_input`); classifier.0/.3
    become fc6/fc7 (decimated to the variant's kernel and width); classifier.6 (ImageNet's
    1000 classes) is reported unexpected, and fc8 is reported missing.
    """
    m = _Mapper(variant, num_classes, "torchvision-vgg16")
    names = dict(zip(_torchvision_conv_indices(), conv_names(), strict=True))
    used: set[str] = set()
    for index, name in names.items():
        w, b = state_dict.get(f"features.{index}.weight"), state_dict.get(f"features.{index}.bias")
        if w is None or b is None:
            continue
        used |= {f"features.{index}.weight", f"features.{index}.bias"}
        note = ""
        if name == "conv1_1":
            w, b = fold_torchvision_input(w, b)
            note = "RGB/255 mean/std input folded to Caffe BGR"
        m.put(f"features.{index}.weight", f"{name}.weight", w, note)
        m.put(f"features.{index}.bias", f"{name}.bias", b)
    for index, layer in ((0, "fc6"), (3, "fc7")):
        key = f"classifier.{index}"
        if f"{key}.weight" in state_dict and f"{key}.bias" in state_dict:
            used |= {f"{key}.weight", f"{key}.bias"}
            m.put_fc(key, layer, state_dict[f"{key}.weight"], state_dict[f"{key}.bias"])
    for key, tensor in state_dict.items():
        if key in used:
            continue
        why = "ImageNet classifier; fc8 is new" if key.startswith("classifier.6.") else "unused"
        m.report.unexpected.append((key, tuple(tensor.shape), why))
    return m.finish()


def caffe_layer_table(variant: Variant | str) -> dict[str, tuple[str, ...]]:
    """Our layer name -> accepted Caffe layer names, first match wins.

    ============================  =====================================================
    ours                          Caffe (released DeepLab nets / init nets)
    ============================  =====================================================
    ``conv1_1`` ... ``conv5_3``   same names
    ``fc6``, ``fc7``              same names
    ``fc8``                       the variant's released name first (``fc8_pascal`` in
                                  DeepLab and DeepLab-MSc, ``fc8_voc12`` in the LargeFOV
                                  nets), then the other one, then ``fc8``
    ``msc.K.fc1``/``fc2``/``fc3``  ``{tap}_conv``/``{tap}_fc``/``{tap}_ms``, tap ``data``
                                  (K = 0), ``pool1`` ... ``pool4`` (K = 1..4): MSc nets
    ============================  =====================================================
    """
    v = get_variant(variant)
    table: dict[str, tuple[str, ...]] = {name: (name,) for name in conv_names()}
    classifiers = [v.caffe_classifier] + [
        c for c in ("fc8_pascal", "fc8_voc12", "fc8") if c != v.caffe_classifier
    ]
    table |= {"fc6": ("fc6",), "fc7": ("fc7",), "fc8": tuple(classifiers)}
    if v.msc:
        for k, tap in enumerate(MSC_TAPS):
            for j, suffix in enumerate(("conv", "fc", "ms"), start=1):
                table[f"msc.{k}.fc{j}"] = (f"{tap}_{suffix}",)
    return table


def map_caffe(
    layers: Mapping[str, Sequence[torch.Tensor]], variant: Variant | str, num_classes: int = 21
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Caffe ``{layer: [weight, bias]}`` -> DeepLab state dict, by :func:`caffe_layer_table`.

    Caffe already uses our input convention. A classifier whose class count differs from
    ``num_classes`` (an init net's ImageNet fc8) is reported unexpected and left fresh.
    """
    m = _Mapper(variant, num_classes, "caffe")
    used: set[str] = set()
    for ours, candidates in caffe_layer_table(m.variant).items():
        src = next((c for c in candidates if c in layers), None)
        if src is None:
            continue
        used.add(src)
        blobs = [torch.as_tensor(b) for b in layers[src]]
        if len(blobs) != 2:
            m.conflicts.append(f"{src}: expected 2 blobs (weight, bias), got {len(blobs)}")
            continue
        weight, bias = blobs
        if ours in ("fc6", "fc7"):
            m.put_fc(src, ours, weight, bias)
            continue
        want = m.shapes[f"{ours}.weight"]
        if (ours == "fc8" or ours.endswith("fc3")) and bias.numel() != want[0]:
            m.report.unexpected.append(
                (
                    src,
                    tuple(weight.shape),
                    f"classifier for {bias.numel()} classes, target has {want[0]}: left fresh",
                )
            )
            continue
        try:
            weight = conv_form(weight, want[1])
        except ValueError as exc:
            m.conflicts.append(f"{src}[0] -> {ours}.weight: {exc}")
            continue
        m.put(f"{src}[0]", f"{ours}.weight", weight)
        m.put(f"{src}[1]", f"{ours}.bias", bias.reshape(-1))
    for name, layer_blobs in layers.items():
        if name not in used:
            shape = tuple(layer_blobs[0].shape) if layer_blobs else ()
            m.report.unexpected.append((name, shape, "no matching layer in target"))
    return m.finish()


def map_deeplab(
    state_dict: Mapping[str, torch.Tensor], variant: Variant | str, num_classes: int = 21
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Our own key names (a ``module.`` prefix from DataParallel is stripped)."""
    m = _Mapper(variant, num_classes, "deeplab")
    for key, tensor in state_dict.items():
        m.put(key, key.removeprefix("module."), tensor)
    return m.finish()
