"""Command line: ``fastadapt bench``, ``fastadapt compile`` and ``fastadapt demo``
(also ``python -m fastadapt ...``)."""
import sys

COMMANDS = {
    "bench": ("fastadapt.benchmark", "measure fastadapt against NumPy, torch and the "
                                     "memory roofline on this machine"),
    "compile": ("fastadapt._warmup", "compile (or load from the disk cache) every CPU "
                                     "kernel ahead of time"),
    "demo": ("fastadapt.demo", "train a badly-conditioned problem with every optimizer"),
}


def usage():
    lines = [f"  {name:<8} {help}" for name, (_, help) in COMMANDS.items()]
    return ("usage: fastadapt {" + ",".join(COMMANDS) + "} [options]\n"
            "       fastadapt --help | --version\n\n"
            "commands:\n" + "\n".join(lines) + "\n\n"
            "`fastadapt COMMAND --help` lists a command's options.")


def main(argv=None):
    """Run a command; returns the exit status (0 success, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv and argv[0] in ("-V", "--version"):
        from . import __version__
        print(f"fastadapt {__version__}")
        return 0
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] not in COMMANDS:
        print(f"fastadapt: error: unknown command {argv[0]!r} (choose from "
              f"{', '.join(COMMANDS)})\n\n{usage()}", file=sys.stderr)
        return 2
    import importlib
    module = importlib.import_module(COMMANDS[argv[0]][0])
    try:
        return module.main(argv[1:])
    except SystemExit as exc:     # argparse's --help (0) or usage error (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


if __name__ == "__main__":
    sys.exit(main())
