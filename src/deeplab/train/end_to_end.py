"""End-to-end training of the DCNN and the dense CRF (the paper's section 6 outlook).

The network's stride-8 scores are upsampled bilinearly to the input size (as at test
time) and refined by the differentiable mean-field CRF of :mod:`deeplab.crf.torch_backend`,
unrolled for ``crf_train_iterations`` updates (5) in training and the CRF's own count (10)
at test. The loss is the negative log of the CRF marginals at full resolution; the
gradient reaches the network's weights through the unrolled updates and the kernel weights
w1, w2 (kept positive as softplus of a raw parameter). The theta_* stay fixed: the lattice
is built from them, and a lattice is not differentiable in its positions.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from deeplab.crf import CRFParams
from deeplab.crf.torch_backend import DenseCRF
from deeplab.models import DeepLab
from deeplab.models.inputs import from_model_input
from deeplab.predict import upsample_logits

__all__ = ["CRFTrainingNet", "crf_layer", "crf_param_group"]

log = logging.getLogger(__name__)


class CRFTrainingNet(nn.Module):
    """DCNN, bilinear upsampling to the input size, then the unrolled dense CRF.

    forward(x): x (B, 3, H, W) Caffe-convention input (the network's own); returns log Q
    (B, L, H, W), the log CRF marginals at input resolution (for ``F.nll_loss``). The CRF
    sees the RGB image recovered from x; crops padded with the mean become mean-grey.
    """

    def __init__(self, net: DeepLab, crf: DenseCRF) -> None:
        super().__init__()
        self.net = net
        self.crf = crf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = upsample_logits(self.net(x), size=(x.shape[-2], x.shape[-1]))
        images = from_model_input(x.detach().float()).clamp(0.0, 255.0)
        # Mean field runs in float32 whatever the network's autocast precision.
        with torch.autocast(x.device.type, enabled=False):
            return self.crf(images, logits.float(), log=True)


def crf_layer(
    spec: str | CRFParams, train_iterations: int, test_iterations: int | None = None
) -> DenseCRF:
    """The CRF to train: thetas and initial w1, w2 from a preset or JSON file ``spec``;
    ``train_iterations`` updates in training, the params' count (or ``test_iterations``)
    at test."""
    params = CRFParams.resolve(spec)
    if params.w1 <= 0 or params.w2 <= 0:
        raise ValueError(
            f"CRF {spec!r}: end-to-end training learns w1 and w2 and needs both > 0 to start "
            f"from, got w1={params.w1}, w2={params.w2}"
        )
    return DenseCRF(
        params,
        learn_weights=True,
        iterations=params.iterations if test_iterations is None else test_iterations,
        train_iterations=train_iterations,
    )


def crf_param_group(crf: DenseCRF, lr_mult: float) -> dict[str, Any]:
    """The CRF's learnable weights as one SGD group (see ``recipe.param_groups``): their own
    learning-rate multiple and no weight decay, which would pull w1, w2 towards
    softplus(0) = 0.69 for no reason."""
    named = [(f"crf.{name}", p) for name, p in crf.named_parameters() if p.requires_grad]
    return {
        "group": "crf",
        "params": [p for _, p in named],
        "names": [n for n, _ in named],
        "lr_mult": float(lr_mult),
        "weight_decay": 0.0,
    }
