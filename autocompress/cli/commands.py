"""The command line's handlers: each calls the library and formats its answer (no logic of their own)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_USAGE = 2
EXIT_INTERNAL = 1
EXIT_TARGET_MISSED = 3  # the threshold held but the target was not reached, or a requested format was skipped
# because back-off changed the quantization mode (the best result is still written)


DEFAULT_TASK = "digits"
FILES_OPTIONS = ("eval_data", "split_seed", "text_column", "label_column", "metric", "weights", "image_size")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _files_spec(args: argparse.Namespace) -> Any:
    """The task without code that --model and --data name, or None when --data is absent (then --model, where the
    command has it, is weights for --task's architecture)."""
    from pathlib import Path

    from ..errors import ConfigError

    data, model = getattr(args, "data", None), getattr(args, "model", None)
    given = [_option(k) for k in FILES_OPTIONS if getattr(args, k, None) is not None]
    if data is None:
        if given:
            raise ConfigError(f"{given[0]} without --data", f"{given[0]} only with --model and --data",
                              "add --data FILE_OR_FOLDER, or leave out " + given[0])
        if model is not None and not hasattr(args, "allow_pickle"):  # study, bench: no weights-for-task meaning
            raise ConfigError(f"--model {model} without --data", f"{args.command} takes --model only with --data (it "
                              "re-loads its task by reference, so --task's weights belong in the task file)",
                              "add --data, or load the weights inside your task file")
        if model is not None and (model.startswith("torchvision:") or Path(model).is_dir()):
            raise ConfigError(f"--model {model} without --data",
                              "--data with a model folder or torchvision:NAME (without --data, --model is a weights "
                              "file for --task's architecture)", "add --data FILE_OR_FOLDER")
        return None
    if model is None:
        raise ConfigError(f"--data {data} without --model", "a model for the data: --model with a Hugging Face "
                          "folder or torchvision:NAME --weights FILE", "add --model")
    if getattr(args, "task", None) is not None:
        raise ConfigError(f"--task {args.task} with --data {data}", "either --task, or --model with --data",
                          "leave out --task")
    if getattr(args, "allow_pickle", False):
        raise ConfigError("--allow-pickle with --data", "no pickles: a Hugging Face folder, or torchvision weights "
                          "loaded as a state dict", "leave out --allow-pickle")
    from ..tasks.files import files_spec

    return files_spec(model, data, **{k: getattr(args, k) for k in FILES_OPTIONS})


def _task_ref(args: argparse.Namespace) -> str:
    """The task reference the command runs: --task, or the files: reference of --model and --data."""
    spec = _files_spec(args)
    return spec.ref() if spec is not None else (args.task or DEFAULT_TASK)


def _task_of(args: argparse.Namespace) -> Any:
    """The task named by --task (with --model's weights when given), or the one --model and --data make."""
    from ..task import load_task, validate_task

    spec = _files_spec(args)
    if spec is not None:
        task = load_task(spec.ref())
        sys.stderr.write(f"task {task.name}: {task.description}\n")
        return task
    task = load_task(args.task or DEFAULT_TASK)
    if getattr(args, "model", None):
        import dataclasses

        from ..errors import ConfigError
        from ..export import LoadedProgram, load

        model = load(args.model, base_model=task.model, allow_pickle=args.allow_pickle)
        if isinstance(model, LoadedProgram):
            raise ConfigError(f"--model {args.model} is a compiled program (TorchScript, torch.export or ONNX)",
                              "a state dict, an autocompress archive or (with --allow-pickle) a pickled module",
                              "pass the weights as a state dict for the task's architecture")
        task = validate_task(dataclasses.replace(task, model=model))
    return task


def _requirements(args: argparse.Namespace) -> Any:
    from ..errors import ConfigError
    from ..requirements import Requirements

    try:
        max_drop = float(args.max_drop)
    except ValueError:
        raise ConfigError(f"max drop {args.max_drop!r}", "a number of metric points in [0, 100)",
                          "pass e.g. --max-drop 1") from None
    return Requirements(objective=args.objective, max_drop=max_drop, target=args.target, backend=args.backend,
                        budget=args.budget)


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from ..dashboard_server import serve_dashboard

    return serve_dashboard(args.storage, args.name, args.host, args.port, log=lambda m: sys.stderr.write(m + "\n"))


def _cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from ..bench import run_bench

    err = Console(stderr=True)
    definition, out = args.definition, args.out
    spec = _files_spec(args)
    if spec is not None:
        from ..task import load_task
        from ..tasks.files import bench_definition_for

        load_task(spec.ref())  # bad files are a one-line error before anything is written
        out = out or str(Path(definition).parent / "results")
        definition = bench_definition_for(definition, spec, out)
        err.print(f"wrote {definition}: {args.definition} with the task of --model and --data")
    if args.keep_studies:
        Path(args.keep_studies).mkdir(parents=True, exist_ok=True)
    result, md_path, csv_path = run_bench(definition, out, args.keep_studies, log=err.print,
                                          backend=args.backend)
    print(f"wrote {md_path} and {csv_path} ({len(result.rows)} rows) in {result.seconds['total']:.0f}s")
    return 0


def _cmd_study_run(args: argparse.Namespace) -> int:
    import time

    from ..device import require_backend
    from ..requirements import with_objectives
    from ..study import finished_trials, is_feasible, mask_url, pareto, parse_objectives, resolve_storage, run_study

    task_ref = _task_ref(args)
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
    study = run_study(task_ref, requirements, objectives, args.trials, name=args.name, storage=args.storage,
                      timeout=args.timeout, seed=args.seed, device=args.device, threads=args.threads,
                      artifacts=args.artifacts, n_neighbours=args.neighbours, on_trial=on_trial,
                      log=lambda m: sys.stderr.write(m + "\n"))
    front = pareto(study, url)
    finished = len(finished_trials(study))
    on_front = len(front["front"])
    print(f"\nPareto front: {on_front} feasible trial{'s' if on_front != 1 else ''} that no other beats on every "
          f"objective, of {finished} finished; {front['epochs']['total']} epochs, "
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
    from ..study import dumps, load_study, resolve_storage, show

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
    from ..study import dumps, load_study, pareto, resolve_storage

    _, url = resolve_storage(args.storage)
    data = pareto(load_study(args.name, args.storage), url)
    if args.json:
        print(dumps(data))
    else:
        print(f"Pareto front of {data['name']} (feasible trials only):")
        _print_front(data)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ..study import dumps, export_trial, load_study, pick_trial

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
    from ..profile import profile_task

    task = _task_of(args)
    profile = profile_task(task, device=args.device, threads=args.threads)
    if args.json:
        print(json.dumps(profile.to_dict(), indent=2, sort_keys=False))
    else:
        _print_profile(profile)
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from ..estimate import estimate_or_reason
    from ..selection import plan_task
    from ..study import SearchSpace

    task, requirements = _task_of(args), _requirements(args)
    profile, selection = plan_task(task, requirements, threads=args.threads, progress=True)
    space = SearchSpace.for_model(profile, requirements, objectives=(requirements.objective,),
                                  seed_mode=selection.plan.quantization_mode)
    guess, why_not = estimate_or_reason(task, profile, requirements, space.quantization)
    if args.json:
        print(json.dumps({"profile": profile.to_dict(), **selection.to_dict(),
                          "estimate": guess.to_dict() if guess else None}, indent=2))
        return 0
    from rich.console import Console

    console = Console()
    _print_profile(profile)
    console.print(f"\n[bold]plan[/bold]  {selection.plan.summary()}")
    for reason in selection.reasons:
        console.print(f"  - {reason}")
    if guess is not None:
        console.print(f"\n{guess.describe()}")
        for note in guess.notes:
            console.print(f"  - {note}")
    elif why_not:
        console.print(f"\n{why_not}")
    return 0


def _cmd_compress(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..compress import compress, prepare_out
    from ..device import require_backend
    from ..pipeline import check_attempts

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
    if profile.components:
        parts = Table(title="where the transformer's bytes and MACs are")
        for column in ("component", "params", "MB", "% bytes", "MACs", "% MACs"):
            parts.add_column(column, justify="left" if column == "component" else "right")
        total_bytes = sum(c["bytes"] for c in profile.components.values()) or 1
        total_flops = sum(c["flops"] for c in profile.components.values()) or 1
        for name, c in profile.components.items():
            parts.add_row(name, f"{c['params']:,}", f"{c['bytes'] / 1e6:.2f}", f"{100 * c['bytes'] / total_bytes:.1f}",
                          f"{c['flops']:,}", f"{100 * c['flops'] / total_flops:.1f}")
        console.print(parts)
    metric = profile.metric
    if metric.get("name"):
        console.print(f"metric      {metric['name']} = {metric['value']:.4f}")
    console.print(f"size        {profile.size_mb:.3f} MB (serialized state dict)")
    console.print(f"latency     {profile.latency_ms['batch_1']:.3f} ms at batch 1, "
                  f"{profile.latency_ms['batch_64']:.3f} ms at batch 64 "
                  f"({profile.device}, {profile.threads} threads, median of 30)")


