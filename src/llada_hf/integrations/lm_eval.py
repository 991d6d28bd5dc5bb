"""A loud warning when lm-eval's `hf` model (`HFLM`) evaluates one of our models.

`lm_eval --model hf` (and `hf-auto`, `huggingface`, or `HFLM` itself, in-process) treats every model as
autoregressive: it reads log-likelihoods off next-token logits. Our logits at position `i` predict token `i` itself
(masked diffusion), so its `loglikelihood` and multiple-choice scores are meaningless, yet it runs without an error.
The right evaluator is our `llada_hf` lm-eval model (`llada-hf-eval --model llada_hf ...`, see
`llada_hf.evaluation`), which scores by Monte-Carlo ELBO and generates by diffusion.

How it is detected: `HFLM.__init__` calls `model.tie_weights()` itself once it holds the model, whether it loaded it
from a path or was given an instance (also through a PEFT wrapper, which forwards the call). Our models'
`tie_weights` calls [`warn_if_evaluated_by_lm_eval_hf`], which warns (`UserWarning`) when its caller is
`HFLM.__init__`, so once per `HFLM`, unless the evaluator is a class of `llada_hf` (our adapter is not an `HFLM`
today; this keeps it silent should it become one). The calls `from_pretrained` makes do not count. Nothing is checked
unless lm-eval's `lm_eval.models.huggingface` is already imported: this never imports lm-eval.
"""

import sys
import warnings


HFLM_MODULE = "lm_eval.models.huggingface"


def warn_if_evaluated_by_lm_eval_hf(model) -> None:
    """Warns if our `tie_weights` was called by lm-eval's `HFLM.__init__` (not by `llada_hf`'s own lm-eval model)."""
    huggingface = sys.modules.get(HFLM_MODULE)
    if huggingface is None:
        return
    caller = sys._getframe(2)  # 0: this function, 1: `tie_weights`, 2: whoever called it
    if caller.f_code is not huggingface.HFLM.__init__.__code__:
        return
    if type(caller.f_locals.get("self")).__module__.startswith("llada_hf."):
        return
    name = type(model).__name__
    warnings.warn(
        f"lm-eval's `hf` model (HFLM) is evaluating {name} as an autoregressive LM, but {name} is a masked-diffusion "
        "model (its logits at position i predict token i itself): HFLM's log-likelihoods and multiple-choice scores "
        "are meaningless for it. Evaluate it with `llada-hf-eval --model llada_hf --model_args pretrained=...` (or "
        '`lm_eval.simple_evaluate(model="llada_hf", ...)` after `import llada_hf.evaluation`), which scores by '
        "Monte-Carlo ELBO and generates by diffusion.",
        UserWarning,
        stacklevel=3,
    )


__all__ = ["warn_if_evaluated_by_lm_eval_hf"]
