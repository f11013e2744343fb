"""Vocabulary trimming and int8 embeddings: kept rows, remap, OOV, sizes, config records, exports, bad input."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from autocompress import _arch
from autocompress._tensors import logits_of
from autocompress.config import Config
from autocompress.embeddings import (
    EmbeddingConfig,
    EmbeddingError,
    Int8Embedding,
    TrimmedEmbedding,
    add_remap_probe_rows,
    apply_embeddings,
    collect_token_ids,
    oov_rate,
    quantize_embeddings,
    trim_vocabulary,
)
from autocompress.export import export_model, load
from autocompress.profile import serialized_size_bytes
from autocompress.quantization import DynamicQuantization, quantize
from tests.conftest import tiny_bert

VOCAB, DIM, SEQ = 100, 32, 16
PAD, UNK, CLS = 0, 1, 2
SPECIALS = (PAD, UNK, CLS)


def _batch(rows: int, high: int, seed: int) -> dict[str, torch.Tensor]:
    """Rows of ids in [3, high) after a [CLS], with a padded tail on every other row."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, high, (rows, SEQ), generator=gen)
    ids[:, 0] = CLS
    mask = torch.ones_like(ids)
    ids[::2, -4:], mask[::2, -4:] = PAD, 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def base() -> nn.Module:
    return tiny_bert()


