"""Strategy heads_mlp: whole heads (KV groups under GQA) and MLP channels go, the residual width stays."""

import warnings

import pytest
import torch
from torch import nn

import autocompress
from autocompress.export import export_model
from autocompress.profile import count_params
from autocompress.pruning import PruningConfig, PruningError, PruningWarning, prune, solve_target

from .conftest import tiny_bert

HIDDEN, HEADS, INTERMEDIATE = 32, 4, 64  # tiny_bert's widths; the tiny Llama below uses the same


@pytest.fixture(scope="module")
def bert():
    model = tiny_bert()
    ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(1))
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.fixture(scope="module")
def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=100, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS,
                         num_key_value_heads=2, intermediate_size=INTERMEDIATE, max_position_embeddings=16)
    ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(1))
    return LlamaForCausalLM(config).eval(), {"input_ids": ids}


def _prune(model, x, callback=None, **config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PruningWarning)
        return prune(model, x, PruningConfig(strategy="heads_mlp", **config), callback=callback, progress=False)


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(**x).logits


def test_bert_loses_exact_heads_and_channels_and_keeps_hidden_width(bert):
    model, x = bert
    result = _prune(model, x, ratio=0.25, head_ratio=0.5, technique="group_norm")
    pruned = result.model
    d = HIDDEN // HEADS
    for layer in pruned.bert.encoder.layer:
        sa = layer.attention.self
        assert (sa.num_attention_heads, sa.all_head_size, sa.attention_head_size) == (2, 2 * d, d)
        assert (sa.query.out_features, sa.key.out_features, sa.value.out_features) == (2 * d,) * 3
        assert layer.attention.output.dense.in_features == 2 * d
        assert (layer.intermediate.dense.out_features, layer.output.dense.in_features) == (48, 48)
        assert sa.query.in_features == layer.output.dense.out_features == HIDDEN  # the residual width
    assert pruned.config.hidden_size == HIDDEN and pruned.bert.embeddings.word_embeddings.embedding_dim == HIDDEN
    assert _logits(pruned, x).shape == _logits(model, x).shape
    # Per layer: 2 heads of d rows (+bias) in q, k, v and d columns of the output; 16 channels of the MLP.
    per_layer = 2 * d * 3 * (HIDDEN + 1) + 2 * d * HIDDEN + 16 * (HIDDEN + 1) + 16 * HIDDEN
    assert result.params_before - result.params_after == 2 * per_layer == count_params(model) - count_params(pruned)
    assert result.flops_after < result.flops_before
    assert model.bert.encoder.layer[0].attention.self.num_attention_heads == HEADS  # the caller's model untouched


def test_llama_loses_whole_key_value_groups_and_its_config_says_so(llama, tmp_path):
    from transformers import LlamaForCausalLM

    model, x = llama
    result = _prune(model, x, ratio=0.25, head_ratio=0.5)
    d = HIDDEN // HEADS
    for layer in result.model.model.layers:
        attention = layer.self_attn
        # One of two KV groups goes with its two query heads: every group keeps its size.
        assert (attention.q_proj.out_features, attention.k_proj.out_features, attention.v_proj.out_features,
                attention.o_proj.in_features) == (2 * d, d, d, 2 * d)
        assert attention.num_key_value_groups == 2 and attention.head_dim == d
        assert layer.mlp.intermediate_size == layer.mlp.up_proj.out_features == layer.mlp.gate_proj.out_features == 48
        assert attention.q_proj.in_features == layer.mlp.down_proj.out_features == HIDDEN
    per_layer = 2 * d * HIDDEN * 2 + d * HIDDEN * 2 + 16 * HIDDEN * 3  # q rows + o cols, k + v rows, MLP (no biases)
    assert result.params_before - result.params_after == 2 * per_layer
    config = result.model.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.intermediate_size,
            config.hidden_size) == (2, 1, 48, HIDDEN)
    assert not result.notes
    result.model.save_pretrained(tmp_path)
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(_logits(reloaded, x), _logits(result.model, x))


@pytest.mark.parametrize("which", ["bert", "llama"])
def test_archive_reload_gives_identical_logits(bert, llama, which, tmp_path):
    model, x = bert if which == "bert" else llama
    result = _prune(model, x, ratio=0.3, head_ratio=0.5)
    export_model(result.model, "autocompress", tmp_path / "pruned.zip", x)
    reloaded = autocompress.load(tmp_path / "pruned.zip", base_model=model)
    assert torch.equal(_logits(reloaded, x), _logits(result.model, x))
    assert count_params(reloaded) == result.params_after


def test_archive_rebuilds_the_llama_config_with_its_key_value_heads(llama, tmp_path):
    model, x = llama
    result = _prune(model, x, ratio=0.25, head_ratio=0.5)
    export_model(result.model, "autocompress", tmp_path / "pruned.zip", x)
    reloaded = autocompress.load(tmp_path / "pruned.zip", base_model=model)
    assert reloaded.config.num_key_value_heads == result.model.config.num_key_value_heads == 1


def test_bert_config_cannot_hold_fewer_heads_but_holds_a_narrower_mlp(bert, tmp_path):
    from transformers import BertForSequenceClassification

    model, x = bert
    with pytest.warns(PruningWarning, match="BertConfig has no head_dim.*save_pretrained/from_pretrained cannot "
                                            "rebuild it; export_model"):
        prune(model, x, PruningConfig(strategy="heads_mlp", ratio=0.25, head_ratio=0.5), progress=False)
    mlp_only = _prune(model, x, ratio=0.25, head_ratio=0.0)
    assert not mlp_only.notes and mlp_only.model.config.intermediate_size == 48
    mlp_only.model.save_pretrained(tmp_path)
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path)
    assert torch.equal(_logits(reloaded, x), _logits(mlp_only.model, x))


