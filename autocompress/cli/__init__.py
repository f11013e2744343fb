"""The ``autocompress`` command line: parse the arguments, call the library, format the output.

User errors print one line ``error: ...`` to stderr and exit with code 2; ``--debug`` adds the traceback.
:mod:`.parser` defines the arguments, :mod:`.commands` the handlers.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from ..errors import AutocompressError
from .commands import EXIT_INTERNAL, EXIT_TARGET_MISSED, EXIT_USAGE
from .parser import _study_argv, build_parser

__all__ = ["EXIT_INTERNAL", "EXIT_TARGET_MISSED", "EXIT_USAGE", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
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
