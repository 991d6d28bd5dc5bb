"""Standard generation flags on a diffusion canvas: transformers' own logits processors and stopping criteria.

Autoregressive processors see `[batch, vocab]` scores for the next token. A denoising step scores every candidate
column of the canvas at once, so [`CanvasLogitsProcessor`] runs them on each column, with the row's canvas (prompt,
committed tokens and masks) as the context. Flags that depend on the order in which tokens are produced
(`no_repeat_ngram_size`, multi-token `bad_words_ids`, `min_new_tokens`, ...) have no meaning there and are refused by
[`DiffusionGenerationConfig.validate`].

Stop strings and stopping criteria are checked on the answer once it is denoised: the answer is cut after the token
that completes the first stop string (found on the decoded text), or after the first token at which a criterion
holds, as an autoregressive model would have stopped there.
"""

import torch
from transformers import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    InfNanRemoveLogitsProcessor,
    LogitNormalization,
    LogitsProcessorList,
    MinPLogitsWarper,
    NoBadWordsLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SequenceBiasLogitsProcessor,
    StoppingCriteriaList,
    SuppressTokensLogitsProcessor,
    TypicalLogitsWarper,
)


class CanvasLogitsProcessor:
    """Applies `[batch, vocab]` logits processors to the `[batch, columns, vocab]` logits of a denoising step: each
    column is scored as a next token whose context is its row's canvas."""

    def __init__(self, processors: LogitsProcessorList):
        self.processors = processors

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        rows, columns, vocab_size = scores.shape
        context = input_ids.repeat_interleave(columns, dim=0)
        return self.processors(context, scores.reshape(rows * columns, vocab_size)).reshape(rows, columns, vocab_size)


def canvas_logits_processor(config, sampling: bool, device: torch.device) -> CanvasLogitsProcessor | None:
    """The processors the standard fields of `config` ask for (`None` if none): penalties and token filters always,
    the sampling filters (`min_p`, `typical_p`, `epsilon_cutoff`, `eta_cutoff`) when sampling. `temperature`, `top_k`
    and `top_p` are applied by the transfer policy, as the official samplers do."""
    processors = LogitsProcessorList()
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(penalty=config.repetition_penalty))
    if config.sequence_bias:
        processors.append(SequenceBiasLogitsProcessor(sequence_bias=config.sequence_bias))
    if config.bad_words_ids:
        processors.append(NoBadWordsLogitsProcessor(config.bad_words_ids, eos_token_id=config.eos_token_id))
    if config.suppress_tokens:
        processors.append(SuppressTokensLogitsProcessor(config.suppress_tokens, device=device))
    if sampling:
        if config.min_p is not None:
            processors.append(MinPLogitsWarper(min_p=config.min_p))
        if config.typical_p is not None and config.typical_p < 1.0:
            processors.append(TypicalLogitsWarper(mass=config.typical_p))
        if config.epsilon_cutoff:
            processors.append(EpsilonLogitsWarper(epsilon=config.epsilon_cutoff))
        if config.eta_cutoff:
            processors.append(EtaLogitsWarper(epsilon=config.eta_cutoff, device=device))
    if config.remove_invalid_values:
        processors.append(InfNanRemoveLogitsProcessor())
    if config.renormalize_logits:
        processors.append(LogitNormalization())
    return CanvasLogitsProcessor(processors) if processors else None


def combine_logits_processors(*processors) -> LogitsProcessorList | None:
    """One list of the given processors (each `None`, a processor or a list of them), or `None` if empty."""
    combined = LogitsProcessorList()
    for processor in processors:
        if processor is None:
            continue
        combined.extend(processor if isinstance(processor, list) else [processor])
    return combined or None


class StopStrings:
    """Finds where an answer first contains one of `stop_strings`, on the decoded text (so it works with any
    tokenizer, and a stop string may span several tokens)."""

    def __init__(self, tokenizer, stop_strings: str | list[str]):
        self.tokenizer = tokenizer
        self.stop_strings = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings)

    def _contains_stop(self, token_ids: torch.LongTensor) -> bool:
        text = self.tokenizer.decode(token_ids, skip_special_tokens=False)
        return any(stop in text for stop in self.stop_strings)

    def first_stop(self, answer: torch.LongTensor) -> int:
        """The shortest prefix length of the 1-D `answer` whose text contains a stop string, or -1."""
        if not self._contains_stop(answer):
            return -1
        low, high = 1, answer.numel()  # containment only grows with the prefix: binary search
        while low < high:
            middle = (low + high) // 2
            if self._contains_stop(answer[:middle]):
                high = middle
            else:
                low = middle + 1
        return low


def stop_strings_for(config, tokenizer) -> StopStrings | None:
    """`config.stop_strings` with the `tokenizer` they need, or `None`."""
    if not config.stop_strings:
        return None
    if tokenizer is None:
        raise ValueError(
            "`stop_strings` needs the tokenizer: pass `tokenizer=` to `generate()` (pipelines and `transformers serve` "
            "do)."
        )
    return StopStrings(tokenizer, config.stop_strings)


def first_stop(
    sequences: torch.LongTensor,
    prompt_length: int,
    start: int,
    end: int,
    eos_token_ids: list[int],
    stop_strings: StopStrings | None = None,
    criteria: StoppingCriteriaList | None = None,
) -> torch.LongTensor:
    """For every row, the answer length at which generation stops, looking at answer tokens `[start, end)`: just
    after the first EOS, after the token that completes a stop string, or after the first token at which a stopping
    criterion holds, whichever comes first. -1 where none happens."""
    answer = sequences[:, prompt_length + start : prompt_length + end]
    stop = torch.full((sequences.shape[0],), -1, dtype=torch.long, device=sequences.device)
    if eos_token_ids:
        is_eos = torch.isin(answer, torch.tensor(eos_token_ids, device=answer.device))
        stop = torch.where(is_eos.any(1), start + is_eos.long().argmax(1) + 1, stop)
    if stop_strings is not None:
        for row in range(sequences.shape[0]):
            # The text may complete a stop string begun in an earlier canvas: search the whole answer so far.
            length = stop_strings.first_stop(sequences[row, prompt_length : prompt_length + end])
            if length > start and (stop[row] < 0 or length < stop[row]):
                stop[row] = length
    if criteria:
        for length in range(start + 1, end + 1):
            undecided = (stop < 0) | (stop > length)  # a criterion may hold before the EOS
            if not bool(undecided.any()):
                break
            hit = criteria(sequences[:, : prompt_length + length], None)
            stop = torch.where(undecided & hit.to(stop.device), length, stop)
    return stop


__all__ = [
    "CanvasLogitsProcessor",
    "canvas_logits_processor",
    "combine_logits_processors",
    "StopStrings",
    "first_stop",
    "stop_strings_for",
]
