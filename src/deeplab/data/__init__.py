"""Datasets, image/label I/O and input transforms (SPEC sections 2 and 5).

Every dataset is a sequence of :class:`Sample` (``name``, ``image`` (H, W, 3) uint8 RGB,
``label`` (H, W) uint8 with 255 = void) with ``names`` and ``class_names``::

    from deeplab.data import SyntheticScenes, TorchSegmentation, TrainTransform
    ds = SyntheticScenes(100, size=(200, 200), seed=0)
    train = TorchSegmentation(ds, TrainTransform(crop_size=161))
    image, label = train[0]          # (3, 161, 161) float32, (21, 21) int64

Names are loaded from their submodule on first use: ``deeplab.data.classes`` and
``deeplab.data.image_io`` (which the CRF's command line uses) need numpy and Pillow only,
while the datasets for training need PyTorch and SciPy (the ``networks`` extra).
"""

from __future__ import annotations

import importlib

# Public name -> the submodule of deeplab.data that defines it.
_SUBMODULE: dict[str, str] = {
    # deeplab.data.camvid
    "CAMVID_CLASSES": "camvid",
    "CAMVID_PALETTE": "camvid",
    "CamVid": "camvid",
    "camvid_palette": "camvid",
    # deeplab.data.palettes
    "background_label": "palettes",
    "palette_for": "palettes",
    # deeplab.data.classes
    "IGNORE_INDEX": "classes",
    "VOC_CLASSES": "classes",
    "VOC_PALETTE": "classes",
    "VOC_SHORT_NAMES": "classes",
    "colorize": "classes",
    "read_label_png": "classes",
    "rgb_to_label": "classes",
    "voc_palette": "classes",
    "write_label_png": "classes",
    # deeplab.data.folder
    "FolderDataset": "folder",
    "read_class_names": "folder",
    "write_folder_dataset": "folder",
    # deeplab.data.image_io
    "load_image": "image_io",
    "load_label": "image_io",
    "save_image": "image_io",
    # deeplab.data.sample
    "Sample": "sample",
    "SegmentationDataset": "sample",
    # deeplab.data.sbd
    "SBDSegmentation": "sbd",
    "build_segmentation_class_aug": "sbd",
    "convert_sbd_labels": "sbd",
    "load_sbd_label": "sbd",
    "train_aug_names": "sbd",
    "trainval_aug_names": "sbd",
    "write_aug_lists": "sbd",
    # deeplab.data.synthetic
    "SYNTHETIC_CLASSES": "synthetic",
    "SyntheticScenes": "synthetic",
    "generate_scene": "synthetic",
    "write_synthetic_dataset": "synthetic",
    # deeplab.data.torch_dataset
    "TorchSegmentation": "torch_dataset",
    # deeplab.data.transforms
    "EvalTransform": "transforms",
    "MEAN_BGR": "transforms",
    "TrainTransform": "transforms",
    "from_caffe": "transforms",
    "subsample_label": "transforms",
    "to_caffe": "transforms",
    # deeplab.data.voc
    "AUG_LABEL_DIR": "voc",
    "VOCSegmentation": "voc",
    "read_name_list": "voc",
    "write_voc_layout": "voc",
}

__all__ = sorted(_SUBMODULE)


def __getattr__(name: str) -> object:
    # PEP 562: import the defining submodule only when one of its names is asked for, so that
    # the CRF-only install (no torch, no scipy) can use the image and label I/O.
    module = _SUBMODULE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULE))
