"""How far a torch.ao dynamic-int8 transformer agrees with itself, and with its ONNX Runtime export.

    .venv/bin/python studies/dynamic_int8_agreement.py --storage sqlite:///studies/reviews.db --name reviews-size6 \
        [--trial N]   # default: the study's best trial

Loads the trial's archive, evaluates its model on the task's evaluation rows (padded to one width) in batches
of 64, 32 and 1, and the ONNX export of the same model (float twin + ONNX Runtime dynamic int8) in batches of
64. Dynamic int8 quantizes activations with one scale per tensor, taken from the whole batch at run time, so the
same row can score differently beside other rows. Writes studies/results/dynamic_int8_agreement.md.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import optuna
import torch

from autocompress._io import atomic_write
from autocompress.export import load
from autocompress.export.check import logits
from autocompress.export.formats import load_onnx, write_onnx
from autocompress.export.trial import download_trial_model
from autocompress.study import best_trial, study_meta, trial_records
from autocompress.task import load_task

OUT = Path(__file__).parent / "results" / "dynamic_int8_agreement.md"


def _one_width(batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    width = max(b["input_ids"].shape[1] for b in batches)
    return {k: torch.cat([torch.nn.functional.pad(b[k], (0, width - b[k].shape[1])) for b in batches])
            for k in batches[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--trial", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    study = optuna.load_study(study_name=args.name, storage=args.storage)
    meta = study_meta(study)
    number = args.trial if args.trial is not None else \
        best_trial(trial_records(study), meta["directions"], meta["requirements"]["objective"]).number
    trial = study.trials[number]
    task = load_task(meta["task_ref"])
    folder = Path(tempfile.mkdtemp())
    model = load(download_trial_model(study, trial, folder))
    pairs = list(task.eval_loader())
    rows = _one_width([x for x, _ in pairs])
    targets = torch.cat([torch.as_tensor(y) for _, y in pairs])
    n = len(targets)

    def run(subject: torch.nn.Module, batch: int) -> torch.Tensor:
        return torch.cat([logits(subject, {k: v[i:i + batch] for k, v in rows.items()}) for i in range(0, n, batch)])

    out = {f"torch, batch {b}": run(model, b) for b in (64, 32, 1)}
    onnx_path = folder / "model.onnx"
    onnx_path.write_bytes(write_onnx(model, {k: v[:2] for k, v in rows.items()}, {"input_keys": list(rows)}))
    out["ONNX Runtime, batch 64"] = run(load_onnx(onnx_path), 64)
    reference = out["torch, batch 64"]
    lines = [f"# Dynamic int8: agreement of trial {trial.number} of `{args.name}` with itself and with ONNX", "",
             f"{n} evaluation rows of `{task.name}`, padded to one width; reference: the in-memory torch.ao model "
             "in batches of 64 (as the study measured it). Top-1 agreement and max |Δ logit| against it.", "",
             "| model, batching | accuracy | top-1 agreement | max abs diff |", "|---|---:|---:|---:|"]
    for name, got in out.items():
        agree = (got.argmax(-1) == reference.argmax(-1)).float().mean().item()
        lines.append(f"| {name} | {(got.argmax(-1) == targets).float().mean().item():.3f} | {agree:.3f} | "
                     f"{(got - reference).abs().max().item():.3f} |")
    chunks = [(out["torch, batch 32"][i:i + 64].argmax(-1) == reference[i:i + 64].argmax(-1)).float().mean().item()
              for i in range(0, n, 64)]
    lines += ["", f"64-row chunks in which torch at batch 32 agrees with itself at batch 64 on >= 99% of rows: "
              f"{sum(c >= 0.99 for c in chunks)} of {len(chunks)} (lowest {min(chunks):.3f}).", ""]
    atomic_write(OUT, lambda fh: fh.write("\n".join(lines).encode()))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
