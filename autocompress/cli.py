"""The ``autocompress`` command line: parse the arguments, call the library, format the output.

User errors print one line ``error: ...`` to stderr and exit with code 2; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import __version__
from .errors import AutocompressError

EXIT_USAGE = 2
EXIT_INTERNAL = 1
EXIT_TARGET_MISSED = 3  # the threshold held but the target was not reached, or a requested format was skipped
# because back-off changed the quantization mode (the best result is still written)


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


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, metavar="FILE",
                        help="use the weights in FILE instead of the task's model: a state dict saved with "
                             "torch.save(model.state_dict()) for the task's architecture (loaded with "
                             "weights_only=True), or an autocompress archive")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="also accept a whole pickled nn.Module in --model. Unpickling runs whatever code the "
                             "file names: only for a file you made or trust")


def _task_of(args: argparse.Namespace) -> Any:
    """The task named by --task, with --model's weights when given."""
    from .task import load_task, validate_task

    task = load_task(args.task)
    if getattr(args, "model", None):
        import dataclasses

        from .errors import ConfigError
        from .export import LoadedProgram, load

        model = load(args.model, base_model=task.model, allow_pickle=args.allow_pickle)
        if isinstance(model, LoadedProgram):
            raise ConfigError(f"--model {args.model} is a compiled program (TorchScript, torch.export or ONNX)",
                              "a state dict, an autocompress archive or (with --allow-pickle) a pickled module",
                              "pass the weights as a state dict for the task's architecture")
        task = validate_task(dataclasses.replace(task, model=model))
    return task


def _add_requirement_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--objective", default="size", metavar="O",
                        help="what to reduce: size, flops, latency (batch-64 CPU) or energy (an estimate unless "
                             "RAPL is readable) (default: size)")
    parser.add_argument("--max-drop", default="1", metavar="D",
                        help="the largest metric drop allowed: percentage points for accuracy and F1 (1 = one "
                             "point), the metric's own units for a task whose metric is raw, e.g. a perplexity "
                             "(Task.metric_scale; callable metrics are raw unless the task says fraction) "
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
    _add_model_options(p)
    p.add_argument("--json", action="store_true", help="print the profile as stable JSON on stdout")
    _add_common(p)
    p.set_defaults(handler=_cmd_profile)

    p = commands.add_parser("plan", help="choose a compression plan with the rules and explain each choice",
                            description="Profile the task's model and choose a compression plan (pruning, "
                                        "distillation, quantization) from the rules, with a reason per choice.")
    _add_task_options(p)
    _add_model_options(p)
    _add_requirement_options(p)
    p.add_argument("--json", action="store_true", help="print profile, plan and reasons as stable JSON")
    _add_common(p)
    p.set_defaults(handler=_cmd_plan)

    p = commands.add_parser("compress", help="run the rule plan end to end and write the model and a report",
                            description="Choose the rule plan and run it: prune, distil (QAT inside the loop), "
                                        "quantize, measure. Backs off when the metric drop exceeds --max-drop. "
                                        "Exit codes: 0 target met within the threshold; 3 threshold held but "
                                        "target missed, or a --format skipped because back-off changed the "
                                        "quantization mode (best result still written); 2 bad input.")
    _add_task_options(p)
    _add_model_options(p)
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

    _add_study_commands(commands)
    _add_dashboard_command(commands)
    _add_bench_command(commands)
    return parser


STUDY_ACTIONS = ("run", "show", "pareto")


def _add_storage_options(parser: argparse.ArgumentParser, name_required: bool) -> None:
    parser.add_argument("--name", required=name_required, default="autocompress", metavar="NAME",
                        help="the study's name in the storage" + ("" if name_required else
                                                                   " (default: autocompress)"))
    parser.add_argument("--storage", default=None, metavar="URL",
                        help="an Optuna storage URL: sqlite:///path.db, postgresql://user@host/db, or "
                             "journal:///path/to/file.log (default: sqlite:///studies/autocompress.db)")
    parser.add_argument("--artifacts", default=None, metavar="DIR",
                        help="folder of the trials' models (default: <storage file>.artifacts/ beside a SQLite "
                             "or journal file, else studies/artifacts/NAME/; recorded in the study)")


def _add_study_commands(commands: Any) -> None:
    study = commands.add_parser("study", help="search around the rule plan with Optuna; show a study or its front",
                                description="`study [run]` runs or resumes a study (see `study run --help`); "
                                            "`study show` prints its trials; `study pareto` its feasible front.")
    actions = study.add_subparsers(dest="study_action", metavar="ACTION", parser_class=_Parser)

    p = actions.add_parser("run", help="run or resume a study (the default action)",
                           description="Seed an Optuna study with the rule plan (trial 0) and search around it: "
                                       "maximise the metric, minimise the objective cost(s), with drop <= "
                                       "--max-drop as a constraint. Re-running with the same --name and --storage "
                                       "resumes it; --trials is the TOTAL number of finished trials wanted.")
    _add_task_options(p)
    _add_requirement_options(p)
    p.add_argument("--objectives", default=None, metavar="A,B",
                   help="several costs to minimise, e.g. size,latency (default: --objective alone)")
    p.add_argument("--trials", type=int, default=12, metavar="N",
                   help="total finished (complete or failed) trials wanted; a resumed study runs only the "
                        "missing ones (default: 12)")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="stop starting trials after S seconds")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="the sampler's seed (default: 0)")
    p.add_argument("--neighbours", type=int, default=3, metavar="K",
                   help="also enqueue up to K neighbours of the rule plan: milder pruning, the same with combined "
                        "distillation, harder pruning, much milder pruning (default: 3)")
    _add_storage_options(p, name_required=False)
    _add_common(p)
    p.set_defaults(handler=_cmd_study_run)

    for action, text in (("show", "print every trial of a study"), ("pareto", "print a study's feasible Pareto front")):
        p = actions.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        _add_storage_options(p, name_required=True)
        p.add_argument("--json", action="store_true", help="stable JSON on stdout")
        _add_common(p)
        p.set_defaults(handler=_cmd_study_show if action == "show" else _cmd_study_pareto)

    p = commands.add_parser("export", help="export a study trial's model (from its stored artifact)",
                            description="Export a trial's compressed model from the study's artifact store, "
                                        "with the reload parity check of the chosen format. No task import is "
                                        "needed.")
    _add_storage_options(p, name_required=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, default=None, metavar="N", help="the trial number")
    which.add_argument("--best", action="store_true",
                       help="the feasible Pareto trial with the largest reduction of --prefer")
    p.add_argument("--prefer", choices=("size", "flops", "latency", "energy"), default=None,
                   help="with --best: which reduction to maximise (default: the study's objective)")
    p.add_argument("--format", choices=("torchscript", "onnx", "pt2", "autocompress"), default="autocompress")
    p.add_argument("--out", required=True, metavar="PATH", help="the file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file at --out")
    p.add_argument("--json", action="store_true", help="print the export's figures as JSON")
    _add_common(p)
    p.set_defaults(handler=_cmd_export)


