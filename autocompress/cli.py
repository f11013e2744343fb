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
                        help="a built-in task name (digits), a path to a .py file that defines task(), "
                             "or package.module:function (default: digits)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where training and float measurement run: auto picks CUDA when present "
                             "(quantized models are always measured on CPU; default: auto)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for latency measurement (default: min(4, cores))")


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