def test_never_removes_every_head_or_channel_of_a_layer(bert):
    model, x = bert
    pruned = _prune(model, x, ratio=0.99, head_ratio=0.99).model
    for layer in pruned.bert.encoder.layer:
        assert layer.attention.self.num_attention_heads == 1 and layer.intermediate.dense.out_features == 1
    assert torch.isfinite(_logits(pruned, x)).all()


def test_the_lowest_scoring_head_goes_and_the_kept_weights_are_the_originals(bert):
    model, x = bert
    d = HIDDEN // HEADS
    weak = model.__class__(model.config).eval()
    weak.load_state_dict(model.state_dict())
    sa = weak.bert.encoder.layer[0].attention.self
    with torch.no_grad():
        for proj in (sa.query, sa.key, sa.value):
            proj.weight[d:2 * d] *= 0.01  # head 1 of layer 0 is nearly silent
    pruned = _prune(weak, x, ratio=0.0, head_ratio=0.25, technique="magnitude").model
    kept = torch.cat([sa.query.weight[:d], sa.query.weight[2 * d:]])
    assert torch.equal(pruned.bert.encoder.layer[0].attention.self.query.weight, kept)


def test_steps_call_back_and_end_at_the_same_widths(bert):
    model, x = bert
    seen = []
    stepped = _prune(model, x, ratio=0.5, head_ratio=0.5, steps=2,
                     callback=lambda step, m: seen.append(m.bert.encoder.layer[0].intermediate.dense.out_features))
    assert seen == [48, 32]
    assert stepped.params_after == _prune(model, x, ratio=0.5, head_ratio=0.5).params_after


def test_solver_reaches_a_param_target_with_heads_mlp(bert):
    model, x = bert
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PruningWarning)
        result = solve_target(model, x, "magnitude", strategy="heads_mlp", target=1.25, widen=False, progress=False)
    assert result.reached and result.config.strategy == "heads_mlp"
    assert abs(result.param_reduction / 1.25 - 1) <= 0.05
    assert result.model.config.hidden_size == HIDDEN == result.model.bert.encoder.layer[0].output.dense.out_features


def test_solver_crosses_a_key_value_group_jump_on_llama():
    # 4 KV groups: the reduction jumps where a group goes; the solver must hold the group count and move the
    # MLP width (without knowing the GQA units it stopped at 1.62x here).
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                         num_key_value_heads=4, intermediate_size=128, max_position_embeddings=16)
    model = LlamaForCausalLM(config).eval()
    x = {"input_ids": torch.randint(0, 50, (1, 16), generator=torch.Generator().manual_seed(0))}
    result = solve_target(model, x, "magnitude", strategy="heads_mlp", target=1.6, tolerance=0.01, widen=False,
                          progress=False)
    assert result.reached and abs(result.param_reduction / 1.6 - 1) <= 0.01
    assert result.model.config.hidden_size == 64


def test_a_model_without_attention_or_mlp_gets_one_line_naming_what_was_found():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    with pytest.raises(PruningError) as info:
        prune(model, torch.randn(2, 8), PruningConfig(strategy="heads_mlp"), progress=False)
    message = str(info.value)
    assert "\n" not in message and "finds no attention heads nor MLP" in message
    assert "found 2 Linear, 1 ReLU" in message and "use strategy 'linear' or 'global'" in message


def test_bn_scale_is_refused_for_heads_mlp(bert):
    model, x = bert
    with pytest.raises(PruningError, match="technique 'bn_scale' with strategy 'heads_mlp'"):
        prune(model, x, PruningConfig(strategy="heads_mlp", technique="bn_scale"), progress=False)


def test_solver_holds_the_head_ratio_it_is_given(bert):
    # The transformer route prunes MLP channels first (head_ratio 0). Solving with the heads following the ratio
    # gave a ratio whose model, pruned as the plan says (heads kept), fell short of the fold asked (1.22x, not
    # 1.37x, on the reviews encoder).
    model, x = bert
    result = solve_target(model, x, "magnitude", strategy="heads_mlp", objective="flops", target=1.2,
                          tolerance=0.02, widen=False, progress=False, head_ratio=0.0)
    assert result.reached and result.config.head_ratio == 0.0
    assert result.model.bert.encoder.layer[0].attention.self.num_attention_heads == HEADS
    replayed = prune(model, x, result.config, progress=False)
    assert replayed.flops_after == result.flops_after and abs(replayed.flop_reduction / 1.2 - 1) <= 0.02


def test_held_heads_are_released_when_the_other_widths_cannot_reach_the_target(bert):
    model, x = bert
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        result = solve_target(model, x, "magnitude", strategy="heads_mlp", objective="params", target=1.6,
                              tolerance=0.02, widen=False, progress=False, head_ratio=0.0)
    assert result.reached and result.config.effective_head_ratio > 0
    assert result.model.bert.encoder.layer[0].attention.self.num_attention_heads < HEADS
    assert any("with 0% of heads held" in note and "the heads follow the ratio" in note for note in result.notes)
