"""Command line: ``fastadapt bench`` (or ``python -m fastadapt bench``) and ``fastadapt demo``."""
import sys

COMMANDS = {
    "bench": ("fastadapt.benchmark", "measure fastadapt against NumPy, torch and the roofline"),
    "demo": ("fastadapt.demo", "train a badly-conditioned problem with every optimizer"),
}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        lines = [f"  {name:<6} {help}" for name, (_, help) in COMMANDS.items()]
        print("usage: fastadapt {bench,demo} [options]   (--help after a command for its options)\n"
              + "\n".join(lines), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    import importlib
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
