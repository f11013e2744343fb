"""The selector's route for transformers on CPU: the cheapest steps first, each only if the target still needs it.

A pretrained encoder keeps much of its bytes in its word embeddings, which pruning the encoder never touches
(MiniLM-L6: 52% of 90 MB). Gutting the encoder to reach a size target is both the costliest route in accuracy
and a weak one. In order:

1. **trim** the vocabulary to the ids the training data uses (plus the special tokens): free in compute, exact
   for every kept id; the ids it drops read the unknown-token row (their share of the evaluation tokens is
   measured and given in the reason);
2. **int8 embeddings** (weight-only, per row) and **dynamic int8 linear layers**;
3. **prune MLP channels, then heads** (strategy ``heads_mlp``: the residual width is kept), only as far as the
   target still needs after steps 1-2.

Each step's expected gain is computed from the profile's components (bytes and MACs per part of the model)
and the model's shapes; latency gains of int8 are measured on a copy, side by side with the original. The
pipeline measures the real result and prunes harder (or backs off) from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from .profile import Profile
from .requirements import Requirements

MLP_CAP = 0.75  # the largest share of MLP channels pruned before heads are pruned too
HEAD_CAP = 0.5  # the largest share of heads pruned
TRIM_MIN_GAIN = 1.05  # a trim that saves less than 5% of the model's bytes is not worth its unknown tokens
INT8_ROW_SCALE_BYTES = 4  # one float32 scale per int8 embedding row
REMAP_BYTES = 4  # the trimmed embedding's int32 id remap, per original id
EMBEDDING_INT8_MIN_BYTES = 1024  # smaller tables are left float (the embeddings package's rule)
FINETUNE_LR = 5e-5  # the usual learning rate for fine-tuning a pretrained encoder (1e-3 would erase it)


@dataclass(frozen=True)
class Vocabulary:
    """What the task's data says about its vocabulary: the ids the training data uses (specials included), the
    tokenizer's unknown id, and the share of evaluation tokens that trimming would send to it."""

    kept: int
    unk_id: int | None
    special_ids: tuple[int, ...]
    eval_oov_tokens: float


def task_vocabulary(task: Any, model: nn.Module) -> Vocabulary | None:
    """The :class:`Vocabulary` of ``task``, or None when its inputs carry no token ids or no unknown id is known."""
    import torch

    from .components import word_embedding
    from .embeddings import collect_token_ids
    from .embeddings.modules import EmbeddingError

    ids = task.token_ids()
    example = task.example_input
    if ids["unk_id"] is None or not isinstance(example, dict) or "input_ids" not in example \
            or word_embedding(model) is None:
        return None
    try:
        kept = collect_token_ids(task.train_loader(shuffle=False))
        kept |= {ids["unk_id"], *ids["special_ids"]}
        kept_ids = torch.tensor(sorted(kept))
        total = dropped = 0
        for x, _ in task.eval_loader():
            tokens = x["input_ids"]
            mask = x.get("attention_mask")
            tokens = tokens[mask.bool()] if isinstance(mask, torch.Tensor) else tokens.reshape(-1)
            total += tokens.numel()
            dropped += int((~torch.isin(tokens, kept_ids)).sum())
    except EmbeddingError:
        return None
    return Vocabulary(len(kept), ids["unk_id"], tuple(ids["special_ids"]), dropped / max(total, 1))


RouteReason = tuple[str, bool, str]  # (step, taken, why): a Reason "route.<step>" = yes/no


@dataclass(frozen=True)
class RouteStep:
    """One step of the route: its name, the X-fold it is expected to add, and the bytes after it."""

    name: str
    gain: float
    bytes_after: int


def _linear_weight_bytes(model: nn.Module) -> tuple[int, int]:
    """(fp32 weight bytes, number of output rows) of the model's Linear layers."""
    weights = rows = 0
    for m in model.modules():
        if isinstance(m, nn.Linear):
            weights += m.weight.numel() * 4
            rows += m.out_features
    return weights, rows


