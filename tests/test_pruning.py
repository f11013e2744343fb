"""Structured pruning: real reductions, measured; inputs, outputs and the caller's model kept intact."""

import dataclasses
import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autocompress import _arch
from autocompress.config import Config
from autocompress.errors import AutocompressError
from autocompress.profile import count_flops, count_params
from autocompress.pruning import (
    IMPORTANCE, TECHNIQUES, BNScaleImportanceConfig, MagnitudeImportanceConfig, PruningConfig, PruningError,
    PruningWarning, prune, solve_target, technique_config,
)
from autocompress.pruning.graph import channel_groups
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
def test_pruned_architecture_rebuilds_from_its_json_record(digits, bert, which):
    model, x = digits if which == "digits" else bert
    result = prune(model, x, PruningConfig(ratio=0.5))
    record = json.loads(json.dumps(_arch.capture(result.model)))  # plain JSON, no pickled class
    rebuilt = _arch.rebuild(model, record).eval()
    rebuilt.load_state_dict(result.model.state_dict())
    assert count_params(rebuilt) == result.params_after and _widths(rebuilt) == _widths(result.model)
    run = (lambda m: m(**x).logits) if which == "bert" else (lambda m: m(x))
    with torch.no_grad():
        assert torch.equal(run(rebuilt), run(result.model.eval()))
    assert count_params(model) == result.params_before  # rebuilt from a copy
    if which == "bert":  # the pruned widths travel in the config too, so save_pretrained writes them
        assert (rebuilt.config.hidden_size, rebuilt.config.num_attention_heads) == (16, 2)
        assert model.config.hidden_size == 32
    with pytest.raises(ValueError, match="the archive expects"):  # not the model that was pruned
        _arch.rebuild(UserNet(), record)


@dataclasses.dataclass(frozen=True)
class _OwnConfig:
    """A user's own frozen config that happens to look like a Hugging Face one (to_dict, num_attention_heads)."""

    num_attention_heads: int = 4
    hidden_size: int = 8

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _NetWithOwnConfig(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = _OwnConfig()
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_architecture_record_leaves_a_non_hugging_face_config_alone():
    # Only a transformers PretrainedConfig is a Hugging Face config; a look-alike must not be written to
    # (this frozen one made rebuild raise FrozenInstanceError).
    model = _NetWithOwnConfig()
    record = _arch.capture(model)
    assert "hf_config" not in record
    rebuilt = _arch.rebuild(model, record)
    assert rebuilt.config == _OwnConfig() and rebuilt.fc.out_features == 2


def test_hugging_face_model_without_attention_says_save_pretrained_cannot_rebuild_it():
    # An HF config without attention widths (ResNet) is still an HF config: pruning warns that it goes stale,
    # and points at the architecture record that does hold every width.
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    model = ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                      num_labels=3)).eval()
    x = torch.randn(1, 3, 32, 32)
    with pytest.warns(PruningWarning, match=r"save_pretrained/from_pretrained cannot rebuild this model; "
                                            r"export_model\(model, 'autocompress'.*autocompress\._arch"):
        result = prune(model, x, PruningConfig(strategy="conv", ratio=0.5), progress=False)
    assert result.params_after < result.params_before and result.model(x).logits.shape == (1, 3)


class _GroupedConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, groups=4)  # couples conv1's channels in 4 groups
        self.norm = nn.GroupNorm(2, 16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.conv2(F.relu(self.conv1(x)))).mean((2, 3)))


def test_channel_groups_counts_as_torch_pruning_does():
    """Canary: graph.channel_groups re-derives Torch-Pruning's private BasePruner._get_channel_groups from
    public attributes; the global-ranking cap is wrong if the two ever disagree."""
    import torch_pruning as tp

    model = _GroupedConvNet()
    pruner = tp.pruner.BasePruner(model, torch.randn(1, 3, 8, 8), importance=tp.importance.MagnitudeImportance(),
                                  pruning_ratio=0.5)
    groups = {g[0].dep.target.module: g for g in pruner.DG.get_all_groups(root_module_types=[nn.Conv2d])}
    assert channel_groups(pruner, groups[model.conv1]) == 4  # conv2's input groups
    assert channel_groups(pruner, groups[model.conv2]) == 4  # conv2's output groups (GroupNorm has 2)
    private = getattr(pruner, "_get_channel_groups", None)
    assert private is not None, (
        "torch-pruning no longer has BasePruner._get_channel_groups: check that "
        "autocompress.pruning.graph.channel_groups still counts channel groups the way its pruner splits them")
    for root, group in groups.items():
        assert channel_groups(pruner, group) == private(group), (
            f"torch-pruning now counts {private(group)} channel groups for {type(root).__name__}, "
            f"autocompress.pruning.graph.channel_groups {channel_groups(pruner, group)}: update channel_groups")


@dataclasses.dataclass(frozen=True)
class _BuggyImportanceConfig(Config):
    """A user-added technique whose scoring has a bug."""


@IMPORTANCE.register(_BuggyImportanceConfig)
def _buggy_importance(config: _BuggyImportanceConfig, request: None = None):
    return lambda group: group.scores_of_every_channel  # no such attribute: an AttributeError


def test_a_bug_inside_pruning_surfaces_instead_of_passing_for_an_untraceable_model(digits):
    # Only what Torch-Pruning raises for an operation it cannot follow means "this model cannot be pruned
    # here"; a bug (here in a technique) used to come back as a PruningError telling the user to report the model.
    model, x = digits
    with pytest.raises(AttributeError, match="scores_of_every_channel"):
        prune(model, x, PruningConfig(technique=_BuggyImportanceConfig(), strategy="conv"), progress=False)


def test_configs_round_trip_through_json():
    for name in TECHNIQUES:
        config = PruningConfig(technique=name, strategy="conv", ratio=0.25, head_ratio=0.5, steps=3, round_to=8)
        text = config.to_json()
        assert f'"kind": "pruning.{name}"' in text
        assert Config.from_json(text) == config
    assert Config.from_dict(MagnitudeImportanceConfig(p=2).to_dict()) == MagnitudeImportanceConfig(p=2)
