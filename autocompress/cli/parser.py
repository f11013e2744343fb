"""The command line's arguments: one sub-parser per command, each naming its handler in :mod:`.commands`."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from .. import __version__
from . import commands as handlers
from .commands import EXIT_USAGE


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``error:`` line like every other user error."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message}; see `{self.prog} --help`\n")
        sys.exit(EXIT_USAGE)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error")


def _add_task_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default=None, metavar="TASK",
                        help="a built-in task name (digits, mnist, text, reviews), a path to a .py file that defines "
                             "task(), or package.module:function (default: digits; not with --data)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where training and float measurement run: auto picks CUDA when present "
                             "(quantized models are always measured on CPU; default: auto)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for latency measurement (default: min(4, cores))")


MODEL_HELP = ("with --data: a Hugging Face classifier folder written by save_pretrained (with its tokenizer or "
              "image processor), or torchvision:NAME with --weights FILE. Without --data: weights for --task's "
              "architecture, a state dict saved with torch.save(model.state_dict()) (loaded with "
              "weights_only=True) or an autocompress archive")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, metavar="MODEL", help=MODEL_HELP)
    parser.add_argument("--allow-pickle", action="store_true",
                        help="also accept a whole pickled nn.Module in --model (without --data). Unpickling runs "
                             "whatever code the file names: only for a file you made or trust")


def _add_files_options(parser: argparse.ArgumentParser, with_model: bool) -> None:
    """A task without code: a model and data files instead of --task (see autocompress.tasks.files)."""
    group = parser.add_argument_group(
        "a task without code", "--model and --data instead of --task: a text classifier with a CSV, JSONL or "
                               "Parquet table, or an image classifier with an image folder (one subfolder per class)")
    if with_model:
        group.add_argument("--model", default=None, metavar="MODEL",
                           help="a Hugging Face classifier folder written by save_pretrained (with its tokenizer or "
                                "image processor), or torchvision:NAME with --weights FILE")
    group.add_argument("--data", default=None, metavar="PATH",
                       help="a .csv/.tsv/.jsonl/.parquet file with a text and a label column, or an image folder in "
                            "torchvision's ImageFolder layout (DIR/<class>/<image>)")
    group.add_argument("--eval-data", default=None, metavar="PATH",
                       help="evaluation data of the same kind (default: a stratified 20%% of --data)")
    group.add_argument("--split-seed", type=int, default=None, metavar="N",
                       help="the seed of the stratified 80/20 split when there is no --eval-data (default: 0)")
    group.add_argument("--text-column", default=None, metavar="NAME",
                       help="the text column (default: the first of text, sentence, review, content, document; "
                            "any case)")
    group.add_argument("--label-column", default=None, metavar="NAME",
                       help="the label column (default: the first of label, labels, target, class, sentiment; any "
                            "case). Label names are matched to the model's config.id2label when it has real names")
    group.add_argument("--metric", choices=("accuracy", "f1"), default=None,
                       help="the task metric: accuracy or macro F1 (default: accuracy)")
    group.add_argument("--weights", default=None, metavar="FILE",
                       help="with --model torchvision:NAME: the state dict (torch.save(model.state_dict())), loaded "
                            "with weights_only=True; the class count comes from the data")
    group.add_argument("--image-size", type=int, default=None, metavar="N",
                       help="with torchvision:NAME: resize images to NxN (default: the images' median longer side "
                            "within 32..64; a Hugging Face model uses its image processor)")


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
                        help="deployment backend: cpu (torch on CPU, int8 by torch.ao), onnxruntime (each model "
                             "exported to ONNX, int8 by ONNX Runtime's tools, measured in an ONNX Runtime CPU "
                             "session) or gpu (no quantization; measured on CUDA) (default: cpu)")
    parser.add_argument("--budget", default="high", metavar="B",
                        help="compute for retraining: high (QAT, 15 epochs) or low (post-training "
                             "quantization, 5 epochs) (default: high)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autocompress",
                     description="Automated compression of trained PyTorch models: profile, plan, search, export.")
    parser.add_argument("--version", action="version", version=f"autocompress {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    # The commands that take a task: their parsers differ only in these texts and in the requirement options.
    for name, text, description, json_help, with_requirements, handler in (
        ("profile", "measure a task's model: layers, params, MACs, size, latency, metric",
         "Measure a task's model: architecture type, parameters and MACs per layer type, serialized size, CPU "
         "latency at batch 1 and 64, and the task metric.", "print the profile as stable JSON on stdout", False,
         handlers._cmd_profile),
        ("plan", "choose a compression plan with the rules and explain each choice",
         "Profile the task's model and choose a compression plan (pruning, distillation, quantization) from the "
         "rules, with a reason per choice.", "print profile, plan and reasons as stable JSON", True,
         handlers._cmd_plan),
    ):
        p = commands.add_parser(name, help=text, description=description)
        _add_task_options(p)
        _add_model_options(p)
        _add_files_options(p, with_model=False)
        if with_requirements:
            _add_requirement_options(p)
        p.add_argument("--json", action="store_true", help=json_help)
        _add_common(p)
        p.set_defaults(handler=handler)

    p = commands.add_parser("compress", help="run the rule plan end to end and write the model and a report",
                            description="Choose the rule plan and run it: prune, distil (QAT inside the loop), "
                                        "quantize, measure. Backs off when the metric drop exceeds --max-drop. "
                                        "Exit codes: 0 target met within the threshold; 3 threshold held but "
                                        "target missed, or a --format skipped because back-off changed the "
                                        "quantization mode (best result still written); 2 bad input.")
    _add_task_options(p)
    _add_model_options(p)
    _add_files_options(p, with_model=False)
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
    p.set_defaults(handler=handlers._cmd_compress)

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
    _add_files_options(p, with_model=True)
    _add_requirement_options(p)
    p.add_argument("--objectives", default=None, metavar="A,B",
                   help="several costs to minimise, e.g. size,latency (default: --objective alone)")
    p.add_argument("--trials", type=int, default=12, metavar="N",
                   help="total finished (complete or failed) trials wanted; a resumed study runs only the "
                        "missing ones (default: 12)")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="stop starting trials after S seconds")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="the sampler's seed (default: 0)")
    p.add_argument("--neighbours", type=int, default=3, metavar="K",
                   help="also enqueue up to K neighbours of the rule plan: milder pruning, the hand recipe at the "
                        "plan's ratio (CNNs, MLPs), the milder pruning with combined distillation, harder pruning, "
                        "much milder pruning (default: 3)")
    _add_storage_options(p, name_required=False)
    _add_common(p)
    p.set_defaults(handler=handlers._cmd_study_run)

    for action, text in (("show", "print every trial of a study"), ("pareto", "print a study's feasible Pareto front")):
        p = actions.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        _add_storage_options(p, name_required=True)
        p.add_argument("--json", action="store_true", help="stable JSON on stdout")
        _add_common(p)
        p.set_defaults(handler=handlers._cmd_study_show if action == "show" else handlers._cmd_study_pareto)

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
    p.set_defaults(handler=handlers._cmd_export)


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
    p.set_defaults(handler=handlers._cmd_dashboard)


def _add_bench_command(commands: Any) -> None:
    p = commands.add_parser("bench", help="run a benchmark definition (studies/*.yaml) and write its tables",
                            description="Run the benchmark a YAML file defines (performance preservation, "
                                        "targets, baselines side by side) and write <name>.md and <name>.csv. With "
                                        "--model and --data the file's tasks are replaced by that one: the "
                                        "definition it runs is written beside the tables as "
                                        "<name>-<task>.yaml.")
    p.add_argument("definition", metavar="FILE.yaml", help="the benchmark definition, e.g. studies/digits.yaml")
    p.add_argument("--out", default=None, metavar="DIR", help="where the tables go (default: results/ beside FILE)")
    p.add_argument("--keep-studies", default=None, metavar="DIR",
                   help="keep the benchmark's studies in DIR/<name>.db (default: a temporary folder), e.g. to "
                        "browse them with `autocompress dashboard --storage sqlite:///DIR/<name>.db`")
    p.add_argument("--backend", default=None, metavar="B",
                   help="run every study and baseline on this deployment backend (cpu, onnxruntime, gpu) instead "
                        "of the file's (`backend:`, default cpu); the tables are then <name>-<backend>.md and .csv")
    _add_files_options(p, with_model=True)
    _add_common(p)
    p.set_defaults(handler=handlers._cmd_bench)


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


