"""DeepLab v1 networks (Chen et al., ICLR 2015, section 3) in PyTorch.

Example::

    import torch
    from deeplab.models import build_model, to_model_input

    model = build_model("deeplab-largefov-tiny").eval()
    rgb = torch.randint(0, 256, (1, 3, 321, 321), dtype=torch.uint8)
    logits = model(to_model_input(rgb))  # (1, 21, 41, 41)

Inputs follow the Caffe convention (:mod:`deeplab.models.inputs`); outputs are stride-8
logits, not yet upsampled. :func:`load_network` resolves which weights a run uses (a file,
a converted checkpoint's name, or the shipped CamVid model of :mod:`deeplab.models.shipped`).
"""

from deeplab.models.caffe import parse_caffemodel, read_caffemodel
from deeplab.models.convert import ConversionReport
from deeplab.models.deeplab import DeepLab
from deeplab.models.inputs import (
    CAFFE_MEAN_BGR,
    INPUT_CONVENTION,
    from_model_input,
    to_model_input,
)
from deeplab.models.loading import build_model, convert_file, load_model, save_model
from deeplab.models.network import (
    Network,
    NetworkInfo,
    load_network,
    real_weights_hint,
    resolve_crf,
)
from deeplab.models.shipped import (
    SHIPPED_CAMVID,
    SHIPPED_CRF,
    SHIPPED_MODEL,
    SHIPPED_NOTE,
    SHIPPED_WEIGHTS,
    SYNTHETIC_CRF,
    SYNTHETIC_WEIGHTS,
    shipped_camvid_root,
    shipped_crf_params,
    shipped_weights,
)
from deeplab.models.variants import VARIANTS, Variant, get_variant, list_models
from deeplab.models.weights import (
    VOC_CLASSES,
    WEIGHTS,
    CheckpointMeta,
    WeightsRecord,
    get_weights_record,
    load_checkpoint,
    save_checkpoint,
)

__all__ = [
    "CAFFE_MEAN_BGR",
    "INPUT_CONVENTION",
    "SHIPPED_CAMVID",
    "SHIPPED_CRF",
    "SHIPPED_MODEL",
    "SHIPPED_NOTE",
    "SHIPPED_WEIGHTS",
    "SYNTHETIC_CRF",
    "SYNTHETIC_WEIGHTS",
    "VARIANTS",
    "VOC_CLASSES",
    "WEIGHTS",
    "CheckpointMeta",
    "ConversionReport",
    "DeepLab",
    "Network",
    "NetworkInfo",
    "Variant",
    "WeightsRecord",
    "build_model",
    "convert_file",
    "from_model_input",
    "get_variant",
    "get_weights_record",
    "list_models",
    "load_checkpoint",
    "load_model",
    "load_network",
    "parse_caffemodel",
    "read_caffemodel",
    "real_weights_hint",
    "resolve_crf",
    "save_checkpoint",
    "save_model",
    "shipped_camvid_root",
    "shipped_crf_params",
    "shipped_weights",
    "to_model_input",
]
