"""lm-evaluation-harness support: importing this package registers the `llada_hf` model with lm-eval.

```python
>>> import lm_eval
>>> import llada_hf.evaluation  # registers "llada_hf"
>>> lm_eval.simple_evaluate(model="llada_hf", model_args="pretrained=GSAI-ML/LLaDA-8B-Base", tasks=["hellaswag"])
```

On the command line, `python -m llada_hf.evaluation` (or `llada-hf-eval`) is lm-eval's own CLI with the model
registered: `python -m llada_hf.evaluation run --model llada_hf --model_args pretrained=... --tasks ...`.

lm-eval's own `--model hf` (`HFLM`) scores next-token log-likelihoods, which is wrong for a masked-diffusion model: it
warns when it loads one of our models (`llada_hf.integrations.lm_eval`).
"""

try:
    import lm_eval  # noqa: F401
except ImportError as error:
    raise ImportError(
        "llada_hf.evaluation needs lm-evaluation-harness: `pip install llada_hf[eval]` (or `pip install lm-eval`)."
    ) from error

from .lm_eval_adapter import DiffusionLMEval


__all__ = ["DiffusionLMEval"]
