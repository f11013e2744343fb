"""The selector's cheapest-route-first rules for transformers, and the embeddings step of a plan in the pipeline."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from autocompress import Task
from autocompress.config import Config
from autocompress.distillation import DistillationConfig
from autocompress.embeddings import EmbeddingConfig
from autocompress.plan import Plan
from autocompress.pipeline import run_plan
from autocompress.profile import profile_task
from autocompress.pruning import PruningConfig
from autocompress.quantization import quantization_config
from autocompress.requirements import Requirements
from autocompress.selection import select
from autocompress.transformer_route import task_vocabulary
from tests.conftest import tiny_bert

VOCAB, USED, LENGTH = 100, 30, 12  # the data uses ids 3..32 of 100; 0 pad, 1 unk, 2 cls


class _Rows(Dataset):
    def __init__(self, n: int, seed: int, used: int = USED) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(3, 3 + used, (n, LENGTH), generator=g)
        self.ids[:, 0] = 2
        self.mask = torch.ones(n, LENGTH, dtype=torch.long)
        self.mask[: n // 2, LENGTH - 3:] = 0
        self.ids[self.mask == 0] = 0
        self.y = (self.ids[:, 1] > 3 + used // 2).long()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i]}, self.y[i]


def _task(eval_used: int = USED) -> Task:
    model = tiny_bert(num_labels=2, seq_len=LENGTH)
    train, evaluation = _Rows(64, 0), _Rows(32, 1, eval_used)
    return Task(name="tiny-bert", model=model, train_data=train, eval_data=evaluation,
                example_input={"input_ids": evaluation.ids[:1], "attention_mask": evaluation.mask[:1]},
                batch_size=16, unk_token_id=1, special_token_ids=(0, 1, 2))


def test_vocabulary_counts_the_training_ids_and_the_evaluation_tokens_trimming_would_lose():
    task = _task(eval_used=USED + 10)  # evaluation rows also use ids the training data never shows
    vocabulary = task_vocabulary(task, task.model)
    train_ids = set(torch.unique(task.train_data.ids).tolist())
    assert vocabulary.kept == len(train_ids | {0, 1, 2})
    tokens = task.eval_data.ids[task.eval_data.mask.bool()]
    expected = sum(1 for t in tokens.tolist() if t not in train_ids | {0, 1, 2}) / tokens.numel()
    assert abs(vocabulary.eval_oov_tokens - expected) < 1e-12 and expected > 0


def test_size_route_trims_and_quantizes_first_and_prunes_only_what_the_target_still_needs():
    task = _task()
    profile = profile_task(task, device="cpu", threads=1)
    vocabulary = task_vocabulary(task, task.model)
    easy = select(profile, Requirements(objective="size", max_drop=1, target=2), task.model, task.example_input,
                  vocabulary=vocabulary)
    plan = easy.plan
    assert plan.embeddings.trim_vocabulary and plan.embeddings.int8 and plan.embeddings.unk_id is None
    assert plan.quantization_mode == "dynamic" and plan.pruning.ratio == 0 and plan.pruning.head_ratio == 0
    decisions = {r.decision: r.choice for r in easy.reasons}
    assert decisions["route.trim"] == "yes" and decisions["route.prune"] == "no"
    hard = select(profile, Requirements(objective="size", max_drop=1, target=12), task.model, task.example_input,
                  vocabulary=vocabulary).plan
    assert hard.pruning.strategy == "heads_mlp" and hard.pruning.ratio > 0
    # MLP channels go first: heads only once the MLP share is at its cap
    assert hard.pruning.head_ratio == 0 or hard.pruning.ratio >= 0.75 - 1e-9
    assert "trim vocab" in hard.summary() and "heads_mlp" in hard.summary()


def test_plan_with_embeddings_round_trips_and_old_records_load_without_them():
    plan = Plan(embeddings=EmbeddingConfig(trim_vocabulary=True, int8=True, unk_id=1, special_ids=(0, 2)))
    assert Config.from_json(plan.to_json()) == plan
    old = plan.to_dict()
    old.pop("embeddings")
    assert Plan.load(old).embeddings == EmbeddingConfig()


def test_pipeline_trims_then_int8s_the_embeddings_and_the_model_still_takes_the_original_ids():
    task = _task(eval_used=USED + 5)
    plan = Plan(pruning=PruningConfig(ratio=0.0), distillation=DistillationConfig(max_epochs=1),
                quantization=quantization_config("dynamic", backend="x86"),
                embeddings=EmbeddingConfig(trim_vocabulary=True, int8=True))
    result = run_plan(task, plan, progress=False, threads=1)
    trim = result.embeddings["trim"]
    assert trim["kept_ids"] == len(set(torch.unique(task.train_data.ids).tolist()) | {0, 1, 2})
    assert result.embeddings["oov"]["token_rate"] > 0
    assert result.compressed.size_mb < result.original.size_mb / 2
    assert result.report()["embeddings"]["trim"]["kept_ids"] == trim["kept_ids"]
    word = result.model.get_input_embeddings()
    assert type(word).__name__ == "Int8Embedding" and word.num_embeddings == VOCAB
    with torch.no_grad():  # every original id is accepted, those never seen in training included
        out = result.model(input_ids=torch.arange(VOCAB).reshape(10, 10) % VOCAB,
                           attention_mask=torch.ones(10, 10, dtype=torch.long))
    assert out.logits.shape == (10, 2)


def test_the_study_searches_embedding_storage_and_head_ratios_and_its_seed_maps_back_exactly():
    import optuna

    from autocompress.study.space import SearchSpace, canonical_plan, neighbours, plan_from_trial, \
        trial_params_from_plan

    task = _task()
    profile = profile_task(task, device="cpu", threads=1)
    requirements = Requirements(objective="size", max_drop=1, target=12)
    selection = select(profile, requirements, task.model, task.example_input,
                       vocabulary=task_vocabulary(task, task.model))
    space = SearchSpace.for_model(profile, requirements, vocabulary=True)
    assert space.embeddings == ("float", "int8", "trim", "trim+int8") and "heads_mlp" in space.strategies
    assert space.stop == "threshold" and SearchSpace.from_dict(space.to_dict()) == space
    assert space.lr_range == (1e-5, 3e-4) and selection.plan.distillation.lr == 5e-5
    for plan in [selection.plan, *neighbours(selection.plan)]:
        params = trial_params_from_plan(plan, space)
        assert plan_from_trial(optuna.trial.FixedTrial(params), space) == canonical_plan(plan)
    assert any(not n.embeddings.trim_vocabulary for n in neighbours(selection.plan))
    assert space.stops == ("threshold", "epochs") and neighbours(selection.plan)[0].distillation.stop == "epochs"


def test_a_trimmed_int8_embedding_dynamic_int8_result_reloads_from_its_archive(tmp_path):
    from autocompress.export import export_model, load

    task = _task()
    plan = Plan(pruning=PruningConfig(ratio=0.0), distillation=DistillationConfig(max_epochs=0),
                quantization=quantization_config("dynamic", backend="x86"),
                embeddings=EmbeddingConfig(trim_vocabulary=True, int8=True))
    model = run_plan(task, plan, progress=False, threads=1).model
    path = export_model(model, "autocompress", tmp_path / "m.acz", task.example_input,
                        check_inputs=task.eval_loader(), base_model=task.model).path
    x = {"input_ids": task.eval_data.ids, "attention_mask": task.eval_data.mask}
    with torch.no_grad():
        assert torch.equal(load(path, base_model=task.model)(**x).logits, model(**x).logits)


def test_over_the_threshold_the_pipeline_keeps_the_whole_vocabulary_before_giving_up_int8(monkeypatch):
    from autocompress import pipeline

    task = _task()
    profile = profile_task(task, device="cpu", threads=1)
    tried = []

    def fake_run_plan(task, plan, original, **kwargs):
        tried.append(plan)
        broken = plan.embeddings.trim_vocabulary  # trimming loses too much here; the rest holds
        return pipeline.PipelineResult(model=task.model, plan=plan, original=original, compressed=original,
                                       metric_drop=5.0 if broken else 0.0,
                                       reduction={k: 2.0 for k in pipeline.REDUCTION_KEYS}, feasible=not broken,
                                       target_met=not broken)

    monkeypatch.setattr(pipeline, "run_plan", fake_run_plan)
    plan = Plan(pruning=PruningConfig(ratio=0.0), quantization=quantization_config("dynamic", backend="x86"),
                embeddings=EmbeddingConfig(trim_vocabulary=True, int8=True))
    result = pipeline.run(task, plan, Requirements(objective="size", max_drop=1, target=2), original=profile,
                          progress=False)
    assert [p.embeddings.trim_vocabulary for p in tried] == [True, False]
    assert result.plan.quantization_mode == "dynamic" and result.plan.embeddings.int8 and result.feasible


def test_on_onnxruntime_the_route_picks_the_faster_measured_int8_mode_for_latency_and_static_for_size(monkeypatch):
    from autocompress import transformer_route

    task = _task()
    profile = profile_task(task, device="cpu", threads=1)
    measured = {"dynamic": 2.5, "static": 3.5}
    calls = []

    def fake_gain(model, example_input, threads, mode="dynamic", backend="x86"):
        calls.append((mode, backend))
        return measured[mode]

    monkeypatch.setattr(transformer_route, "int8_latency_gain", fake_gain)
    latency = select(profile, Requirements(objective="latency", max_drop=1, target=3, backend="onnxruntime"),
                     task.model, task.example_input)
    assert sorted(calls) == [("dynamic", "onnxruntime"), ("static", "onnxruntime")]
    plan = latency.plan
    assert plan.quantization.backend == "onnxruntime" and plan.quantization_mode == "static"
    assert plan.pruning.strategy == "heads_mlp" and plan.pruning.ratio == 0  # 3.5× ≥ 3×: nothing to prune
    reasons = {r.decision: r.rule for r in latency.reasons}
    assert "3.50×" in reasons["quantization"] and "2.50× for dynamic" in reasons["quantization"]
    assert "in ONNX Runtime" in reasons["distillation.stop"]
    measured["static"] = 1.5  # now dynamic is faster, and short of the target: prune for the rest
    plan = select(profile, Requirements(objective="latency", max_drop=1, target=3, backend="onnxruntime"),
                  task.model, task.example_input).plan
    assert plan.quantization_mode == "dynamic" and plan.pruning.ratio > 0
    calls.clear()
    size = select(profile, Requirements(objective="size", max_drop=1, target=2, backend="onnxruntime"), task.model,
                  task.example_input, vocabulary=task_vocabulary(task, task.model)).plan
    assert calls == [] and size.quantization_mode == "static" and size.quantization.backend == "onnxruntime"
    assert size.embeddings.int8


def test_the_onnxruntime_int8_gain_is_measured_on_an_onnxruntime_program():
    from autocompress.transformer_route import int8_latency_gain

    task = _task()
    assert int8_latency_gain(task.model, task.example_input, 1, "static", "onnxruntime") > 0


def test_a_threshold_stop_judges_the_int8_model_that_is_delivered(monkeypatch):
    """The stop, the best epoch and the final measurement see one model: the student after int8 in ONNX
    Runtime, not its float version."""
    from autocompress import pipeline

    task = _task()
    profile = profile_task(task, device="cpu", threads=1)
    measures = []

    def spy(*args, measure=None, **kwargs):
        measures.append(measure)
        return real(*args, measure=measure, **kwargs)

    real = pipeline.distill
    monkeypatch.setattr(pipeline, "distill", spy)
    plan = Plan(pruning=PruningConfig(ratio=0.0),
                distillation=DistillationConfig(max_epochs=2, stop="threshold", patience=None, lr=1e-3),
                quantization=quantization_config("dynamic", backend="onnxruntime"))
    requirements = Requirements(max_drop=100, backend="onnxruntime")
    result = run_plan(task, plan, profile, requirements=requirements, progress=False, threads=1)
    assert result.distillation["stopped_because"] == "target_reached" and result.distillation["epochs_run"] == 0
    assert measures[0] is not None
    delivered = result.compressed.metric["value"]
    assert result.distillation["initial_metric"] == pytest.approx(delivered, abs=1e-9)
    assert measures[0](task.model) == pytest.approx(run_plan(
        task, plan.replace(distillation=DistillationConfig(max_epochs=0)), profile, requirements=requirements,
        progress=False, threads=1).compressed.metric["value"], abs=1e-9)
    # a fixed number of epochs keeps judging the float model
    run_plan(task, plan.replace(distillation=DistillationConfig(max_epochs=1)), profile, requirements=requirements,
             progress=False, threads=1)
    assert measures[-1] is None
