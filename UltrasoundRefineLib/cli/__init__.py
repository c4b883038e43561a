"""The one command-line entry: ``ultrasound-refine COMMAND ...``.

Each command family lives in its own module with a ``register(subparsers)`` function; the Slicer
module runs long jobs through this same entry point in a child process.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from UltrasoundRefineLib import __version__
from UltrasoundRefineLib.errors import UltrasoundRefineError



def _command_modules() -> list[str]:
    """Every module in this package registers its commands; a new command family is a new file."""
    import pkgutil

    order = ["data", "masks", "workspace", "train", "experiment"]  # the method's order, for --help
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="ultrasound-refine",
        description="Find the ultrasound image region in every loop: auto masks, review, pretrain, fine-tune.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _command_modules():
        importlib.import_module(f"UltrasoundRefineLib.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except UltrasoundRefineError as e:
        return _fail(str(e), args.verbose)
    except KeyboardInterrupt:
        print("ultrasound-refine: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        # The last resort for a file problem no command foresaw (a full disk, a folder where a file was
        # expected): the file and the system's reason, which is what a user can act on.
        where = f"{e.filename}: " if e.filename else ""
        return _fail(f"{where}{e.strerror or e}", args.verbose)
    except MemoryError:
        return _fail("out of memory (the input is larger than this machine can hold)", args.verbose)
    except Exception as e:  # noqa: BLE001 - a bug: still one line, the traceback on request
        return _fail(f"unexpected {type(e).__name__}: {e} (run with -v for the traceback, and please report it)",
                     args.verbose)


def _fail(message: str, verbose: bool) -> int:
    """One line on stderr (the traceback before it with ``-v``); exit code 2."""
    if verbose:
        traceback.print_exc(file=sys.stderr)
    first = " ".join(message.split())
    print(f"ultrasound-refine: error: {first}", file=sys.stderr)
    return 2
