"""The `llada_hf` model of lm-evaluation-harness: masked-diffusion LMs scored by ELBO and sampled by diffusion.

- `loglikelihood`: the Monte-Carlo ELBO of `llada_hf.training.likelihood` (official `eval_llada.py` semantics);
  `is_greedy` is checked, when `check_greedy=True`, by decoding the continuation one token per step.
- `loglikelihood_rolling`: the ELBO of the whole text after the prefix token (a lower bound; no sliding window).
- `generate_until`: the model's diffusion `generate()`, cut at the request's stop sequences.
"""

import json
from collections import defaultdict

import lm_eval.models  # noqa: F401  (see below)
import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.utils import logging

from ..generation.utils import OFFICIAL_KEYWORDS
from ..training.likelihood import estimate_log_likelihood


logger = logging.get_logger(__name__)

# `import lm_eval.models` above: lm-eval fills its registry with the built-in models' lazy entries only while the
# registry is empty, so they are loaded before ours is registered ("hf", "vllm", ... stay available).


@register_model("llada_hf")
class DiffusionLMEval(TemplateLM):
    """
    lm-eval model for LLaDA 1.x / LLaDA2.0 checkpoints (`--model llada_hf`).

    Args (`--model_args key=value,...`):
        pretrained: checkpoint path or hub id, or an already loaded model.
        tokenizer: tokenizer path or instance (default: `pretrained`).
        dtype: weights' dtype (`"auto"`, `"bfloat16"`, `"float32"`, ...).
        device: where to run (default: CUDA if available, else CPU; a CUDA device falls back to CPU without CUDA,
            since lm-eval's CLI asks for `cuda:0` unless told otherwise).
        batch_size: prompts per `generate()` call.
        mc_num: Monte-Carlo draws per loglikelihood request (official: 128).
        mc_batch_size: rows per forward pass of the ELBO estimate; the draws of a group of this size have evenly
            spread mask counts (official `batch_size`: 32).
        cfg_scale: classifier-free guidance scale, for both likelihood and generation.
        check_greedy: compute `is_greedy` (off by default, as the official script recommends).
        max_length: longest sequence fed to the model (default: the model's maximum); contexts are cut on the left.
        max_gen_toks: default answer length of `generate_until`.
        add_bos_token: let the tokenizer add its special tokens when encoding.
        Any other key (`steps`, `block_length`, `remasking`, `threshold`, ...) is passed to `model.generate()`.
    """

    backend = "causal"

    def __init__(
        self,
        pretrained: str | PreTrainedModel,
        tokenizer=None,
        dtype: str | torch.dtype = "auto",
        device: str | None = None,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,  # passed by lm-eval's CLI; the batch size here is fixed
        mc_num: int = 128,
        mc_batch_size: int = 32,
        cfg_scale: float = 0.0,
        check_greedy: bool = False,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        add_bos_token: bool = False,
        **generation_kwargs,
    ):
        super().__init__()
        if not str(batch_size).isdigit() or int(batch_size) < 1:
            raise ValueError(f"`batch_size` must be a positive integer for llada_hf, got {batch_size!r}.")
        if device is None or (str(device).startswith("cuda") and not torch.cuda.is_available()):
            # lm-eval's CLI asks for "cuda:0" by default; without CUDA, run where the user can
            if device is not None:
                logger.warning(f"`device={device}` is not available; running on CPU.")
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if isinstance(pretrained, PreTrainedModel):
            self.model = pretrained
            if tokenizer is None:
                raise ValueError("Pass `tokenizer` when `pretrained` is a model instance.")
        else:
            self.model = AutoModelForCausalLM.from_pretrained(pretrained, dtype=dtype)
        self.model.to(device).eval()
        if tokenizer is None or isinstance(tokenizer, str):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer or pretrained)
        self.tokenizer = tokenizer
        self._device = torch.device(device)

        self.batch_size = int(batch_size)
        self.mc_num = int(mc_num)
        self.mc_batch_size = int(mc_batch_size)
        self.cfg_scale = float(cfg_scale)
        self.check_greedy = check_greedy
        self.max_gen_toks = int(max_gen_toks)
        self.add_bos_token = add_bos_token
        self.generation_kwargs = generation_kwargs
        self._max_length = max_length

    # ------------------------------------------------------------------------------------------------------------
    # Tokens
    # ------------------------------------------------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        if self.tokenizer.eos_token_id is not None:
            return self.tokenizer.eos_token_id
        eos = self.model.config.eos_token_id
        return eos[0] if isinstance(eos, list) else eos

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        if self._max_length is not None:
            return int(self._max_length)
        return getattr(self.model.config, "max_position_embeddings", None) or 4096

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        add_special_tokens = self.add_bos_token if add_special_tokens is None else add_special_tokens
        return self.tokenizer.encode(string, add_special_tokens=add_special_tokens)

    # ------------------------------------------------------------------------------------------------------------
    # Likelihood
    # ------------------------------------------------------------------------------------------------------------

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        contexts, continuations = [], []
        for _, context, continuation in requests:
            if len(continuation) > self.max_length:
                raise ValueError(
                    f"A continuation of {len(continuation)} tokens does not fit in `max_length` ({self.max_length})."
                )
            contexts.append(context[max(0, len(context) + len(continuation) - self.max_length) :])
            continuations.append(continuation)

        log_likelihoods = estimate_log_likelihood(
            self.model,
            contexts,
            continuations,
            mc_num=self.mc_num,
            batch_size=self.mc_batch_size,
            cfg_scale=self.cfg_scale,
            progress_bar=not disable_tqdm,
        ).tolist()

        results = []
        for (request, _, _), context, continuation, log_likelihood in zip(
            requests, contexts, continuations, log_likelihoods
        ):
            is_greedy = self.check_greedy and self._is_greedy(context, continuation)
            results.append((log_likelihood, is_greedy))
            self.cache_hook.add_partial("loglikelihood", request, (log_likelihood, is_greedy))
        return results

    def _is_greedy(self, context: list[int], continuation: list[int]) -> bool:
        """Whether greedy decoding of `len(continuation)` masks after `context`, one token per step, yields it."""
        length = len(continuation)
        sequences = self.model.generate(
            torch.tensor([context], device=self.device),
            max_new_tokens=length,
            steps=length,
            block_length=length,
            temperature=0.0,
            remasking="low_confidence",
            cfg_scale=self.cfg_scale,
        )
        return sequences[0, len(context) :].tolist() == continuation

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        texts = [self.tok_encode(request.args[0]) for request in requests]
        for tokens in texts:
            if len(tokens) + 1 > self.max_length:
                raise ValueError(
                    f"loglikelihood_rolling scores a whole text with one ELBO and has no sliding window: a text of "
                    f"{len(tokens)} tokens does not fit in `max_length` ({self.max_length})."
                )
        scores = estimate_log_likelihood(
            self.model,
            [[self.prefix_token_id]] * len(texts),
            texts,
            mc_num=self.mc_num,
            batch_size=self.mc_batch_size,
            cfg_scale=self.cfg_scale,
            progress_bar=not disable_tqdm,
        ).tolist()
        for request, score in zip(requests, scores):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, score)
        return scores

    # ------------------------------------------------------------------------------------------------------------
    # Generation
    # ------------------------------------------------------------------------------------------------------------

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        results: list[str | None] = [None] * len(requests)
        groups = defaultdict(list)  # requests with the same generation kwargs are batched together
        for index, request in enumerate(requests):
            groups[json.dumps(request.args[1], sort_keys=True, default=str)].append(index)

        progress = logging.tqdm(total=len(requests), disable=disable_tqdm, desc="Generating (diffusion)")
        eos_text = self.tokenizer.decode([self.eot_token_id])
        for indices in groups.values():
            gen_kwargs = normalize_gen_kwargs(requests[indices[0]].args[1], self.max_gen_toks)
            until = handle_stop_sequences(gen_kwargs.pop("until", None), eos=eos_text)
            max_new_tokens = gen_kwargs.pop("max_gen_toks")
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start : start + self.batch_size]
                contexts = [requests[index].args[0] for index in batch]
                answers = self._generate(contexts, max_new_tokens, gen_kwargs)
                for index, context, answer in zip(batch, contexts, answers):
                    results[index] = postprocess_generated_text(answer, until, think_end_token=None)
                    self.cache_hook.add_partial("generate_until", (context, requests[index].args[1]), results[index])
                progress.update(len(batch))
        progress.close()
        return results

    def _generate(self, contexts: list[str], max_new_tokens: int, gen_kwargs: dict) -> list[str]:
        """Left-pads the contexts, generates at most `max_new_tokens` answer tokens (exactly that many with the
        official sampler's keywords, e.g. `steps`) and decodes each answer up to its EOS."""
        kwargs = {**self.generation_kwargs, **gen_kwargs, "max_new_tokens": max_new_tokens}
        if self.cfg_scale:
            kwargs.setdefault("cfg_scale", self.cfg_scale)
        # The context keeps room for the first canvas; in transformers' dialect the answer grows as long as it fits.
        first_canvas = max_new_tokens
        if not OFFICIAL_KEYWORDS & kwargs.keys():
            first_canvas = min(
                max_new_tokens, kwargs.get("canvas_length") or self.model.generation_config.canvas_length
            )
        budget = self.max_length - first_canvas
        if budget < 1:
            raise ValueError(f"`max_gen_toks` ({max_new_tokens}) leaves no room for a prompt in `max_length`.")
        encoded = [self.tok_encode(context)[-budget:] for context in contexts]
        width = max(len(tokens) for tokens in encoded)
        input_ids = torch.full((len(encoded), width), self.eot_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, tokens in enumerate(encoded):
            if tokens:
                input_ids[row, width - len(tokens) :] = torch.tensor(tokens)
                attention_mask[row, width - len(tokens) :] = 1

        sequences = self.model.generate(
            input_ids.to(self.device), attention_mask=attention_mask.to(self.device), **kwargs
        )
        answers = []
        for answer in sequences[:, width:].tolist():
            if self.eot_token_id in answer:
                answer = answer[: answer.index(self.eot_token_id)]
            answers.append(self.tokenizer.decode(answer, skip_special_tokens=True))
        return answers


__all__ = ["DiffusionLMEval"]
