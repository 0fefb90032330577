"""Datasets, image/label I/O and input transforms (paper section 5).

Every dataset is a sequence of :class:`Sample` (``name``, ``image`` (H, W, 3) uint8 RGB,
``label`` (H, W) uint8 with 255 = void) with ``names`` and ``class_names``::

    from deeplab.data import SyntheticScenes, TorchSegmentation, TrainTransform
    ds = SyntheticScenes(100, size=(200, 200), seed=0)
    train = TorchSegmentation(ds, TrainTransform(crop_size=161))
    image, label = train[0]          # (3, 161, 161) float32, (21, 21) int64

:class:`DataSpec` names a source in JSON-able fields and :func:`build_dataset` opens it
(reading only: ``deeplab prepare-voc`` / :func:`prepare_train_aug` writes the ``train_aug``
labels once, explicitly).

Names are loaded from their submodule on first use. This package imports
:mod:`deeplab.conventions` and its own submodules, never :mod:`deeplab.models`: everything
but :class:`TorchSegmentation` (PyTorch) needs numpy and Pillow, and SBD's ``.mat`` labels
SciPy (the ``networks`` extra), so the CRF's command line can use the image and label I/O.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

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
    "TrainAugFiles": "sbd",
    "build_segmentation_class_aug": "sbd",
    "convert_sbd_labels": "sbd",
    "load_sbd_label": "sbd",
    "prepare_train_aug": "sbd",
    "train_aug_names": "sbd",
    "trainval_aug_names": "sbd",
    "write_aug_lists": "sbd",
    # deeplab.data.spec
    "DATA_KINDS": "spec",
    "DataSpec": "spec",
    "build_dataset": "spec",
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

if TYPE_CHECKING:
    # What a type checker sees instead of __getattr__'s objects (tests/data/test_imports.py
    # checks that these imports and _SUBMODULE agree).
    from deeplab.data.camvid import CAMVID_CLASSES as CAMVID_CLASSES
    from deeplab.data.camvid import CAMVID_PALETTE as CAMVID_PALETTE
    from deeplab.data.camvid import CamVid as CamVid
    from deeplab.data.camvid import camvid_palette as camvid_palette
    from deeplab.data.classes import IGNORE_INDEX as IGNORE_INDEX
    from deeplab.data.classes import VOC_CLASSES as VOC_CLASSES
    from deeplab.data.classes import VOC_PALETTE as VOC_PALETTE
    from deeplab.data.classes import VOC_SHORT_NAMES as VOC_SHORT_NAMES
    from deeplab.data.classes import colorize as colorize
    from deeplab.data.classes import read_label_png as read_label_png
    from deeplab.data.classes import rgb_to_label as rgb_to_label
    from deeplab.data.classes import voc_palette as voc_palette
    from deeplab.data.classes import write_label_png as write_label_png
    from deeplab.data.folder import FolderDataset as FolderDataset
    from deeplab.data.folder import read_class_names as read_class_names
    from deeplab.data.folder import write_folder_dataset as write_folder_dataset
    from deeplab.data.image_io import load_image as load_image
    from deeplab.data.image_io import load_label as load_label
    from deeplab.data.image_io import save_image as save_image
    from deeplab.data.palettes import background_label as background_label
    from deeplab.data.palettes import palette_for as palette_for
    from deeplab.data.sample import Sample as Sample
    from deeplab.data.sample import SegmentationDataset as SegmentationDataset
    from deeplab.data.sbd import SBDSegmentation as SBDSegmentation
    from deeplab.data.sbd import TrainAugFiles as TrainAugFiles
    from deeplab.data.sbd import build_segmentation_class_aug as build_segmentation_class_aug
    from deeplab.data.sbd import convert_sbd_labels as convert_sbd_labels
    from deeplab.data.sbd import load_sbd_label as load_sbd_label
    from deeplab.data.sbd import prepare_train_aug as prepare_train_aug
    from deeplab.data.sbd import train_aug_names as train_aug_names
    from deeplab.data.sbd import trainval_aug_names as trainval_aug_names
    from deeplab.data.sbd import write_aug_lists as write_aug_lists
    from deeplab.data.spec import DATA_KINDS as DATA_KINDS
    from deeplab.data.spec import DataSpec as DataSpec
    from deeplab.data.spec import build_dataset as build_dataset
    from deeplab.data.synthetic import SYNTHETIC_CLASSES as SYNTHETIC_CLASSES
    from deeplab.data.synthetic import SyntheticScenes as SyntheticScenes
    from deeplab.data.synthetic import generate_scene as generate_scene
    from deeplab.data.synthetic import write_synthetic_dataset as write_synthetic_dataset
    from deeplab.data.torch_dataset import TorchSegmentation as TorchSegmentation
    from deeplab.data.transforms import MEAN_BGR as MEAN_BGR
    from deeplab.data.transforms import EvalTransform as EvalTransform
    from deeplab.data.transforms import TrainTransform as TrainTransform
    from deeplab.data.transforms import from_caffe as from_caffe
    from deeplab.data.transforms import subsample_label as subsample_label
    from deeplab.data.transforms import to_caffe as to_caffe
    from deeplab.data.voc import AUG_LABEL_DIR as AUG_LABEL_DIR
    from deeplab.data.voc import VOCSegmentation as VOCSegmentation
    from deeplab.data.voc import read_name_list as read_name_list
    from deeplab.data.voc import write_voc_layout as write_voc_layout


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
