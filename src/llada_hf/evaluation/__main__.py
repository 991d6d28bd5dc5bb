"""`python -m llada_hf.evaluation ARGS` (or `llada-hf-eval ARGS`): lm-eval's command line, unchanged, with the
`llada_hf` model registered."""

from lm_eval.__main__ import cli_evaluate

from . import DiffusionLMEval  # noqa: F401  (registers the model)


def main() -> None:
    cli_evaluate()


if __name__ == "__main__":
    main()
