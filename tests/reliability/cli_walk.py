"""Walk every command of the `digitflow` click group with nonsense options and paths.

    python -m tests.reliability.cli_walk WORKDIR INBOX RESULTS.json

`cases(WORKDIR, INBOX)` introspects flows.cli.main: for every command and subcommand, an unknown
option, surplus arguments, each option without its value or with a value of the wrong kind
(words for numbers, numbers out of range, a bogus choice, a value for a flag, a path that does
not exist), each
argument a path that does not exist, required arguments left out; for every group, an unknown
command. This driver imports the CLI once, then runs each case in a forked child process, exactly
as the console script would (`sys.exit(main())`, an uncaught exception printed as a traceback),
its stdout and stderr captured at the file-descriptor level; the parent writes one result per case
(exit status, output, whether it hung) to RESULTS.json. Forking keeps ~150 cases cheap: the
console script would import the CLI afresh for each.

The environment (set by tests/reliability/test_cli_walk.py) points the MNIST source and the data
directory into WORKDIR, so a case that gets past its arguments fails fast and writes nothing
elsewhere; `serve` gets a Prefect API that does not answer (it would otherwise serve forever).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import click

from flows.cli.main import main

HANG_SECONDS = 120
AT_ONCE = 3
UNREACHABLE_API = "http://127.0.0.1:9/api"  # the discard port: nothing answers there
WRONG_KIND = {"integer": "many", "integer range": "many", "float": "lots", "float range": "lots"}


def leaves(group: click.Group, path: list[str]) -> Iterator[tuple[list[str], click.Command]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from leaves(command, [*path, name])
        else:
            yield [*path, name], command


def groups(group: click.Group, path: list[str]) -> Iterator[list[str]]:
    yield path
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from groups(command, [*path, name])


def nonsense(param: click.Parameter, nowhere: Path) -> str:
    """A value of the wrong kind for `param`, or a path (odd characters included) that is not."""
    if isinstance(param.type, click.Choice):
        return "bogus-choice"
    return WRONG_KIND.get(param.type.name, str(nowhere / "ünï cödé?*" / f"{param.name}.x"))


def cases(workdir: Path, inbox: Path) -> list[tuple[str, list[str]]]:
    """(description, argv) for every nonsense case."""
    nowhere = workdir / "nowhere"
    found = []
    for path in groups(main, []):
        found.append((f"{' '.join(path)} unknown command", [*path, "no-such-command"]))
        found.append((f"{' '.join(path)} unknown option", [*path, "--no-such-option"]))
    for path, command in leaves(main, []):
        name = " ".join(path)
        arguments = [p for p in command.params if isinstance(p, click.Argument)]
        # Required arguments get a usable value, so the nonsense under test is reached.
        base = [str(inbox) for a in arguments if a.required]
        if any(a.required for a in arguments):
            found.append((f"{name} without its arguments", path))
        found.append((f"{name} unknown option", [*path, *base, "--no-such-option"]))
        found.append((f"{name} surplus arguments", [*path, *base, "one", "two", "three"]))
        for argument in arguments:
            found.append((f"{name} {argument.name} nowhere", [*path, nonsense(argument, nowhere)]))
        for option in (p for p in command.params if isinstance(p, click.Option)):
            flag = max(option.opts, key=len)
            if option.is_flag:
                found.append((f"{name} {flag} given a value", [*path, *base, f"{flag}=maybe"]))
                continue
            found.append((f"{name} {flag} without its value", [*path, *base, flag]))
            value = nonsense(option, nowhere)
            found.append((f"{name} {flag} {value}", [*path, *base, flag, value]))
            if beyond := out_of_range(option):
                found.append((f"{name} {flag} {beyond}", [*path, *base, flag, beyond]))
    return found


def out_of_range(option: click.Option) -> str | None:
    """A number just outside a range option's bounds (None for other options)."""
    if not isinstance(option.type, click.IntRange | click.FloatRange):
        return None
    low, high = option.type.min, option.type.max
    return str(low - 1) if low is not None else str(high + 1)


def run_case(argv: list[str], workdir: Path) -> int:
    """In a forked child: what the console script does, outputs already redirected."""
    os.chdir(workdir)  # a stray relative write lands here, not in the checkout
    if argv[:1] == ["serve"]:
        os.environ["PREFECT_API_URL"] = UNREACHABLE_API
    try:
        main.main(args=argv, prog_name="digitflow")
        return 0
    except SystemExit as exit:
        if isinstance(exit.code, str):
            print(exit.code, file=sys.stderr)
            return 1
        return exit.code or 0
    except BaseException:
        traceback.print_exc()
        return 1


def start(argv: list[str], workdir: Path) -> tuple[int, Path]:
    output = Path(tempfile.mkdtemp(dir=workdir, prefix="case-"))
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            for fd, name in ((1, "stdout"), (2, "stderr")):
                os.dup2(os.open(output / name, os.O_WRONLY | os.O_CREAT, 0o644), fd)
            code = run_case(argv, workdir)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code if isinstance(code, int) else 1)
    return pid, output


def walk(workdir: Path, inbox: Path) -> list[dict]:
    pending = list(cases(workdir, inbox))
    running: dict[int, tuple[str, list[str], Path, float]] = {}
    results = []
    while pending or running:
        while pending and len(running) < AT_ONCE:
            name, argv = pending.pop(0)
            pid, output = start(argv, workdir)
            running[pid] = (name, argv, output, time.monotonic())
        time.sleep(0.01)
        for pid, (name, argv, output, started) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            hung = not done and time.monotonic() - started > HANG_SECONDS
            if hung:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
            if done or hung:
                del running[pid]
                results.append(
                    {
                        "case": name,
                        "argv": argv,
                        "code": os.waitstatus_to_exitcode(status),
                        "hung": hung,
                        "seconds": round(time.monotonic() - started, 1),
                        "stdout": (output / "stdout").read_text(errors="replace"),
                        "stderr": (output / "stderr").read_text(errors="replace"),
                    }
                )
    return results


if __name__ == "__main__":
    work, inbox_folder, results_file = (Path(a) for a in sys.argv[1:4])
    results_file.write_text(json.dumps(walk(work, inbox_folder), indent=1))
