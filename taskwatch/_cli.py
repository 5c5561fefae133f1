"""``python -m taskwatch`` / ``taskwatch``: run a program under taskwatch, report at exit.

The program runs as with ``python``: same ``sys.argv``, ``__main__``, ``sys.path[0]``, stdout and exit
code (unless ``--fail-on`` asks for a failing code when findings of those kinds occurred).
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import traceback
from typing import Any

from . import _options, _session

FAIL_EXIT = 3
_EPILOG = """\
Every option can also come from a TASKWATCH_* environment variable (e.g. TASKWATCH_BLOCK_THRESHOLD);
the command line wins. Child Python processes started by the program are watched too.
Finding kinds: """ + ", ".join(_options.KINDS)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m taskwatch",
        usage="python -m taskwatch [options] (script.py | -m module) [args ...]",
        description="Run a Python program with every asyncio/uvloop task watched, and print what "
                    "went wrong (lost errors, swallowed cancels, blocked loop, leaked tasks...) at exit.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", metavar="PATH", help="write the JSON report to PATH at exit")
    parser.add_argument("--fail-on", metavar="KINDS", default=None,
                        help=f"exit with status {FAIL_EXIT} when findings of these kinds occurred "
                             "(comma-separated, or 'all'); for CI")
    parser.add_argument("--quiet-summary", action="store_true",
                        help="print the exit summary only when there are findings")
    for spec in _options.SPECS:
        flag = "--" + spec.name.replace("_", "-")
        if spec.parse is _options._bool:
            parser.add_argument(flag, dest=spec.name, action=argparse.BooleanOptionalAction,
                                default=None, help=spec.help)
        else:
            parser.add_argument(flag, dest=spec.name, metavar="VALUE", default=None, help=spec.help)
    parser.add_argument("-m", dest="module", metavar="MODULE", help="run a library module as a script")
    parser.add_argument("program", nargs=argparse.REMAINDER, help="script path and its arguments")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.module is None and not args.program:
        parser.error("give a script path or -m module")
    if args.module is not None and args.program and args.program[0] == "--":
        args.program = args.program[1:]
    options = {spec.name: getattr(args, spec.name) for spec in _options.SPECS
               if getattr(args, spec.name) is not None}
    fail_kinds: tuple[str, ...] = ()
    try:
        _options.resolve(options)  # validate before the program starts
        if args.fail_on is not None:
            try:
                fail_kinds = _options._kinds(args.fail_on)
            except _options._Invalid as exc:
                raise ValueError(f"taskwatch: --fail-on must be {exc}; got {args.fail_on!r}") from None
    except ValueError as exc:
        parser.error(str(exc))

    _session.export_to_children(options, args.json)
    _session.start(options)
    code = _run(args.module, args.program)
    data = _session.finish(args.json, always_print=not args.quiet_summary)
    if fail_kinds and data is not None:
        seen = data["stats"].get("findings_by_kind", {})
        if any(seen.get(kind) for kind in fail_kinds) and code == 0:
            code = FAIL_EXIT
    sys.stdout.flush()
    sys.exit(code)


def _run(module: str | None, program: list[str]) -> Any:
    """Run the program as ``python`` would; return its exit status."""
    if module is not None:
        sys.argv = [module, *program]
        sys.path.insert(0, os.getcwd())
        target = lambda: runpy.run_module(module, run_name="__main__", alter_sys=True)  # noqa: E731
    else:
        script = program[0]
        sys.argv = list(program)
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
        target = lambda: runpy.run_path(script, run_name="__main__")  # noqa: E731
    try:
        target()
    except SystemExit as exc:
        return _exit_status(exc.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        return 130
    except BaseException:
        kind, value, tb = sys.exc_info()
        # Drop taskwatch's and runpy's frames: the traceback reads as it would under plain python.
        while tb is not None and not _is_program_frame(tb.tb_frame.f_code.co_filename):
            tb = tb.tb_next
        traceback.print_exception(kind, value, tb)
        return 1
    return 0


def _is_program_frame(filename: str) -> bool:
    here = os.path.dirname(os.path.abspath(__file__))
    return not filename.startswith(here) and not filename.endswith(os.sep + "runpy.py") and (
        "<frozen runpy>" not in filename)


def _exit_status(code: Any) -> Any:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return 1