def size_route(profile: Profile, model: nn.Module, vocabulary: Vocabulary | None,
               target: float) -> tuple[list[RouteStep], list[RouteReason], float, float]:
    """The size route: its steps, the reason lines, and the MLP and head ratios still needed to reach ``target``."""
    from .components import word_embedding

    comps = profile.components
    total = sum(c["bytes"] for c in comps.values())
    now = total
    steps: list[RouteStep] = []
    reasons: list[RouteReason] = []
    word = comps["embeddings.word"]["bytes"]
    table = word_embedding(model)
    vocab = int(getattr(table, "num_embeddings", 0) or 0)
    dim = int(getattr(table, "embedding_dim", 0) or 0)
    rows_after = vocab
    if vocabulary is not None and vocab and dim:
        trimmed = vocabulary.kept * dim * 4 + vocab * REMAP_BYTES
        gain = now / (now - word + trimmed)
        if gain >= TRIM_MIN_GAIN and vocabulary.kept < vocab:
            steps.append(RouteStep("trim", gain, now - word + trimmed))
            reasons.append(("trim", True, f"the word embeddings hold {100 * word / total:.0f}% of the bytes; the training "
                           f"data uses {vocabulary.kept:,} of {vocab:,} ids, so keeping those rows is worth "
                           f"{gain:.2f}× ({100 * vocabulary.eval_oov_tokens:.1f}% of evaluation tokens fall outside "
                           "and read the unknown-token row)"))
            now, word, rows_after = now - word + trimmed, trimmed, vocabulary.kept
        else:
            reasons.append(("trim", False, f"keeping the {vocabulary.kept:,} ids the training data uses would "
                            f"gain only {gain:.2f}× (< {TRIM_MIN_GAIN:g}×)"))
    # int8 embeddings: word (trimmed or not), position, token type (each over 1 KiB), one scale per row.
    before = now
    emb = []
    if dim:
        emb.append(("word", word, rows_after * (dim + INT8_ROW_SCALE_BYTES) + (vocab * REMAP_BYTES if rows_after
                                                                                 < vocab else 0)))
    for part in ("embeddings.position", "embeddings.token_type"):
        fp32 = comps.get(part, {}).get("bytes", 0)
        if fp32 > EMBEDDING_INT8_MIN_BYTES:
            emb.append((part.split(".")[1], fp32, fp32 // 4 + (fp32 // (4 * dim) if dim else 0) * INT8_ROW_SCALE_BYTES))
    now -= sum(f - q for _, f, q in emb)
    steps.append(RouteStep("int8 embeddings", before / now, now))
    reasons.append(("int8_embeddings", True, f"per-row int8 {', '.join(n for n, _, _ in emb)} embeddings are "
                    f"worth {before / now:.2f}× more"))
    weights, rows = _linear_weight_bytes(model)
    before = now
    now -= weights - weights // 4 - rows * 8  # int8 weights; a scale and zero point per output row at most
    steps.append(RouteStep("int8 linears", before / now, now))
    reasons.append(("dynamic_int8_linears", True, f"their fp32 weights hold {100 * weights / total:.0f}% of the "
                    f"original bytes, int8 is worth {before / now:.2f}× more"))
    expected = total / now
    goal = total / target
    mlp_ratio = head_ratio = 0.0
    if now > goal:
        mlp = comps["mlp"]["bytes"] / 4  # after int8
        attention = comps["attention"]["bytes"] / 4
        need = now - goal
        mlp_ratio = min(MLP_CAP, need / mlp) if mlp else 0.0
        rest = need - mlp_ratio * mlp
        if rest > 0 and attention:
            head_ratio = min(HEAD_CAP, rest / attention)
        heads = f" and {100 * head_ratio:.0f}% of heads" if head_ratio else ""
        reasons.append(("prune", True, f"steps 1-2 reach about {expected:.2f}×, short of {target:g}×; removing "
                        f"{100 * mlp_ratio:.0f}% of MLP channels{heads} (residual width kept) covers the rest"))
    else:
        reasons.append(("prune", False, f"steps 1-2 reach about {expected:.2f}× ≥ the {target:g}× target"))
    return steps, reasons, mlp_ratio, head_ratio


def int8_latency_gain(model: nn.Module, example_input: Any, threads: int, mode: str = "dynamic",
                      backend: str = "x86") -> float:
    """Batch-64 latency of the original (torch fp32) over its ``mode`` int8 copy on the quantization
    ``backend`` (``x86``: torch.ao; ``onnxruntime``: an ONNX Runtime session), measured side by side as the
    pipeline measures its results.
    Static int8 is calibrated on the example input alone: the ranges change the int8 values, not the kernels."""
    from .compare import latency_side_by_side
    from .quantization import quantization_config, quantize

    calibration = [(example_input, None)] if mode == "static" else None
    quantized = quantize(model, quantization_config(mode, backend=backend), calibration,
                         example_input=example_input, progress=False).model
    # The pipeline's window (7 rounds of 5): 3 rounds of 2 read the reviews encoder's dynamic gain anywhere from
    # 2.3x to 3.4x, while full windows agreed within 0.1x, so the route planned pruning the pipeline then lacked.
    measured = latency_side_by_side(model, quantized, example_input, device="cpu", threads=threads)
    return float(measured["ratio"])


def latency_route(profile: Profile, int8_gain: float, target: float,
                  measured: str = "dynamic int8 linears") -> tuple[list[RouteReason], float, float]:
    """The latency route: reasons, and the MLP and head ratios still needed after int8 linears (``int8_gain``:
    the measured batch-64 gain of ``measured``)."""
    comps = profile.components
    flops = sum(c["flops"] for c in comps.values()) or 1
    mlp_share = comps["mlp"]["flops"] / flops
    attention_share = comps["attention"]["flops"] / flops
    reasons: list[RouteReason] = [
        ("trim", False, "an embedding lookup costs no MACs, so trimming or int8 rows do not change latency"),
        ("dynamic_int8_linears", True, f"{measured}: measured {int8_gain:.2f}× batch-64 latency on a copy, "
         "side by side with the torch fp32 original")]
    fold = target / max(int8_gain, 1e-9)
    mlp_ratio = head_ratio = 0.0
    if fold > 1.0:
        need = 1.0 - 1.0 / fold  # the share of MACs to remove, latency taken as proportional to MACs
        mlp_ratio = min(MLP_CAP, need / mlp_share) if mlp_share else 0.0
        rest = need - mlp_ratio * mlp_share
        if rest > 0 and attention_share:
            head_ratio = min(HEAD_CAP, rest / attention_share)
        heads = f" and {100 * head_ratio:.0f}% of heads" if head_ratio else ""
        reasons.append(("prune", True, f"{target:g}× over int8's {int8_gain:.2f}× leaves {fold:.2f}×; the MLP does "
                        f"{100 * mlp_share:.0f}% of the MACs and attention {100 * attention_share:.0f}%: remove "
                        f"{100 * mlp_ratio:.0f}% of MLP channels{heads} (residual width kept)"))
    else:
        reasons.append(("prune", False, f"int8 alone is measured at {int8_gain:.2f}× ≥ the {target:g}× target"))
    return reasons, mlp_ratio, head_ratio


def onnxruntime_mode(profile: Profile, requirements: Requirements, model: nn.Module, example_input: Any,
                     threads: int) -> tuple[str, float, str]:
    """ONNX Runtime's int8 mode for the linear layers of a transformer: (mode, its measured batch-64 gain, why).

    Both int8 modes keep the same bytes (int8 weights). For latency, the faster of the two measured side by
    side with the original (on MiniLM-L6 at batch 64: dynamic 4.15×, static QDQ 3.07×). For size, static:
    calibrated activation ranges cost the reviews encoder fewer points than ranges taken at run time (1.6
    against 2.2 before fine-tuning; studies/results/runtimes.md)."""
    if requirements.objective != "latency":
        return "static", 1.0, ("static QDQ int8 linears (calibrated on training batches): the same int8 weights "
                               "as dynamic, and on the reviews encoder 0.6 points closer to the original")
    gains = {mode: int8_latency_gain(model, example_input, threads, mode, "onnxruntime")
             for mode in ("dynamic", "static")}
    mode = max(gains, key=lambda m: gains[m])
    other = "static" if mode == "dynamic" else "dynamic"
    return mode, gains[mode], (f"{mode} int8 linears in ONNX Runtime: measured {gains[mode]:.2f}× batch-64 latency "
                               f"against {gains[other]:.2f}× for {other}, side by side with the torch fp32 original")


def applies(profile: Profile, requirements: Requirements) -> bool:
    """Whether the route applies: a transformer with a component profile, on CPU (torch or ONNX Runtime), for
    size or latency."""
    return (profile.arch_type == "transformer" and bool(profile.components)
            and requirements.backend in ("cpu", "onnxruntime")
            and requirements.objective in ("size", "latency") and "embeddings.word" in profile.components)


def select_transformer(profile: Profile, requirements: Requirements, model: nn.Module, example_input: Any,
                       vocabulary: Vocabulary | None, threads: int | None = None) -> Any:
    """The seed plan for a transformer on CPU by this route: a :class:`autocompress.selection.Selection`."""
    from .distillation import DistillationConfig, technique_from_name
    from .embeddings import EmbeddingConfig
    from .plan import Plan
    from .pruning import PruningConfig
    from .quantization import quantization_config
    from .requirements import quantization_backend
    from .selection import BUDGET_EPOCHS, Reason, Selection, choose_distillation

    target = requirements.target
    threads = threads or profile.threads
    reasons: list[Reason] = []
    on_ort = requirements.backend == "onnxruntime"
    mode, ort_gain, mode_reason = (onnxruntime_mode(profile, requirements, model, example_input, threads) if on_ort
                                   else ("dynamic", 0.0, "transformer on CPU: dynamic int8 linear layers (static and "
                                         "QAT int8 cannot trace attention blocks fed dicts of tensors)"))
    if requirements.objective == "size":
        steps, lines, mlp_ratio, head_ratio = size_route(profile, model, vocabulary, target)
        trim = any(s.name == "trim" for s in steps)
        int8_embeddings = True
    else:
        if on_ort:
            lines, mlp_ratio, head_ratio = latency_route(profile, ort_gain, target,
                                                         f"ONNX Runtime {mode} int8 linears")
        else:
            lines, mlp_ratio, head_ratio = latency_route(profile, int8_latency_gain(model, example_input, threads),
                                                         target)
        trim = int8_embeddings = False
    for step, taken, rule in lines:
        reasons.append(Reason(f"route.{step}", "yes" if taken else "no", rule))
    reasons.append(Reason("quantization", mode, mode_reason))
    pruning = PruningConfig(technique="group_norm", strategy="heads_mlp", ratio=round(mlp_ratio, 4),
                            head_ratio=round(head_ratio, 4))
    if mlp_ratio or head_ratio:
        reasons.append(Reason("pruning.strategy", "heads_mlp", "MLP channels first, then heads, keeping the "
                              "residual width: at equal encoder parameters on MiniLM-L6 it kept sentence embeddings "
                              "at cosine 0.70 to the original where narrowing the hidden width kept 0.31, at about "
                              "the same latency (studies/results/head_pruning_compare.md)"))
    distil_name, reason = choose_distillation(profile, requirements)
    reasons.append(reason)
    epochs = BUDGET_EPOCHS[requirements.budget]
    reasons.append(Reason("distillation.stop", "threshold", f"up to {epochs} epochs, stopping as soon as the "
                          f"metric of the {mode} int8 model{' in ONNX Runtime' if on_ort else ''} is back within half "
                          "the allowed drop (on a real encoder an epoch is the cost "
                          f"that matters), at learning rate {FINETUNE_LR:g}, as pretrained encoders are fine-tuned"))
    plan = Plan(
        pruning=pruning,
        distillation=DistillationConfig(technique=technique_from_name(distil_name), stop="threshold",
                                        max_epochs=epochs, patience=3, lr=FINETUNE_LR),
        quantization=quantization_config(mode, backend=quantization_backend(requirements.backend)),
        embeddings=EmbeddingConfig(trim_vocabulary=trim, int8=int8_embeddings),  # ids: the task's
    )
    fold = 1.0 / max(1e-9, 1.0 - mlp_ratio)
    return Selection(plan=plan, reasons=tuple(reasons), requirements=requirements, pruning_target=fold)
