"""``python -m taskwatch`` / ``taskwatch``: run a program under taskwatch, report at exit.

The program runs as with ``python``: same ``sys.argv``, ``__main__``, ``sys.path[0]``, stdout and exit
status (unless ``--fail-on`` asks for a failing status when findings of those kinds occurred and
the program itself succeeded). Everything taskwatch is given is checked before anything is
installed or run: options, ``TASKWATCH_*`` variables, ``--json PATH``, the ``otel`` extra, and the
script or module itself (a missing one fails with python's own message and status).

How the program ends decides how the session ends (see taskwatch._cli._session for signals):

- it returns or calls ``sys.exit()``: report, then exit with its status;
- an exception escapes it (KeyboardInterrupt included): the exception is raised again from here,
  so the interpreter ends the process exactly as it would have (the program's ``sys.excepthook``
  prints it, without taskwatch's and runpy's frames; status 1, or death by SIGINT for
  KeyboardInterrupt after the usual cleanup); the report follows the traceback;
- it is killed by SIGTERM/SIGHUP: report, then death by that signal.

A child made with ``os.fork()`` that comes back here reports as a child (see taskwatch._cli._session)
and keeps its own exit status: ``--fail-on`` is the session's, not the child's.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from typing import Any, NoReturn

from .. import _integrations
from .._core import _options
from ..otel import _sdk as _otel_sdk
from . import _session

FAIL_EXIT = 3
_EPILOG = """\
Every option can also come from a TASKWATCH_* environment variable (e.g. TASKWATCH_BLOCK_THRESHOLD);
the command line wins. Child Python processes started by the program are watched too.
Finding kinds: """ + ", ".join(_options.KINDS)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m taskwatch",
        usage="python -m taskwatch [options] (script.py | -m module) [args ...]\n"
              "       python -m taskwatch ps PID [--json]\n"
              "       python -m taskwatch top PID",
        description="Run a Python program with every asyncio/uvloop task watched, and print what "
                    "went wrong (lost errors, swallowed cancels, blocked loop, leaked tasks...) at exit.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", metavar="PATH", help="write the JSON report to PATH at exit "
                        "(child processes write PATH.<pid>.json)")
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
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("ps", "top"):  # subcommands (a script named ps runs as ./ps)
        from . import _ps

        (_ps.main if argv[0] == "ps" else _ps.top)(argv[1:])
        return
    parser = _parser()
    args = parser.parse_args(argv)
    if args.module is None and not args.program:
        parser.error("give a script path or -m module")
    if args.module is not None and args.program and args.program[0] == "--":
        args.program = args.program[1:]
    options = {spec.name: getattr(args, spec.name) for spec in _options.SPECS
               if getattr(args, spec.name) is not None}
    fail_kinds: tuple[str, ...] = ()
    json_path = None
    # Everything is checked before anything is installed or run.
    try:
        resolved = _options.resolve(options)
        if args.fail_on is not None:
            try:
                fail_kinds = _options._kinds_required(args.fail_on)
            except _options._Invalid as exc:
                raise ValueError(f"taskwatch: --fail-on must be {exc}; got {args.fail_on!r}") from None
        if args.json is not None:
            json_path = _session.check_json_path(args.json)
        if resolved.enabled:
            _integrations.check(resolved)
    except (ValueError, ImportError) as exc:
        parser.error(str(exc))
    problem = _program_problem(args.module, args.program)
    if problem is not None:
        message, status = problem
        sys.stderr.write(message + "\n")
        sys.exit(status)

    _session.export_to_children(options, json_path)
    _otel_sdk.set_session_program(*((args.module, True) if args.module is not None else
                                    (args.program[0] if args.program else "", False)))
    _session.start(options, json_path, always_print=not args.quiet_summary)
    code, error, not_found = _run(args.module, args.program)
    if not_found is not None:  # python -m of a module that does not exist: python's message
        _session.abandon()
        sys.stderr.write(not_found + "\n")
        sys.exit(1)
    if error is not None:
        _raise_after_report(error)
    data = _session.report()
    _session.release_signals()
    if fail_kinds and data is not None and code == 0 and not _session.forked():
        seen = data["stats"].get("findings_by_kind", {})
        if any(seen.get(kind) for kind in fail_kinds):
            code = FAIL_EXIT
    sys.exit(code)


def _program_problem(module: str | None, program: list[str]) -> tuple[str, int] | None:
    """What python itself would say, and its exit status, when the program cannot be found; None
    when it can (or when finding out would run some of it: imports of parent packages)."""
    if module is not None:
        if module.startswith(".") or module.partition(".")[0] == "":
            return _with_cwd_on_path(_module_problem, module)
        return _with_cwd_on_path(_top_module_problem, module)
    script = program[0]
    import pkgutil

    try:
        importer = pkgutil.get_importer(script)
    except Exception:
        importer = None
    if importer is not None:  # a folder or zip file: runs its __main__
        try:
            spec = importer.find_spec("__main__")  # type: ignore[union-attr]
        except Exception:
            return None
        if spec is None:
            return f"{sys.executable}: can't find '__main__' module in {os.path.abspath(script)!r}", 1
        return None
    try:
        with open(script, "rb"):
            pass
    except OSError as exc:
        shown = script if os.path.isabs(script) else os.path.join(os.getcwd(), script)
        prog = (getattr(sys, "orig_argv", None) or [sys.executable])[0]
        return f"{prog}: can't open file {shown!r}: [Errno {exc.errno}] {exc.strerror}", 2
    return None


def _with_cwd_on_path(check: Any, module: str) -> Any:
    saved = list(sys.path)
    sys.path.insert(0, os.getcwd())  # as _run will
    try:
        return check(module)
    finally:
        sys.path[:] = saved


def _top_module_problem(module: str) -> tuple[str, int] | None:
    import importlib.util

    try:
        found = importlib.util.find_spec(module.partition(".")[0]) is not None  # imports nothing
    except (ImportError, ValueError):
        found = False
    return None if found else _module_problem(module)


def _module_problem(module: str) -> tuple[str, int]:
    error = getattr(runpy, "_Error", ImportError)
    try:
        runpy._get_module_details(module, error)  # type: ignore[attr-defined]
    except error as exc:
        return f"{sys.executable}: {exc}", 1
    except Exception:
        pass
    return f"{sys.executable}: No module named {module}", 1


def _run(module: str | None, program: list[str]) -> tuple[Any, BaseException | None, str | None]:
    """Run the program as ``python`` would: (exit status, exception that escaped it, or python's
    message when the module to run does not exist)."""
    if module is not None:
        sys.argv = [module, *program]
        sys.path.insert(0, os.getcwd())
        details = getattr(runpy, "_get_module_details", None)
        run_code = getattr(runpy, "_run_module_code", None)
        error = getattr(runpy, "_Error", None)
        if details is not None and run_code is not None and error is not None:
            try:
                _name, spec, code = details(module, error)
            except error as exc:
                return 0, None, f"{sys.executable}: {exc}"
            except BaseException as exc:
                return _ended(exc)
            target = lambda: run_code(code, None, "__main__", spec)  # noqa: E731
        else:  # pragma: no cover - runpy without its private helpers
            target = lambda: runpy.run_module(module, run_name="__main__", alter_sys=True)  # noqa: E731
    else:
        script = program[0]
        sys.argv = list(program)
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
        if os.path.isfile(script) and not os.path.isabs(script):
            script = os.path.join(os.getcwd(), script)  # python's __file__ (and code filenames)
        target = lambda: runpy.run_path(script, run_name="__main__")  # noqa: E731
    try:
        target()
    except BaseException as exc:
        return _ended(exc)
    return 0, None, None


def _ended(exc: BaseException) -> tuple[Any, BaseException | None, None]:
    if isinstance(exc, SystemExit):
        return _exit_status(exc.code), None, None
    return 1, exc, None


def _raise_after_report(error: BaseException) -> NoReturn:
    """Let the interpreter end the process for this exception, as it would have without taskwatch
    (the program's excepthook, status 1, SIGINT for KeyboardInterrupt, atexit and cleanup), with
    the report printed right after the traceback."""
    previous = sys.excepthook

    def excepthook(kind: Any, value: Any, tb: Any) -> None:
        sys.excepthook = previous
        try:
            if isinstance(value, BaseException):
                _clean_tracebacks(value)
                tb = value.__traceback__
            previous(kind, value, tb)
        finally:
            _session.report()
            _session.release_signals()

    sys.excepthook = excepthook
    raise error


def _clean_tracebacks(error: BaseException) -> None:
    """Tracebacks as under plain python: without the frames of taskwatch and of the runpy call
    that ran the program before the program's first frame, and without taskwatch's frames (its
    wrappers of loop methods) further in, for the exception and every one chained to it."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        exc = todo.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        try:
            exc.__traceback__ = _program_traceback(exc.__traceback__)
        except Exception:
            pass
        todo.extend((exc.__cause__, exc.__context__))  # type: ignore[list-item]
        todo.extend(getattr(exc, "exceptions", None) or ())


def _program_traceback(tb: Any) -> Any:
    while tb is not None and not _is_program_frame(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    head = tb
    while tb is not None:
        after = tb.tb_next
        while after is not None and _is_taskwatch_frame(after.tb_frame.f_code.co_filename):
            after = after.tb_next
        if after is not tb.tb_next:
            tb.tb_next = after
        tb = after
    return head


_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # the package


def _is_taskwatch_frame(filename: str) -> bool:
    return filename.startswith(_HERE)


def _is_program_frame(filename: str) -> bool:
    return not _is_taskwatch_frame(filename) and not filename.endswith(os.sep + "runpy.py") and (
        "<frozen runpy>" not in filename)


def _exit_status(code: Any) -> Any:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    try:
        sys.stderr.write(f"{code}\n")
    except Exception:
        pass
    return 1
