"""Where a transformer's bytes and MACs are (components), and batches cut to their longest sequence."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from autocompress import Task
from autocompress._tensors import trim_padding
from autocompress.components import component_breakdown, share
from autocompress.profile import count_params, module_flops, profile_model
from tests.conftest import tiny_bert


def _ids(rows: int, length: int, used: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, 100, (rows, length))
    mask = torch.zeros(rows, length, dtype=torch.long)
    mask[:, :used] = 1
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_components_split_a_bert_into_embeddings_attention_mlp_and_head():
    model = tiny_bert(seq_len=16)
    x = _ids(1, 16, 16)
    flops = module_flops(model, x)
    rows = {r.component: r for r in component_breakdown(model, flops)}
    cfg = model.config
    assert rows["embeddings.word"].params == cfg.vocab_size * cfg.hidden_size
    assert rows["embeddings.word"].bytes == 4 * cfg.vocab_size * cfg.hidden_size
    assert rows["embeddings.position"].params == cfg.max_position_embeddings * cfg.hidden_size
    assert rows["embeddings.token_type"].params == cfg.type_vocab_size * cfg.hidden_size
    h, i, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    # q, k, v, output dense (+ biases) and the attention output LayerNorm, per layer
    assert rows["attention"].params == layers * (4 * (h * h + h) + 2 * h)
    # intermediate + output dense (+ biases) and the block's output LayerNorm
    assert rows["mlp"].params == layers * (2 * h * i + i + h + 2 * h)
    assert sum(r.params for r in rows.values()) == count_params(model)
    assert sum(r.flops for r in rows.values()) == flops[""]
    assert rows["mlp"].flops > 0 and rows["attention"].flops > 0 and rows["embeddings.word"].flops == 0


def test_profile_reports_components_for_transformers_only():
    model = tiny_bert(seq_len=16)
    profile = profile_model(model, _ids(1, 16, 16), threads=1)
    assert set(profile.components) >= {"embeddings.word", "attention", "mlp", "head"}
    assert 0 < share(profile.components, "embeddings") < 1
    assert profile.to_dict()["components"]["embeddings.word"]["params"] == 100 * 32
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    assert profile_model(cnn, torch.rand(1, 1, 8, 8), threads=1).components == {}


def test_trim_padding_cuts_trailing_columns_only():
    batch = _ids(3, 10, 4)
    batch["attention_mask"][1, :6] = 1
    cut = trim_padding(batch)
    assert cut["input_ids"].shape == (3, 6) and cut["attention_mask"].shape == (3, 6)
    left = {"input_ids": torch.ones(2, 5, dtype=torch.long),
            "attention_mask": torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])}
    assert trim_padding(left)["input_ids"].shape == (2, 5)  # left padding: nothing after the last token
    tensor = torch.rand(2, 5)
    assert trim_padding(tensor) is tensor


class _Rows(Dataset):
    def __init__(self, x: dict[str, torch.Tensor], y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return {k: v[i] for k, v in self.x.items()}, self.y[i]


class _FixedLength(nn.Module):
    """Reads every position through a flatten: cutting the padding changes (breaks) its output."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, 4)
        self.head = nn.Linear(16 * 4, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(input_ids).flatten(1))


@pytest.mark.parametrize("model_factory, trims", [(lambda: tiny_bert(seq_len=16), True), (_FixedLength, False)])
def test_task_cuts_batches_to_their_longest_sequence_only_when_the_outputs_stay_the_same(model_factory, trims):
    torch.manual_seed(0)
    x = _ids(20, 16, 5)
    data = _Rows(x, torch.randint(0, 3, (20,)))
    task = Task(name="t", model=model_factory(), train_data=data, eval_data=data,
                example_input={k: v[:1] for k, v in x.items()}, batch_size=8)
    batch, _ = next(iter(task.train_loader()))
    assert task.pad_to_longest is trims
    assert batch["input_ids"].shape[1] == (5 if trims else 16)


def test_export_check_rows_join_batches_cut_to_different_lengths():
    from autocompress.export.check import check_batch

    short, long = _ids(40, 6, 6), _ids(40, 9, 9)
    rows = check_batch([(short, torch.zeros(40)), (long, torch.zeros(40))], None)
    assert rows["input_ids"].shape == (64, 9)
    assert rows["attention_mask"][:40, 6:].sum() == 0 and torch.equal(rows["input_ids"][:40, :6], short["input_ids"])
