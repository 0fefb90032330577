"""The tests' prototxt reader: the text format as the released configs use it."""

from __future__ import annotations

import pytest

from .prototxt import Message, parse_prototxt

TEXT = """
name: "${NET_ID}"  # a comment
layers {
  name: "fc8_${EXP}" type: CONVOLUTION
  blobs_lr: 1 blobs_lr: 2.5
  convolution_param { num_output: ${NUM_LABELS} pad: -7 }
  include: { phase: TEST }
}
layer { name: 'b' bottom: "a" bottom: "c\\"d" }
"""


def test_fields_nesting_repeats_and_placeholders() -> None:
    net = parse_prototxt(TEXT, {"EXP": "voc12", "NUM_LABELS": "21"})
    assert net.one("name") == "${NET_ID}"  # unknown placeholders stay as text
    (layer,) = net.all("layers")
    assert isinstance(layer, Message)
    assert layer.one("name") == "fc8_voc12" and layer.one("type") == "CONVOLUTION"
    assert layer.all("blobs_lr") == [1, 2.5]
    assert layer.sub("convolution_param").one("num_output") == 21
    assert layer.sub("convolution_param").one("pad") == -7
    assert layer.sub("include").one("phase") == "TEST"
    assert net.sub("layer").all("bottom") == ["a", 'c"d']
    assert layer.one("absent", 3) == 3
    with pytest.raises(ValueError, match="repeats"):
        layer.one("blobs_lr")
    with pytest.raises(KeyError, match="absent"):
        layer.one("absent")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("a { b: 1", "unclosed"),
        ("a: 1 }", "unbalanced"),
        ("a:", "no value"),
        ("a: }", "no value"),
        (": 1", "field name"),
        ('a: "open', "cannot read"),
    ],
)
def test_malformed_text_is_a_value_error(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_prototxt(text)
