"""The built-in real-encoder task `reviews` (slow: it loads a 90 MB pretrained encoder and fits its head)."""

from __future__ import annotations

import pytest
import torch

from autocompress.components import share
from autocompress.profile import evaluate, profile_task
from autocompress.task import validate_task

pytestmark = pytest.mark.slow


def test_reviews_is_a_real_pretrained_encoder_whose_bytes_sit_in_its_embeddings():
    from autocompress.tasks import reviews

    task = validate_task(reviews.task())
    assert len(task.train_data) == 2000 and len(task.eval_data) == 1000
    assert sum(task.eval_data.labels.tolist()) == 500  # balanced
    assert task.model.config.vocab_size == 30522 and task.model.config.num_hidden_layers == 6
    assert task.token_ids()["unk_id"] == 100 and 0 in task.token_ids()["special_ids"]
    accuracy = evaluate(task.model, task.eval_loader(), task.resolved_metric)
    assert 0.65 <= accuracy <= 0.85  # a linear head on frozen sentence embeddings: well above chance (0.5)
    profile = profile_task(task, device="cpu", threads=2)
    assert share(profile.components, "embeddings.word") > 0.5
    assert share(profile.components, ("mlp", "attention"), of="flops") > 0.99
    # the head is cached: a second load gives the same model
    again = reviews.task()
    x, _ = next(iter(task.eval_loader()))
    with torch.no_grad():
        assert torch.equal(again.model(**x), task.model(**x))
