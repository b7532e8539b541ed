"""The ``plip`` console script: the Rust command line, run in this process.

It is the same code as the ``plip`` binary (``plip::main_with_args``), with the
same flags, output and exit codes. Python's own Ctrl-C handling is switched off
first, so Ctrl-C behaves as it does for the binary: it ends a search at once,
and during ``plip index`` the engine's handler commits what is done.
"""

import signal
import sys


def main() -> None:
    # Imported here, not via the package: the command line needs no NumPy.
    from plip_retrieval import _native

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.stdout.flush()
    sys.exit(_native.run_cli(["plip", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
