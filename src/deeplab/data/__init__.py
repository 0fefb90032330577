"""Datasets, image/label I/O and input transforms (SPEC sections 2 and 5).

Every dataset is a sequence of :class:`Sample` (``name``, ``image`` (H, W, 3) uint8 RGB,
``label`` (H, W) uint8 with 255 = void) with ``names`` and ``class_names``::

    from deeplab.data import SyntheticScenes, TorchSegmentation, TrainTransform
    ds = SyntheticScenes(100, size=(200, 200), seed=0)
    train = TorchSegmentation(ds, TrainTransform(crop_size=161))
    image, label = train[0]          # (3, 161, 161) float32, (21, 21) int64
"""

from deeplab.data.camvid import CAMVID_CLASSES, CAMVID_PALETTE, CamVid, camvid_palette
from deeplab.data.classes import (
    IGNORE_INDEX,
    VOC_CLASSES,
    VOC_PALETTE,
    VOC_SHORT_NAMES,
    colorize,
    read_label_png,
    rgb_to_label,
    voc_palette,
    write_label_png,
)
from deeplab.data.folder import FolderDataset, read_class_names, write_folder_dataset
from deeplab.data.image_io import load_image, load_label, save_image
from deeplab.data.palettes import background_label, palette_for
from deeplab.data.sample import Sample, SegmentationDataset
from deeplab.data.sbd import (
    SBDSegmentation,
    build_segmentation_class_aug,
    convert_sbd_labels,
    load_sbd_label,
    train_aug_names,
    trainval_aug_names,
    write_aug_lists,
)
from deeplab.data.synthetic import (
    SYNTHETIC_CLASSES,
    SyntheticScenes,
    generate_scene,
    write_synthetic_dataset,
)
from deeplab.data.torch_dataset import TorchSegmentation
from deeplab.data.transforms import (
    MEAN_BGR,
    EvalTransform,
    TrainTransform,
    from_caffe,
    subsample_label,
    to_caffe,
)
from deeplab.data.voc import AUG_LABEL_DIR, VOCSegmentation, read_name_list, write_voc_layout

__all__ = [
    "AUG_LABEL_DIR",
    "CAMVID_CLASSES",
    "CAMVID_PALETTE",
    "IGNORE_INDEX",
    "MEAN_BGR",
    "SYNTHETIC_CLASSES",
    "VOC_CLASSES",
    "VOC_PALETTE",
    "VOC_SHORT_NAMES",
    "CamVid",
    "EvalTransform",
    "FolderDataset",
    "SBDSegmentation",
    "Sample",
    "SegmentationDataset",
    "SyntheticScenes",
    "TorchSegmentation",
    "TrainTransform",
    "VOCSegmentation",
    "background_label",
    "build_segmentation_class_aug",
    "camvid_palette",
    "colorize",
    "convert_sbd_labels",
    "from_caffe",
    "generate_scene",
    "load_image",
    "load_label",
    "load_sbd_label",
    "palette_for",
    "read_class_names",
    "read_label_png",
    "read_name_list",
    "rgb_to_label",
    "save_image",
    "subsample_label",
    "to_caffe",
    "train_aug_names",
    "trainval_aug_names",
    "voc_palette",
    "write_aug_lists",
    "write_folder_dataset",
    "write_label_png",
    "write_synthetic_dataset",
    "write_voc_layout",
]
