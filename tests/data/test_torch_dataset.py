from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from deeplab.data.synthetic import SyntheticScenes
from deeplab.data.torch_dataset import TorchSegmentation
from deeplab.data.transforms import EvalTransform, TrainTransform, from_caffe


def test_items_are_tensors_with_the_training_shapes() -> None:
    ds = TorchSegmentation(SyntheticScenes(4, size=(96, 120), seed=0), TrainTransform(crop_size=81))
    image, label = ds[0]
    assert image.shape == (3, 81, 81) and image.dtype == torch.float32
    assert label.shape == (11, 11) and label.dtype == torch.int64
    assert len(ds) == 4 and ds.names == ds.dataset.names and ds.class_names[0] == "background"
    assert set(torch.unique(label).tolist()) <= {0, 1, 2, 3, 4, 5, 255}


def test_deterministic_per_item_and_epoch() -> None:
    ds = TorchSegmentation(
        SyntheticScenes(3, size=(96, 120), seed=0), TrainTransform(crop_size=65), seed=9
    )
    a1, b1 = ds[1], ds[1]
    assert torch.equal(a1[0], b1[0]) and torch.equal(a1[1], b1[1])
    assert torch.equal(ds[-2][0], a1[0])
    crops = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        crops.add(from_caffe(ds[1][0]).tobytes())
    assert len(crops) > 1


def test_dataloader_results_do_not_depend_on_workers() -> None:
    ds = TorchSegmentation(
        SyntheticScenes(6, size=(80, 80), seed=2), TrainTransform(crop_size=49), seed=1
    )
    serial = list(DataLoader(ds, batch_size=3, num_workers=0))
    parallel = list(DataLoader(ds, batch_size=3, num_workers=2))
    assert serial[0][0].shape == (3, 3, 49, 49) and serial[0][1].shape == (3, 7, 7)
    for (xs, ys), (xp, yp) in zip(serial, parallel, strict=True):
        assert torch.equal(xs, xp) and torch.equal(ys, yp)


def test_eval_adapter_keeps_whole_image() -> None:
    scenes = SyntheticScenes(2, size=(70, 90), seed=3)
    ds = TorchSegmentation(scenes, EvalTransform())
    image, label = ds[1]
    assert image.shape == (3, 70, 90) and label.shape == (70, 90)
    np.testing.assert_array_equal(label.numpy(), scenes[1].label)
    np.testing.assert_array_equal(from_caffe(image), scenes[1].image)
