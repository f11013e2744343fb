"""Structured pruning: real reductions, measured; inputs, outputs and the caller's model kept intact."""

import io
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autocompress.config import Config
from autocompress.errors import AutocompressError
from autocompress.profile import count_flops, count_params
from autocompress.pruning import (
    TECHNIQUES, BNScaleImportanceConfig, MagnitudeImportanceConfig, PruningConfig, PruningError,
    PruningWarning, architecture_state, prune, rebuild, solve_target, technique_config,
)
from autocompress.tasks.digits import DigitsCNN

from .conftest import tiny_bert


def _widths(model: nn.Module) -> list[int]:
    return [m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> bool:
    state = model.state_dict()
    return state.keys() == snapshot.keys() and all(torch.equal(state[k], v) for k, v in snapshot.items())


@pytest.fixture(scope="module")
def digits():
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    with torch.no_grad():  # spread the BatchNorm scales as training would, so bn_scale has something to rank
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.2, 1.5)
    return model, torch.randn(4, 1, 8, 8)


@pytest.fixture(scope="module")
def bert():
    model = tiny_bert()
    ids = torch.randint(0, 100, (2, 16))
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class UserNet(nn.Module):
    """Written the way users write models: Sequential block, functional calls, view-flatten, no BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 5)
        self.aux = nn.Linear(64, 2)  # defined but never called: the graph cannot see it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.block(x), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))


def _check_measured(result, x) -> None:
    """The pruned model runs and the reported figures are its real counts."""
    assert count_params(result.model) == result.params_after < result.params_before
    assert count_flops(result.model, x) == result.flops_after < result.flops_before
    assert count_params(result.model) == sum(p.numel() for p in result.model.parameters())


@pytest.mark.filterwarnings("ignore::autocompress.pruning.PruningWarning")  # bn_scale notes the kept classifier
@pytest.mark.parametrize("technique", list(TECHNIQUES))
def test_each_technique_halves_the_digits_cnn(digits, technique):
    model, x = digits
    before = _snapshot(model)
    result = solve_target(model, x, technique, objective="params", target=2.0, progress=False)
    assert result.reached and abs(result.param_reduction / 2.0 - 1) <= 0.05, result.to_dict()
    assert 0 < result.ratio < 1 and result.config.technique == technique_config(technique)
    _check_measured(result, x)
    assert result.model(x).shape == (4, 10)
    assert result.model.features[0].in_channels == 1  # the input is never pruned
    assert result.model.classifier[-1].out_features == 10  # nor the classifier's outputs
    assert _same(model, before) and _widths(model) == [32, 64, 128, 128, 10]  # the caller's model is untouched


@pytest.mark.parametrize("technique", ["random", "magnitude", "group_norm", "lamp"])
def test_each_technique_halves_a_small_bert(bert, technique):
    model, x = bert
    result = solve_target(model, x, technique, objective="params", target=2.0, progress=False)
    assert result.reached and abs(result.param_reduction / 2.0 - 1) <= 0.05, result.to_dict()
    _check_measured(result, x)
    pruned = result.model
    assert pruned(**x).logits.shape == (2, 3)
    assert pruned.classifier.out_features == 3 and pruned.bert.embeddings.word_embeddings.num_embeddings == 100
    heads = [layer.attention.self.num_attention_heads for layer in pruned.bert.encoder.layer]
    assert heads == [3, 3]  # whole heads removed, the same in every layer
    assert model.config.hidden_size == 32 and model.bert.encoder.layer[0].attention.self.num_attention_heads == 4


def test_bn_scale_needs_batchnorm(bert):
    model, x = bert
    with pytest.raises(PruningError, match="no BatchNorm") as info:
        prune(model, x, PruningConfig(technique="bn_scale"))
    assert "\n" not in str(info.value)


def test_bn_scale_keeps_the_largest_batchnorm_scales(digits):
    model, x = digits
    result = prune(model, x, PruningConfig(technique=BNScaleImportanceConfig(), strategy="conv", ratio=0.5))
    kept, gammas = result.model.features[1].weight.detach(), model.features[1].weight.detach()
    assert len(kept) == 16
    assert torch.equal(torch.sort(kept).values, torch.sort(torch.topk(gammas, 16).values).values)


def test_magnitude_keeps_the_largest_filters(digits):
    model, x = digits
    result = prune(model, x, PruningConfig(technique=MagnitudeImportanceConfig(p=1), strategy="conv", ratio=0.5))
    norms = model.features[0].weight.detach().abs().flatten(1).sum(1)
    kept = result.model.features[0].weight.detach().abs().flatten(1).sum(1)
    assert torch.allclose(torch.sort(kept).values, torch.sort(torch.topk(norms, 16).values).values)


def test_strategy_restricts_the_layers_pruned(digits):
    model, x = digits
    conv = prune(model, x, PruningConfig(strategy="conv", ratio=0.5)).model
    assert _widths(conv) == [16, 32, 64, 128, 10]
    linear = prune(model, x, PruningConfig(strategy="linear", ratio=0.5)).model
    assert _widths(linear) == [32, 64, 128, 64, 10]
    assert conv.classifier[0].in_features == 64 * 4  # coupled through the flatten, by the dependency graph


def test_unknown_names_and_bad_values_are_one_line_errors(digits, bert):
    with pytest.raises(PruningError, match="unknown pruning technique 'nope'; one of random, magnitude") as info:
        PruningConfig(technique="nope")
    assert "\n" not in str(info.value)
    with pytest.raises(PruningError, match="unknown pruning strategy 'heads'; one of linear, conv, attention, global"):
        PruningConfig(strategy="heads")
    with pytest.raises(PruningError, match=r"ratio=1.0; a fraction"):
        PruningConfig(ratio=1.0)
    with pytest.raises(PruningError, match="objective 'latency'"):
        solve_target(*digits, objective="latency")
    with pytest.raises(PruningError, match="finds no prunable conv layers in BertForSequenceClassification"):
        prune(*bert, PruningConfig(strategy="conv"))
    assert issubclass(PruningError, AutocompressError)


@pytest.mark.filterwarnings("ignore::autocompress.pruning.PruningWarning")  # bn_scale notes the kept classifier
def test_removing_nothing_is_an_error_not_a_success(digits):
    model, x = digits
    # The classifier has no BatchNorm after it, so bn_scale restricted to linear layers has nothing to rank.
    why = r"removed no parameters \(kept by bn_scale \(no BatchNorm follows them\): classifier.0\)"
    with pytest.raises(PruningError, match=why):
        prune(model, x, PruningConfig(technique="bn_scale", strategy="linear", ratio=0.5))


def test_iterative_pruning_calls_back_after_each_step(digits):
    model, x = digits
    seen = []
    result = prune(model, x, PruningConfig(ratio=0.5, steps=3), progress=False,
                   callback=lambda step, m: seen.append((step, count_params(m))))
    assert [s for s, _ in seen] == [1, 2, 3]
    assert seen[0][1] > seen[1][1] > seen[2][1] == result.params_after


def test_round_to_keeps_multiples_of_8(digits):
    model, x = digits
    result = prune(model, x, PruningConfig(ratio=0.4, round_to=8))
    widths = _widths(result.model)[:-1]
    assert widths != [32, 64, 128, 128] and all(w % 8 == 0 for w in widths), widths


def test_user_style_model_frozen_and_in_eval_mode():
    torch.manual_seed(0)
    model = UserNet().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    before = _snapshot(model)
    x = torch.randn(3, 3, 16, 16)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        result = solve_target(model, x, "magnitude", target=2.0, progress=False)
    assert result.reached and abs(result.param_reduction / 2.0 - 1) <= 0.05
    assert any("not reached by the dependency graph: aux" in str(w.message) for w in caught
               if issubclass(w.category, PruningWarning))
    pruned = result.model
    assert pruned(x).shape == (3, 5) and pruned.block[0].in_channels == 3 and pruned.fc2.out_features == 5
    assert not pruned.training and not any(p.requires_grad for p in pruned.parameters())  # as the user had it
    assert _same(model, before) and all(not p.requires_grad for p in model.parameters())
    with pytest.raises(PruningError, match="no BatchNorm"):
        prune(model, x, PruningConfig(technique="bn_scale"))


def test_solver_widens_to_global_or_says_why(digits):
    model, x = digits
    widened = solve_target(model, x, "magnitude", strategy="linear", target=2.0, progress=False)
    assert widened.reached and widened.config.strategy == "global"
    assert any("could not reach" in n and "widened to 'global'" in n for n in widened.notes)
    with pytest.warns(PruningWarning, match="not reached"):
        stuck = solve_target(model, x, "magnitude", strategy="linear", target=2.0, widen=False, progress=False)
    assert not stuck.reached and stuck.config.strategy == "linear" and 1.0 < stuck.param_reduction < 1.9
    assert any("reaches at most" in n for n in stuck.notes)
    no_attention = solve_target(model, x, "magnitude", strategy="attention", target=2.0, progress=False)
    assert no_attention.reached and no_attention.config.strategy == "global"
    assert any("finds no prunable attention layers" in n and "widened" in n for n in no_attention.notes)


def test_solver_reaches_a_flops_target(digits):
    model, x = digits
    result = solve_target(model, x, "lamp", objective="flops", target=2.0, progress=False)
    assert result.reached and abs(result.flop_reduction / 2.0 - 1) <= 0.05
    assert count_flops(result.model, x) == result.flops_after


def test_bert_reloads_with_save_pretrained_and_from_pretrained(bert, tmp_path):
    from transformers import BertForSequenceClassification

    model, x = bert
    result = prune(model, x, PruningConfig(strategy="global", ratio=0.5))
    pruned = result.model
    assert (pruned.config.num_attention_heads, pruned.config.hidden_size, pruned.config.intermediate_size) == \
        (2, 16, 32)
    attention = pruned.bert.encoder.layer[1].attention.self
    assert (attention.num_attention_heads, attention.attention_head_size, attention.all_head_size) == (2, 8, 16)
    pruned.save_pretrained(tmp_path)
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert count_params(reloaded) == result.params_after
    with torch.no_grad():
        assert torch.allclose(reloaded(**x).logits, pruned(**x).logits, atol=1e-6)


def test_vit_heads_and_mlp_pruned():
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64,
                              num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    result = prune(model, x, PruningConfig(strategy="global", ratio=0.5))
    _check_measured(result, x)
    pruned = result.model
    for block in pruned.encoder.layers:
        attention = block.self_attention
        assert (attention.num_heads, attention.head_dim, attention.embed_dim) == (2, 8, 16)
        assert block.mlp[0].out_features < 64
    assert pruned(x).shape == (1, 10) and pruned.heads.head.out_features == 10
    assert model.encoder.layers[0].self_attention.num_heads == 4


@pytest.mark.parametrize("which", ["digits", "bert"])
def test_architecture_state_rebuilds_without_pickle(digits, bert, which):
    model, x = digits if which == "digits" else bert
    result = prune(model, x, PruningConfig(ratio=0.5))
    buffer = io.BytesIO()
    torch.save(architecture_state(result.model), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # tensors and plain values only
    rebuilt = rebuild(model, state).eval()
    assert count_params(rebuilt) == result.params_after and _widths(rebuilt) == _widths(result.model)
    run = (lambda m: m(**x).logits) if which == "bert" else (lambda m: m(x))
    with torch.no_grad():
        assert torch.equal(run(rebuilt), run(result.model.eval()))
    assert count_params(model) == result.params_before  # rebuilt from a copy
    with pytest.raises(PruningError, match="do not match"):
        rebuild(UserNet(), state)


def test_configs_round_trip_through_json():
    for name in TECHNIQUES:
        config = PruningConfig(technique=name, strategy="conv", ratio=0.25, head_ratio=0.5, steps=3, round_to=8)
        text = config.to_json()
        assert f'"kind": "pruning.{name}"' in text
        assert Config.from_json(text) == config
    assert Config.from_dict(MagnitudeImportanceConfig(p=2).to_dict()) == MagnitudeImportanceConfig(p=2)
