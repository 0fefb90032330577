"""Unary energies ``U = -log P`` from probabilities, logits or a hard label map."""

from __future__ import annotations

import numpy as np

from deeplab.crf.validation import as_float32, check_finite, check_no_negatives, real_array

# Probabilities are clipped here before the log so a hard zero stays a finite energy.
PROB_FLOOR = 1e-8


def unary_from_probs(probs: object, *, floor: float = PROB_FLOOR) -> np.ndarray:
    """(L, ...) class probabilities -> float32 energies -log(max(P, floor)).

    Rows need not sum to one: a per-point factor adds a constant that cancels in the CRF.
    """
    p = real_array(probs, "probs")
    p = as_float32(p, "probs", p.ndim)
    if p.ndim < 2:
        raise ValueError(f"probs: expected (L, H, W) or (L, N), got shape {p.shape}")
    check_no_negatives(p, "probs")
    return -np.log(np.maximum(p, np.float32(floor)))


def unary_from_logits(logits: object) -> np.ndarray:
    """(L, ...) unnormalised scores -> energies ``-logits`` (equal to -log softmax up to a
    per-point constant)."""
    z = real_array(logits, "logits")
    z = as_float32(z, "logits", z.ndim)
    if z.ndim < 2:
        raise ValueError(f"logits: expected (L, H, W) or (L, N), got shape {z.shape}")
    return -z


def label_to_channel(labels: np.ndarray, unknown: int | None) -> np.ndarray:
    """Channel of each label value when ``unknown`` is cut out of the label range."""
    lab = np.asarray(labels)
    if unknown is None:
        return lab
    return np.where(lab > unknown, lab - 1, lab)


def channel_to_label(channel: np.ndarray, unknown: int | None) -> np.ndarray:
    """Inverse of :func:`label_to_channel` for an array of channels."""
    ch = np.asarray(channel)
    if unknown is None:
        return ch
    return np.where(ch >= unknown, ch + 1, ch)


def unary_from_labels(
    labels: np.ndarray,
    num_labels: int,
    *,
    confidence: float = 0.7,
    unknown: int | None = None,
) -> np.ndarray:
    """A hard label map (H, W) or (N,) -> (L, ...) energies trusting each label with
    probability ``confidence`` and spreading the rest evenly over the other labels.

    Pixels equal to ``unknown`` get a uniform distribution, and that value is cut out of
    the label range: with ``unknown=0`` labels 1..L map to channels 0..L-1 (pydensecrf's
    ``zero_unsure``); with ``unknown=255`` labels 0..L-1 keep their channels.
    """
    lab = np.asarray(labels)
    if not np.issubdtype(lab.dtype, np.integer):
        raise TypeError(f"labels: expected an integer label map, got dtype {lab.dtype}")
    if int(num_labels) != num_labels or num_labels < 2:
        raise ValueError(f"num_labels must be an integer >= 2, got {num_labels!r}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    lab = lab.astype(np.int64)
    known = np.ones(lab.shape, bool) if unknown is None else lab != unknown
    chan = np.where(known, label_to_channel(lab, unknown), 0)
    bad = known & ((chan < 0) | (chan >= num_labels))
    if bad.any():
        vals = np.unique(lab[bad])[:10].tolist()
        raise ValueError(
            f"labels: values {vals} are outside the {num_labels} labels"
            + ("" if unknown is None else f" (unknown = {unknown})")
        )
    wrong = -np.log((1.0 - confidence) / (num_labels - 1))
    right = -np.log(confidence)
    flat_chan = chan.reshape(-1)
    u = np.full((num_labels, flat_chan.size), wrong, np.float32)
    u[flat_chan, np.arange(flat_chan.size)] = right
    u[:, ~known.reshape(-1)] = -np.log(1.0 / num_labels)
    check_finite(u, "unary")
    return u.reshape((num_labels, *lab.shape))