def _add_dashboard_command(commands: Any) -> None:
    p = commands.add_parser("dashboard", help="browse studies in the Streamlit dashboard",
                            description="Start the Streamlit dashboard on a study storage: Pareto view, trial "
                                        "table, trial detail and export. It reads the storage and the trials' "
                                        "stored models only; it never runs task code.")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="an Optuna storage URL (default: sqlite:///studies/autocompress.db)")
    p.add_argument("--name", default=None, metavar="NAME", help="the study to open first (default: the first)")
    p.add_argument("--port", type=int, default=8501, help="the port to listen on (default: 8501)")
    p.add_argument("--host", default="127.0.0.1",
                   help="the address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 exposes it)")
    _add_common(p)
    p.set_defaults(handler=_cmd_dashboard)


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from .dashboard_server import serve_dashboard

    return serve_dashboard(args.storage, args.name, args.host, args.port, log=lambda m: sys.stderr.write(m + "\n"))


def _add_bench_command(commands: Any) -> None:
    p = commands.add_parser("bench", help="run a benchmark definition (studies/*.yaml) and write its tables",
                            description="Run the benchmark a YAML file defines (performance preservation, "
                                        "targets, baselines side by side) and write <name>.md and <name>.csv.")
    p.add_argument("definition", metavar="FILE.yaml", help="the benchmark definition, e.g. studies/digits.yaml")
    p.add_argument("--out", default=None, metavar="DIR", help="where the tables go (default: results/ beside FILE)")
    p.add_argument("--keep-studies", default=None, metavar="DIR",
                   help="keep the benchmark's studies in DIR/<name>.db (default: a temporary folder), e.g. to "
                        "browse them with `autocompress dashboard --storage sqlite:///DIR/<name>.db`")
    _add_common(p)
    p.set_defaults(handler=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from .bench import run_bench

    err = Console(stderr=True)
    if args.keep_studies:
        Path(args.keep_studies).mkdir(parents=True, exist_ok=True)
    result, md_path, csv_path = run_bench(args.definition, args.out, args.keep_studies, log=err.print)
    print(f"wrote {md_path} and {csv_path} ({len(result.rows)} rows) in {result.seconds['total']:.0f}s")
    return 0


def _study_argv(argv: list[str]) -> list[str]:
    """``study --task ...`` means ``study run --task ...``."""
    for i, token in enumerate(argv):
        if token == "study":
            rest = argv[i + 1:]
            if not rest or rest[0] not in (*STUDY_ACTIONS, "-h", "--help"):
                return [*argv[:i + 1], "run", *rest]
            return argv
        if not token.startswith("-"):
            return argv
    return argv


def _cmd_study_run(args: argparse.Namespace) -> int:
    import time

    from .device import require_backend
    from .requirements import with_objectives
    from .study import finished_trials, is_feasible, mask_url, pareto, parse_objectives, resolve_storage, run_study

    objectives = parse_objectives(args.objective, args.objectives)
    requirements = with_objectives(_requirements(args), objectives)
    require_backend(requirements.backend)
    _, url = resolve_storage(args.storage)
    started = time.perf_counter()
    header = f"{'trial':>5}  {'plan':<58} {'metric':>7} {'drop':>6}  " + "  ".join(
        f"{o:>14}" for o in objectives) + f"  {'feasible':>8} {'time':>7}"
    state = {"header": False}

    def on_trial(study: Any, trial: Any) -> None:
        if not state["header"]:
            print(header, flush=True)
            state["header"] = True
        attrs = trial.user_attrs
        summary = attrs.get("plan_summary", "")
        secs = f"{attrs.get('seconds', 0.0):6.1f}s"
        if trial.state.name != "COMPLETE":
            print(f"{trial.number:>5}  {summary:<58} FAILED: {attrs.get('error', trial.state.name)}  {secs}",
                  flush=True)
            return
        values = trial.values
        reduction = attrs.get("reduction") or {}
        costs = "  ".join(f"{v:>8.4g} {(reduction.get(o) or 0):>4.1f}x" for o, v in zip(objectives, values[1:]))
        # An aborted trial is usually infeasible, but int8 conversion can still lift it over the threshold.
        feasible = "yes" if is_feasible(trial) else ("aborted" if attrs.get("aborted") else "no")
        print(f"{trial.number:>5}  {summary:<58} {values[0]:>7.4f} {attrs.get('metric_drop', 0):>6.2f}  {costs}  "
              f"{feasible:>8} {secs}", flush=True)

    sys.stderr.write(f"study {args.name!r} in {mask_url(url)}: objectives metric + {', '.join(objectives)}, "
                     f"drop <= {requirements.max_drop:g} points, {args.trials} trials in total\n")
    study = run_study(args.task, requirements, objectives, args.trials, name=args.name, storage=args.storage,
                      timeout=args.timeout, seed=args.seed, device=args.device, threads=args.threads,
                      artifacts=args.artifacts, n_neighbours=args.neighbours, on_trial=on_trial,
                      log=lambda m: sys.stderr.write(m + "\n"))
    front = pareto(study, url)
    finished = len(finished_trials(study))
    print(f"\nPareto front (feasible trials only, {len(front['front'])} of {finished} finished), "
          f"{time.perf_counter() - started:.0f}s this run:")
    _print_front(front)
    storage_arg = f" --storage {mask_url(args.storage)}" if args.storage else ""
    print(f"\nexport one:      autocompress export --name {args.name}{storage_arg} --best --format torchscript "
          "--out model.ts")
    print(f"every trial:     autocompress study show --name {args.name}{storage_arg}")
    print(f"open dashboard:  autocompress dashboard{storage_arg} --name {args.name}   (then http://127.0.0.1:8501)")
    return 0


def _print_front(data: dict[str, Any]) -> None:
    costs = data["objectives"]["costs"]
    if not data["front"]:
        print("  no feasible trial yet")
        return
    for r in sorted(data["front"], key=lambda r: r["number"]):
        red = ", ".join(f"{(r['reduction'] or {}).get(o) or 0:.1f}x {o}" for o in costs)
        print(f"  trial {r['number']:>3}: {data['objectives']['metric'] or 'metric'} {r['values'][0]:.4f} "
              f"(drop {r['metric_drop']:.2f}), {red}  | {r['plan_summary']}")


def _cmd_study_show(args: argparse.Namespace) -> int:
    from .study import dumps, load_study, resolve_storage, show

    _, url = resolve_storage(args.storage)
    data = show(load_study(args.name, args.storage), url)
    if args.json:
        print(dumps(data))
        return 0
    print(f"study {data['name']} ({data['task']}): metric + {', '.join(data['objectives']['costs'])}, "
          f"drop <= {data['requirements']['max_drop']:g}; original {data['original']['metric'].get('name')} "
          f"{data['original']['metric'].get('value'):.4f}, {data['original']['size_mb']:.4f} MB")
    for r in data["trials"]:
        if r["state"] != "COMPLETE":
            print(f"  {r['number']:>3} {r['state']:<8} {r['plan_summary'] or ''}  {r['error'] or ''}")
            continue
        red = ", ".join(f"{(r['reduction'] or {}).get(o) or 0:.1f}x {o}" for o in data["objectives"]["costs"])
        print(f"  {r['number']:>3} {'feasible' if r['feasible'] else 'over':<8} {r['values'][0]:.4f} "
              f"(drop {r['metric_drop']:.2f}), {red}  | {r['plan_summary']}" + (f"  [{r['aborted']}]"
                                                                               if r["aborted"] else ""))
    return 0


def _cmd_study_pareto(args: argparse.Namespace) -> int:
    from .study import dumps, load_study, pareto, resolve_storage

    _, url = resolve_storage(args.storage)
    data = pareto(load_study(args.name, args.storage), url)
    if args.json:
        print(dumps(data))
    else:
        print(f"Pareto front of {data['name']} (feasible trials only):")
        _print_front(data)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .study import dumps, export_trial, load_study, pick_trial

    study = load_study(args.name, args.storage)
    trial = pick_trial(study, number=args.trial, prefer=args.prefer)
    figures = export_trial(study, trial, args.format, args.out, artifacts=args.artifacts, overwrite=args.overwrite)
    if args.json:
        print(dumps(figures))
    else:
        print(f"wrote {figures['path']} ({figures['format']}) from trial {trial.number}: "
              f"{figures['plan_summary']}; reload check {figures['check']} = {figures['value']:.4g}")
    return 0


# ------------------------------------------------------------------------------------------------ commands
def _cmd_profile(args: argparse.Namespace) -> int:
    from .profile import profile_task

    task = _task_of(args)
    profile = profile_task(task, device=args.device, threads=args.threads)
    if args.json:
        print(json.dumps(profile.to_dict(), indent=2, sort_keys=False))
    else:
        _print_profile(profile)
    return 0


def _selection(args: argparse.Namespace) -> tuple[Any, Any]:
    from .selection import plan_task

    return plan_task(_task_of(args), _requirements(args), threads=args.threads, progress=True)


def _cmd_plan(args: argparse.Namespace) -> int:
    profile, selection = _selection(args)
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


def _cmd_compress(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .compress import compress, prepare_out
    from .device import require_backend
    from .pipeline import check_attempts

    err = Console(stderr=True)
    check_attempts(args.attempts)  # before the task is imported: bad options fail at once
    prepare_out(args.out, args.overwrite)
    requirements = _requirements(args)
    require_backend(requirements.backend)
    outcome = compress(_task_of(args), requirements, args.out, formats=args.format, attempts=args.attempts,
                       overwrite=args.overwrite, device=args.device, threads=args.threads, log=err.print)
    result, report, out = outcome.result, outcome.report, outcome.out
    if args.json:
        print(json.dumps(report, indent=2, default=float))
    else:
        _print_compress_summary(report, out)
    for note in result.notes:
        err.print(f"note: {note}")
    for fmt, why in outcome.skipped.items():
        err.print(f"skipped --format {fmt}: {why}")
    if outcome.complete:
        return 0
    if not result.target_met:
        err.print(f"target not reached: {result.reduction[requirements.objective]:.2f}× {requirements.objective} "
                  f"(wanted {requirements.target:g}×) within {requirements.max_drop:g}; the best result is in {out}")
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
    # Before torch loads: OpenMP threads that wait should sleep, not spin on cores other workers need.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(_study_argv(list(sys.argv[1:] if argv is None else argv)))
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
    except BrokenPipeError:
        # The reader went away (`... --json | head`): not an error of ours; silence the flush at exit too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug, not a user error: still one line unless --debug
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"error: internal error {type(exc).__name__}: {' '.join(str(exc).split())}; "
                         "rerun with --debug for the traceback and report it\n")
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
