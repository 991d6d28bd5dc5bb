"""Console entry point of `llada-hf`.

It lives outside the `llada_hf` package because importing the package imports torch and transformers, which takes
seconds: a Ctrl-C during that import must end the command like one during generation (one line, exit code 130), not
with a traceback.
"""

import sys


def main() -> int:
    try:
        from llada_hf.cli import main as run
    except KeyboardInterrupt:
        print("llada-hf: interrupted.", file=sys.stderr)
        return 130
    return run()


if __name__ == "__main__":
    sys.exit(main())