@pytest.fixture(scope="module")
def train() -> list[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    # Two batches over ids below 60: ids 60..99 never occur, so they are trimmed away.
    return [(_batch(16, 60, seed), torch.zeros(16, dtype=torch.long)) for seed in (1, 2)]


@pytest.fixture(scope="module")
def trimmed(base, train):
    return trim_vocabulary(base, collect_token_ids(train), UNK, SPECIALS)


def _logits(model: nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return logits_of(model(**x))


def test_collect_and_kept_count(train, trimmed):
    seen = set()
    for x, _ in train:
        seen |= set(x["input_ids"].flatten().tolist())
    assert collect_token_ids(train) == seen
    assert collect_token_ids([x["input_ids"] for x, _ in train]) == seen  # plain tensors too
    assert trimmed.kept == len(seen | set(SPECIALS)) < VOCAB
    module = trimmed.model.get_input_embeddings()
    assert isinstance(module, TrimmedEmbedding)
    assert module.weight.shape == (trimmed.kept, DIM) and module.remap.shape == (VOCAB,)
    assert module.num_embeddings == VOCAB and module.embedding_dim == DIM and module.padding_idx == PAD


def test_bytes_from_shapes(trimmed):
    assert trimmed.bytes_before == VOCAB * DIM * 4
    assert trimmed.bytes_after == trimmed.kept * DIM * 4 + VOCAB * 4  # the int32 remap is counted
    assert trimmed.to_dict()["bytes_saved"] == trimmed.bytes_before - trimmed.bytes_after


def test_remap_gives_the_untrimmed_logits_on_kept_ids(base, trimmed):
    x = _batch(8, 60, seed=3)
    assert torch.equal(_logits(trimmed.model, x), _logits(base, x))
    assert isinstance(base.get_input_embeddings(), nn.Embedding)  # the caller's model is untouched


def test_oov_ids_read_the_unknown_row(base, trimmed):
    x = _batch(8, VOCAB, seed=4)
    as_unk = dict(x, input_ids=torch.where(x["input_ids"] >= 60, UNK, x["input_ids"]))
    assert (x["input_ids"] >= 60).any()
    assert (_logits(trimmed.model, x) - _logits(base, as_unk)).abs().max().item() <= 1e-6

    rate = oov_rate(trimmed, [(x, None)])
    counted = x["attention_mask"].bool()
    expected = ((x["input_ids"] >= 60) & counted)
    assert rate.tokens == int(counted.sum()) and rate.oov_tokens == int(expected.sum())
    assert rate.row_rate == expected.any(dim=1).float().mean().item()
    unk_only = dict(x, input_ids=torch.full_like(x["input_ids"], UNK))
    assert oov_rate(trimmed.model, [(unk_only, None)]).oov_tokens == 0  # the unknown id itself is not OOV


def test_trimmed_embedding_trains_and_keeps_padding_without_gradient(trimmed):
    model = copy.deepcopy(trimmed.model).train()
    x = _batch(4, 60, seed=5)
    model(**x).logits.sum().backward()
    module = model.get_input_embeddings()
    grad = module.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert grad[module.remap[PAD]].abs().sum() == 0


def test_int8_rows_within_half_a_scale(trimmed):
    result = quantize_embeddings(trimmed.model)
    assert "bert.embeddings.word_embeddings" in result.names
    assert "bert.embeddings.position_embeddings" in result.names
    source = trimmed.model.get_input_embeddings().weight.detach()
    module = result.model.get_input_embeddings()
    assert isinstance(module, Int8Embedding) and module.int8_weight.dtype == torch.int8
    error = (module.weight - source).abs().amax(dim=1)
    assert (error <= module.scale / 2 + 1e-7).all()
    x = _batch(8, VOCAB, seed=6)
    with torch.no_grad():  # forward gathers and scales the same rows as the dequantized table
        expected = module.weight[module.remap[x["input_ids"]].long()]
        assert torch.equal(module(x["input_ids"]), expected)


def test_state_dict_shrinks_by_the_embedding_bytes(base, trimmed):
    result = quantize_embeddings(trimmed.model)
    expected = trimmed.bytes_saved + result.bytes_saved
    saved = serialized_size_bytes(base) - serialized_size_bytes(result.model)
    # A state dict member costs a header and alignment (~100-200 bytes): the new scale/remap members only.
    assert expected - 2048 <= saved <= expected + 2048


def test_dynamic_int8_leaves_the_embeddings_alone_and_exports(base, trimmed, tmp_path):
    embedded = quantize_embeddings(trimmed.model).model
    model = quantize(embedded, DynamicQuantization(), progress=False).model
    assert isinstance(model.get_input_embeddings(), Int8Embedding)
    assert isinstance(model.bert.embeddings.position_embeddings, Int8Embedding)
    check = _batch(64, VOCAB, seed=7)
    example = {k: v[:1] for k, v in check.items()}
    for fmt in ("torchscript", "autocompress"):
        result = export_model(model, fmt, tmp_path / f"m.{fmt}", example, check_inputs=check, base_model=base)
        assert result.check_metric == "top1_agreement" and result.check_value >= 0.99
    reloaded = load(tmp_path / "m.autocompress", base_model=base)
    assert isinstance(reloaded.get_input_embeddings(), Int8Embedding)
    agree = (_logits(reloaded, check).argmax(-1) == _logits(model, check).argmax(-1)).float().mean().item()
    assert agree >= 0.99


@pytest.mark.parametrize("fmt", ["torchscript", "onnx", "autocompress"])
def test_float_exports_keep_the_original_id_contract(base, trimmed, fmt, tmp_path):
    model = quantize_embeddings(trimmed.model).model
    check = _batch(16, VOCAB, seed=8)
    example = {k: v[:1] for k, v in check.items()}
    result = export_model(model, fmt, tmp_path / f"m.{fmt}", example, check_inputs=check, base_model=base)
    assert result.samples == 16 + 2  # the rows drawn over the whole vocabulary were checked too
    reloaded = load(tmp_path / f"m.{fmt}", base_model=base if fmt == "autocompress" else None)
    diff = (_logits(reloaded, check) - _logits(model, check)).abs().max().item()
    assert diff <= 1e-4 * _logits(model, check).abs().max().item()


def test_probe_rows_hold_ids_outside_the_kept_set(base, trimmed):
    x = _batch(4, 60, seed=9)
    probed = add_remap_probe_rows(trimmed.model, x)
    extra = probed["input_ids"][4:]
    assert extra.shape == (2, SEQ) and (extra >= 60).any(dim=1).all()
    assert probed["attention_mask"][4:].all()
    assert add_remap_probe_rows(base, x) is x  # no remap, no extra rows


def test_archive_record_rebuilds_replacement_modules(base, trimmed):
    model = quantize_embeddings(trimmed.model).model
    rebuilt = _arch.rebuild(base, _arch.capture(model))
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = _batch(4, VOCAB, seed=10)
    assert torch.equal(_logits(rebuilt, x), _logits(model, x))
    record = _arch.capture(model)
    record["modules"]["bert.embeddings.word_embeddings"]["class"] = "somewhere.else.Embedding"
    with pytest.raises(ValueError, match="word_embeddings"):
        _arch.rebuild(base, record)


def test_config_round_trip_and_apply(base, train):
    config = EmbeddingConfig(trim_vocabulary=True, int8=True, unk_id=UNK, special_ids=[PAD, CLS])
    data = config.to_dict()
    assert data == {"kind": "embeddings", "version": 1, "trim_vocabulary": True, "int8": True, "unk_id": UNK,
                    "special_ids": [PAD, CLS]}
    assert Config.from_json(json.dumps(data)) == config
    result = apply_embeddings(base, config, train)
    assert result.trim.kept == len(collect_token_ids(train) | set(SPECIALS))
    assert isinstance(result.model.get_input_embeddings(), Int8Embedding)
    assert json.loads(json.dumps(result.to_dict()))["trim"]["kept_ids"] == result.trim.kept


@pytest.mark.parametrize("kwargs, match", [
    ({"trim_vocabulary": "yes"}, "trim_vocabulary='yes'"),
    ({"int8": 1}, "int8=1"),
    ({"unk_id": -1}, "unk_id=-1"),
    ({"special_ids": (1, "x")}, "special_ids"),
])
def test_bad_config_values(kwargs, match):
    with pytest.raises(EmbeddingError, match=match) as info:
        EmbeddingConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_bad_trim_inputs(base):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    tied = BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=DIM, num_hidden_layers=1, num_attention_heads=4,
                                      intermediate_size=64, max_position_embeddings=SEQ))
    cases = [
        (lambda: trim_vocabulary(tied, {3, 4}, UNK), "tied to an output layer"),
        (lambda: trim_vocabulary(base, {3, 4}, VOCAB), f"unk_id {VOCAB}"),
        (lambda: trim_vocabulary(base, set(), UNK), "empty set of token ids"),
        (lambda: trim_vocabulary(base, {3, VOCAB + 5}, UNK), "token ids"),
        (lambda: apply_embeddings(base, EmbeddingConfig(trim_vocabulary=True), []), "unknown-token id"),
    ]
    for call, match in cases:
        with pytest.raises(EmbeddingError, match=match) as info:
            call()
        assert "\n" not in str(info.value)
    with pytest.raises(EmbeddingError, match="no module"):
        quantize_embeddings(base, names=["bert.nothing"])
