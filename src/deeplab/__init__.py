"""DeepLab v1 (Chen et al., ICLR 2015) with a fast fully connected CRF.

The CRF lives in :mod:`deeplab.crf` and can be used on its own::

    import deeplab.crf as crf
    q = crf.dense_crf(image, probs, crf.CRFParams.preset("deeplab-largefov"))
"""

__version__ = "0.1.0"
