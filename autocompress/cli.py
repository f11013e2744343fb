"""The ``autocompress`` command line: parse the arguments, call the library, format the output.

User errors print one line ``error: ...`` to stderr and exit with code 2; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import __version__
from .errors import AutocompressError

EXIT_USAGE = 2
EXIT_INTERNAL = 1
EXIT_TARGET_MISSED = 3  # the threshold held but the target was not reached (the best result is still written)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``error:`` line like every other user error."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message}; see `{self.prog} --help`\n")
        sys.exit(EXIT_USAGE)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error")


def _add_task_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="digits", metavar="TASK",
                        help="a built-in task name (digits, text), a path to a .py file that defines task(), "
                             "or package.module:function (default: digits)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where training and float measurement run: auto picks CUDA when present "
                             "(quantized models are always measured on CPU; default: auto)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for latency measurement (default: min(4, cores))")


def _add_requirement_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--objective", default="size", metavar="O",
                        help="what to reduce: size, flops, latency (batch-64 CPU) or energy (an estimate unless "
                             "RAPL is readable) (default: size)")
    parser.add_argument("--max-drop", default="1", metavar="D",
                        help="metric points the compressed model may lose, e.g. 1 = one percentage point "
                             "(default: 1)")
    parser.add_argument("--target", default="2", metavar="X",
                        help="X-fold reduction of the objective, e.g. 10 or 10x, or a percentage such as 90%% "
                             "(= 10x) (default: 2)")
    parser.add_argument("--backend", default="cpu", metavar="B",
                        help="deployment backend: cpu (int8 quantization allowed) or gpu (no quantization; "
                             "measured on CUDA) (default: cpu)")
    parser.add_argument("--budget", default="high", metavar="B",
                        help="compute for retraining: high (QAT, 15 epochs) or low (post-training "
                             "quantization, 5 epochs) (default: high)")


def _requirements(args: argparse.Namespace) -> Any:
    from .errors import ConfigError
    from .requirements import Requirements

    try:
        max_drop = float(args.max_drop)
    except ValueError:
        raise ConfigError(f"max drop {args.max_drop!r}", "a number of metric points in [0, 100)",
                          "pass e.g. --max-drop 1") from None
    return Requirements(objective=args.objective, max_drop=max_drop, target=args.target, backend=args.backend,
                        budget=args.budget)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autocompress",
                     description="Automated compression of trained PyTorch models: profile, plan, search, export.")
    parser.add_argument("--version", action="version", version=f"autocompress {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = commands.add_parser("profile", help="measure a task's model: layers, params, MACs, size, latency, metric",
                            description="Measure a task's model: architecture type, parameters and MACs per layer "
                                        "type, serialized size, CPU latency at batch 1 and 64, and the task metric.")
    _add_task_options(p)
    p.add_argument("--json", action="store_true", help="print the profile as stable JSON on stdout")
    _add_common(p)
    p.set_defaults(handler=_cmd_profile)

    p = commands.add_parser("plan", help="choose a compression plan with the rules and explain each choice",
                            description="Profile the task's model and choose a compression plan (pruning, "
                                        "distillation, quantization) from the rules, with a reason per choice.")
    _add_task_options(p)
    _add_requirement_options(p)
    p.add_argument("--json", action="store_true", help="print profile, plan and reasons as stable JSON")
    _add_common(p)
    p.set_defaults(handler=_cmd_plan)

    p = commands.add_parser("compress", help="run the rule plan end to end and write the model and a report",
                            description="Choose the rule plan and run it: prune, distil (QAT inside the loop), "
                                        "quantize, measure. Backs off when the metric drop exceeds --max-drop. "
                                        "Exit codes: 0 target met within the threshold; 3 threshold held but "
                                        "target missed (best result still written); 2 bad input.")
    _add_task_options(p)
    _add_requirement_options(p)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="directory for report.json, report.md and model.acz (the autocompress format)")
    p.add_argument("--format", action="append", default=[], choices=("torchscript", "onnx", "pt2"),
                   help="also export the compressed model in this format (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an earlier run in --out")
    p.add_argument("--attempts", type=int, default=4, metavar="N",
                   help="at most N pipeline runs while backing off or pushing to the target (default: 4)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    _add_common(p)
    p.set_defaults(handler=_cmd_compress)
    return parser


# ------------------------------------------------------------------------------------------------ commands
def _cmd_profile(args: argparse.Namespace) -> int:
    from .profile import profile_task
    from .task import load_task

    task = load_task(args.task)
    profile = profile_task(task, device=args.device, threads=args.threads)
    if args.json:
        print(json.dumps(profile.to_dict(), indent=2, sort_keys=False))
    else:
        _print_profile(profile)
    return 0


def _selection(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    from .pipeline import measurement_device
    from .profile import profile_task
    from .selection import select
    from .task import load_task

    requirements = _requirements(args)
    if requirements.backend == "gpu":
        from .device import resolve_device

        resolve_device("cuda")  # fail now, with a clear message, rather than after the work
    task = load_task(args.task)
    profile = profile_task(task, device=measurement_device(requirements), threads=args.threads)
    selection = select(profile, requirements, task.model, task.example_input, progress=True)
    return task, profile, requirements, selection


def _cmd_plan(args: argparse.Namespace) -> int:
    _, profile, _, selection = _selection(args)
    if args.json:
        print(json.dumps({"profile": profile.to_dict(), **selection.to_dict()}, indent=2))
        return 0
    from rich.console import Console

    console = Console()
    _print_profile(profile)
    console.print(f"\n[bold]plan[/bold]  {selection.plan.summary()}")
    for reason in selection.reasons:
        console.print(f"  - {reason}")
    return 0


def _prepare_out(path: str, overwrite: bool) -> Any:
    import os
    from pathlib import Path

    from .errors import ConfigError

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {path!r} exists and is not a directory", "a directory path (new or empty)",
                          "choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {path!r} already holds files", "a new or empty directory",
                          "choose another --out, or pass --overwrite to replace an earlier run's files")
    parent = out if out.exists() else next((p for p in out.absolute().parents if p.exists()), Path("/"))
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"--out {path!r} is not writable", "a directory you can write to",
                          "choose another --out")
    return out


def _cmd_compress(args: argparse.Namespace) -> int:
    from rich.console import Console

    from . import pipeline
    from .export import export_model
    from .report import write_report

    err = Console(stderr=True)
    out = _prepare_out(args.out, args.overwrite)
    task, profile, requirements, selection = _selection(args)
    err.print(f"plan: {selection.plan.summary()}")
    result = pipeline.run(task, selection.plan, requirements, original=profile, device=args.device,
                          max_attempts=args.attempts, log=err.print)
    out.mkdir(parents=True, exist_ok=True)
    report = result.report([str(r) for r in selection.reasons])
    report["requirements"] = requirements.to_dict()
    report["task"] = task.name
    exports = {}
    for fmt in ["autocompress", *args.format]:
        suffix = {"autocompress": "acz", "torchscript": "ts", "onnx": "onnx", "pt2": "pt2"}[fmt]
        exported = export_model(result.model, fmt, out / f"model.{suffix}", task.example_input,
                                check_inputs=task.eval_loader(), plan=result.plan.to_dict(),
                                base_model=task.model, overwrite=args.overwrite)
        exports[fmt] = {"path": str(exported.path), "check": exported.check_metric, "value": exported.check_value}
    report["exports"] = exports
    write_report(out, report, f"{task.name}: {requirements.objective} {requirements.target:g}× "
                              f"within {requirements.max_drop:g} points")
    if args.json:
        print(json.dumps(report, indent=2, default=float))
    else:
        _print_compress_summary(report, out)
    for note in result.notes:
        err.print(f"note: {note}")
    if result.target_met:
        return 0
    err.print(f"target not reached: {result.reduction[requirements.objective]:.2f}× {requirements.objective} "
              f"(wanted {requirements.target:g}×) within {requirements.max_drop:g} points; the best result is in {out}")
    return EXIT_TARGET_MISSED


def _print_compress_summary(report: dict[str, Any], out: Any) -> None:
    from rich.console import Console

    console = Console()
    red = report["reduction"]
    console.print(f"compressed: {red['size']:.2f}× size, {red['flops']:.2f}× MACs, {red['latency']:.2f}× "
                  f"latency (batch 64), {red['energy']:.2f}× energy ({report['original']['energy_mj'].get('method')})"
                  f"; metric drop {report['metric_drop']:.2f} points")
    console.print(f"plan: {report['plan_summary']}")
    console.print(f"wrote {out}/report.json, {out}/report.md and the model in {out}")


def _print_profile(profile: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{profile.task or 'model'}: {profile.arch_type}, {profile.params:,} params, "
                        f"{profile.flops:,} MACs")
    for column in ("layer type", "count", "params", "% params", "MACs", "% MACs"):
        table.add_column(column, justify="left" if column == "layer type" else "right")
    for layer in profile.layers:
        table.add_row(layer.type, str(layer.count), f"{layer.params:,}",
                      f"{100 * layer.params / max(profile.params, 1):.1f}", f"{layer.flops:,}",
                      f"{100 * layer.flops / max(profile.flops, 1):.1f}")
    console.print(table)
    metric = profile.metric
    if metric.get("name"):
        console.print(f"metric      {metric['name']} = {metric['value']:.4f}")
    console.print(f"size        {profile.size_mb:.3f} MB (serialized state dict)")
    console.print(f"latency     {profile.latency_ms['batch_1']:.3f} ms at batch 1, "
                  f"{profile.latency_ms['batch_64']:.3f} ms at batch 64 "
                  f"({profile.device}, {profile.threads} threads, median of 30)")


# ------------------------------------------------------------------------------------------------ entry point
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return handler(args)
    except AutocompressError as exc:
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except Exception as exc:  # a bug, not a user error: still one line unless --debug
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"error: internal error {type(exc).__name__}: {' '.join(str(exc).split())}; "
                         "rerun with --debug for the traceback and report it\n")
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
