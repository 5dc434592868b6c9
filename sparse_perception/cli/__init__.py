# Copyright 2026 The sparse_perception authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""
The ``sparse-perception`` command line: one sub-command per job.

Each sub-command lives in the module of this package named after it (``replay``,
``make_bag``, ``models``, ``bench``, ``eval``, ``gate``), which provides
``register(subparsers)`` (adding a parser whose ``func`` default runs it) and imports its heavy
dependencies lazily, so that ``sparse-perception --help`` stays fast. The work itself is done
by the core packages (``replay``, ``evaluation``, ``models``, ``benchmarks``,
``gates.training``); these modules only parse and report.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from sparse_perception import __version__

# name -> module providing register(subparsers); order is the order shown in --help.
COMMANDS = (
    'sparse_perception.cli.replay',
    'sparse_perception.cli.make_bag',
    'sparse_perception.cli.models',
    'sparse_perception.cli.bench',
    'sparse_perception.cli.eval',
    'sparse_perception.cli.gate',
)


def path_argument(text: str):
    """
    Take a path argument as a shell user means it: ``~`` expanded, never empty.

    (An argparse ``type``.) Taken as it is, ``--out=~/x`` would name a folder '~' in the
    current one (the shell expands ``~`` only at the start of a word), and an empty value, an
    unset shell variable, the current folder.
    """
    from pathlib import Path

    if not text:
        raise argparse.ArgumentTypeError('is empty (an unset shell variable?); give a path')
    return Path(text).expanduser()


def frame_range_argument(text: str):
    """Take ``START:STOP[:STEP]`` as a FrameRange (an argparse ``type``: errors name the flag)."""
    from sparse_perception.replay.errors import ReplayError
    from sparse_perception.replay.sources import FrameRange

    try:
        return FrameRange.parse(text)
    except ReplayError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def rate_argument(text: str) -> float:
    """Take a frame rate in Hz (an argparse ``type``), in the range stamps can be made from."""
    from sparse_perception.replay.sources import MAX_RATE_HZ, MIN_RATE_HZ

    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number of Hz, got {text!r}') from None
    if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:  # also NaN
        raise argparse.ArgumentTypeError(
            f'{text} Hz is out of range; expected {MIN_RATE_HZ:g} to {MAX_RATE_HZ:g} Hz')
    return rate


# The arguments main() is running (for running_command), as given to it.
_RUNNING: list[list[str]] = []


def running_command() -> str:
    """Return the command line that is running, for the record in what it writes."""
    import shlex

    arguments = _RUNNING[-1] if _RUNNING else sys.argv[1:]
    return shlex.join(['sparse-perception', *map(str, arguments)])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='sparse-perception',
        description='Incremental sparse CNN perception: replay, models, benchmarks, evaluation.')
    parser.add_argument('--version', action='version', version=__version__)
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND')
    for module_name in COMMANDS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def _terminate(signum, frame) -> None:
    # SIGTERM (a service stop, `timeout`, a CI runner) and SIGHUP (a closed terminal or ssh
    # session) go the way of Ctrl-C: every command then removes its staging folders and
    # partial files on the way out.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    try:  # (building the parser imports a little: a Ctrl-C may come meanwhile)
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print('\nsparse-perception: interrupted', file=sys.stderr)
        return 130
    if getattr(args, 'func', None) is None:
        parser.print_help()
        return 2
    import signal
    import threading

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in ('SIGTERM', 'SIGHUP'):
            signum = getattr(signal, name, None)
            # (SIGHUP is left alone where the command was started to ignore it, as by nohup.)
            if signum is not None and not (name == 'SIGHUP'
                                           and signal.getsignal(signum) is signal.SIG_IGN):
                previous[signum] = signal.signal(signum, _terminate)
    _RUNNING.append(list(sys.argv[1:] if argv is None else argv))
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # here, where a reader that went away is caught below
        return status
    except BrokenPipeError:
        # Whoever read the output stopped early (`| head`): not the command's failure. The
        # flush at exit would fail again, with a traceback, so stdout goes nowhere from now.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a program stopped by a closed pipe
    except KeyboardInterrupt:
        print(f'\nsparse-perception {args.command}: interrupted', file=sys.stderr)
        return 130
    finally:
        _RUNNING.pop()
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


if __name__ == '__main__':
    sys.exit(main())
