"""Structured pruning across model families: every family of tests/test_hf_families.py, halved in parameters.

For each tiny random model (Hugging Face config classes, torchvision with weights=None; nothing downloaded):
``solve_target(..., "global", target=2.0, tolerance=0.05)``, then the output shape, a reload from the
autocompress archive (identical logits), ``save_pretrained``/``from_pretrained`` (logits within 1e-6), the
head counts and the time spent building the dependency graph. Each family runs in its own subprocess, so one
family that crashes or runs out of memory cannot take the others down.

Writes ``studies/results/hf_families.md`` (atomically).

    .venv/bin/python studies/hf_families.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "studies" / "results" / "hf_families.md"
sys.path.insert(0, str(ROOT))


def _graph_seconds() -> list[float]:
    """Patch the dependency-graph build to record how long each build takes (this process only)."""
    import torch_pruning as tp

    spent: list[float] = []
    build = tp.DependencyGraph.build_dependency

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return build(self, *args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    tp.DependencyGraph.build_dependency = timed
    return spent


def one(family: str) -> dict:
    """Everything the table says about one family (run in a subprocess)."""
    import torch

    import autocompress
    from autocompress.errors import describe_error
    from autocompress.export import export_model
    from autocompress.profile import count_params
    from autocompress.pruning import PruningError
    from autocompress.pruning.transformers import initial_heads
    from tests.test_hf_families import build, logits, solve

    model, x = build(family)
    row = {"family": family, "class": type(model).__name__, "before": count_params(model),
           "heads_before": sorted(set(initial_heads(model).values()))}
    spent = _graph_seconds()
    try:
        result = solve(model, x)
    except PruningError as exc:
        row.update(error=describe_error(exc), graph_s=sum(spent))
        return row
    row.update(after=result.params_after, reduction=result.param_reduction, reached=result.reached,
               graph_s=sum(spent), heads_after=sorted(set(initial_heads(result.model).values())),
               why="" if result.reached else (result.notes[0] if result.notes else ""))
    out = logits(result.model, x)
    row["shape_ok"] = out.shape == logits(model, x).shape
    with tempfile.TemporaryDirectory() as tmp:
        export_model(result.model, "autocompress", Path(tmp) / "a", x)
        row["archive_ok"] = torch.equal(logits(autocompress.load(Path(tmp) / "a", base_model=model), x), out)
        notes = [n for n in result.notes if "save_pretrained" in n]
        if not hasattr(result.model, "save_pretrained"):
            row["hf"] = "n/a (torchvision)"
        else:
            try:
                result.model.save_pretrained(Path(tmp) / "hf")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    back = type(model).from_pretrained(Path(tmp) / "hf",
                                                       attn_implementation=model.config._attn_implementation)
                diff = (logits(back, x) - out).abs().max().item()
                row["hf"] = "ok" if diff <= 1e-6 else f"logits differ by {diff:.2g}"
            except (RuntimeError, ValueError, OSError) as exc:  # what from_pretrained raises on a mismatch
                row["hf"] = f"fails: {describe_error(exc)[:80]}"
            if notes:
                row["hf"] += " (warned)"
    return row


def _cell(value: object) -> str:
    return str(value).replace("|", "/").replace("\n", " ")


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2])))
        return 0
    from tests.test_hf_families import FAMILIES

    started = time.perf_counter()
    rows = []
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    for family in FAMILIES:
        begun = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--one", family], capture_output=True, text=True, env=env,
                              timeout=900)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        row = json.loads(lines[-1]) if lines else {"family": family, "error": f"crashed (exit {done.returncode}): "
                                                   f"{done.stderr.strip().splitlines()[-1:]}"}
        row["seconds"] = time.perf_counter() - begun
        rows.append(row)
        print(family, row.get("reduction", row.get("error")), flush=True)
    lines = [
        "# Structured pruning across model families (2x parameters, global strategy)",
        "",
        "Tiny random models (hidden 64, 2 layers, vocabulary 1,000; HF vision 32x32 px, MobileViT and torchvision "
        "64x64), `solve_target(model, x, 'magnitude', 'global', target=2.0, tolerance=0.05)`. Archive: "
        "`export_model(..., 'autocompress')` + `load(path, base_model=original)`, logits compared exactly. "
        "HF: `save_pretrained` + `from_pretrained` (same attention kernel), logits within 1e-6; \"(warned)\" means "
        "pruning warned that the config cannot describe the model. Graph s: time spent building dependency graphs "
        "over the whole search.",
        "",
        "| family | model class | params before | params after | reduction | output shape | archive reload | "
        "from_pretrained | heads before -> after | graph s | total s | why not 2x |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['family']} | {r.get('class', '')} | {r.get('before', '')} | - | - | - | - | - | "
                         f"{r.get('heads_before', '')} | {r.get('graph_s', 0):.1f} | {r['seconds']:.1f} | "
                         f"{_cell(r['error'])} |")
            continue
        lines.append(
            f"| {r['family']} | {r['class']} | {r['before']:,} | {r['after']:,} | {r['reduction']:.2f}x | "
            f"{'ok' if r['shape_ok'] else 'CHANGED'} | {'identical' if r['archive_ok'] else 'DIFFERS'} | "
            f"{_cell(r['hf'])} | {r['heads_before']} -> {r['heads_after']} | {r['graph_s']:.1f} | "
            f"{r['seconds']:.1f} | {_cell(r['why'])} |")
    import torch

    lines += ["", f"Machine: {platform.machine()}, OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, Python "
                  f"{platform.python_version()}, torch {torch.__version__}. Wall time "
                  f"{time.perf_counter() - started:.0f} s.", ""]
    from autocompress._io import atomic_write

    atomic_write(OUT, lambda fh: fh.write("\n".join(lines).encode()))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
