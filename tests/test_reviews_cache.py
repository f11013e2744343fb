"""The reviews task's cached head: an unreadable cache file is refitted with one logged line, never trusted.

Fast: the encoder, the tokenized data and the fit are stubbed; only the cache handling of ``cached_model`` runs.
"""

from __future__ import annotations

import logging
import types

import pytest
import torch


@pytest.mark.parametrize("content", [b"", b"not a torch file at all", b"\x80\x04K\x01."],
                         ids=["empty", "garbage", "a pickle of an int"])
def test_an_unreadable_head_cache_is_refitted(tmp_path, monkeypatch, caplog, content):
    """Bug: an empty file (EOFError) or garbage (pickle.UnpicklingError) crashed the task instead of refitting."""
    from transformers import BertConfig, BertModel

    from autocompress.tasks import reviews

    encoder = BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
                                   vocab_size=30), add_pooling_layer=False)
    head = {"weight": torch.arange(16, dtype=torch.float32).reshape(2, 8), "bias": torch.tensor([0.5, -0.5])}
    path = tmp_path / "head.pt"
    monkeypatch.setattr(reviews, "load_encoder", lambda: (encoder, None))
    monkeypatch.setattr(reviews, "TokenizedTexts", lambda *args: None)
    monkeypatch.setattr(reviews, "fit_head", lambda model, train: head)
    monkeypatch.setattr(reviews, "_head_path", lambda: path)
    path.write_bytes(content)
    split = types.SimpleNamespace(train_texts=["a"], train_labels=[0])
    with caplog.at_level(logging.WARNING):
        model, _ = reviews.cached_model(split=split)
    assert torch.equal(model.classifier.weight, head["weight"])  # refitted
    assert torch.equal(torch.load(path, weights_only=True)["bias"], head["bias"])  # and the cache rewritten
    assert sum("unreadable" in r.getMessage() for r in caplog.records) == 1
