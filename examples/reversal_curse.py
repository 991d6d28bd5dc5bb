"""The reversal curse at toy scale: a masked-diffusion model learns facts in both directions, a causal one does not.

The LLaDA paper (section 4, reversal poem completion) reports that LLaDA answers "reversed" questions about what it
was trained on about as well as forward ones, where autoregressive models fail (Berglund et al., 2023, "The reversal
curse"). This script reproduces that with two models of the same size trained on the same sentences:

- facts about `--pairs` parent/child pairs of made-up people, stated in one direction: "Ada3 is the parent of Ben7 .";
- for half of the pairs (the *demonstration* pairs) the training data also states the reverse fact
  ("Ben7 is the child of Ada3 ."), which shows a left-to-right model how to ask the reversed question;
- for the other half (the *test* pairs) only the forward sentence is ever seen.

The diffusion model is a `LLaDAModelLM` trained with this package's pretraining collator (every token of a sentence
may be masked, with a masking ratio drawn from [0.1, 0.5]); the causal model is a `LlamaForCausalLM` with the same
width, depth, heads and MLP (the same network with a causal attention mask) trained on next-token prediction. Both
use the stock `Trainer` for the same number of epochs. On the test pairs, both complete the forward question "Ada3 is
the parent of". The reversed question (who is Ben7's parent?) is asked in each model's own way: the diffusion model
fills "<mask> is the parent of Ben7 ."; a causal model can only continue a prompt that starts with Ben7, i.e.
"Ben7 is the child of", the phrasing the demonstration pairs taught (the diffusion model is asked that way too). A
causal model could still *score* the candidates "X is the parent of Ben7" (Bayes' rule); the curse is about
answering, which is what is measured.

    python examples/reversal_curse.py                  # ~8 min on 2 shared CPU cores
    LLADA_HF_SMOKE=1 python examples/reversal_curse.py # 20 pairs, 100 epochs (~30 s), to check the script runs

Full run (default arguments: 100 pairs, 1500 epochs, hidden size 128, 2 layers, 578k parameters per model; accuracy
on the 50 test pairs):

    model                 forward  reversed   reversed question
    diffusion (LLaDA)       98.0%     94.0%   <mask> is the parent of B
    diffusion (LLaDA)       98.0%     18.0%   B is the child of ...
    causal (Llama)         100.0%      0.0%   B is the child of ...

Forward accuracy is comparable; asked in reverse the diffusion model is right 94 points more often than the causal
one. Asked through the taught rephrasing it is also ahead (18% vs 0%), but that requires transferring a phrasing rule
learned on other pairs, which this toy model does only partly (and unreliably: 1% with 200 pairs and 1000 epochs).
"""

import argparse
import os
import random
import tempfile
from dataclasses import dataclass

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from llada_hf import LLaDAConfig, LLaDAModelLM
from llada_hf.training import DataCollatorForDiffusionPretraining


SMOKE = os.environ.get("LLADA_HF_SMOKE") == "1"
SPECIAL = ["<pad>", "<eos>", "<mask>"]
RELATION_WORDS = ["is", "the", "parent", "child", "of", "."]


class WordVocabulary:
    """Whitespace-separated words to ids and back (all sentences here are made of known words)."""

    def __init__(self, words: list[str]):
        self.words = SPECIAL + RELATION_WORDS + words
        self.ids = {word: index for index, word in enumerate(self.words)}
        self.pad_token_id, self.eos_token_id, self.mask_token_id = range(3)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> list[int]:
        return [self.ids[word] for word in text.split()]


def forward_fact(parent: str, child: str) -> str:
    return f"{parent} is the parent of {child} ."


def reverse_fact(parent: str, child: str) -> str:
    return f"{child} is the child of {parent} ."


def make_data(num_pairs: int, seed: int):
    """People, the training sentences, and the test pairs (whose reverse is never stated)."""
    rng = random.Random(seed)
    people = [f"{name}{index}" for name in ("Ada", "Ben", "Cleo", "Dan") for index in range(num_pairs // 2)]
    rng.shuffle(people)
    pairs = [(people[2 * i], people[2 * i + 1]) for i in range(num_pairs)]
    demonstration, test = pairs[: num_pairs // 2], pairs[num_pairs // 2 :]
    sentences = [forward_fact(*pair) for pair in pairs] + [reverse_fact(*pair) for pair in demonstration]
    return people, sentences, test


def model_configs(vocab: WordVocabulary, args) -> tuple[LLaDAConfig, LlamaConfig]:
    """The same network twice: LLaDA (bidirectional) and Llama (causal)."""
    shape = {"hidden": args.hidden_size, "layers": args.layers, "heads": 4, "mlp": 4 * args.hidden_size}
    llada = LLaDAConfig(
        d_model=shape["hidden"], n_layers=shape["layers"], n_heads=shape["heads"], n_kv_heads=shape["heads"],
        mlp_hidden_size=shape["mlp"], vocab_size=len(vocab), embedding_size=len(vocab), max_sequence_length=16,
        rope_theta=10000.0, weight_tying=False, mask_token_id=vocab.mask_token_id, eos_token_id=vocab.eos_token_id,
        pad_token_id=vocab.pad_token_id,
    )  # fmt: skip
    llama = LlamaConfig(
        hidden_size=shape["hidden"], num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
        num_key_value_heads=shape["heads"], intermediate_size=shape["mlp"], vocab_size=len(vocab),
        max_position_embeddings=16, rope_theta=10000.0, rms_norm_eps=llada.rms_norm_eps, tie_word_embeddings=False,
        pad_token_id=vocab.pad_token_id, eos_token_id=vocab.eos_token_id, bos_token_id=None,
    )  # fmt: skip
    return llada, llama


@dataclass(kw_only=True)
class BandedMaskingCollator(DataCollatorForDiffusionPretraining):
    """Pretraining noise with the masking ratio drawn from a band (as LLaDA2.0's recipe does) instead of `U(0, 1)`.

    On short fact sentences, `U(0, 1)` spends many examples with (nearly) everything masked, where the only thing to
    learn is which words are frequent; the band keeps part of each sentence visible, and the facts are learned in a
    few thousand steps instead of tens of thousands.
    """

    mask_ratio_range: tuple[float, float] = (0.1, 0.5)

    def draw_p_mask(self, length: int, generator: torch.Generator | None) -> torch.Tensor:
        low, high = self.mask_ratio_range
        return torch.full((length,), low + (high - low) * float(torch.rand((), generator=generator)))


def causal_lm_collator(features: list[dict]) -> dict[str, torch.Tensor]:
    """Next-token prediction on equally long sentences (the model shifts the labels)."""
    input_ids = torch.tensor([feature["input_ids"] for feature in features])
    return {"input_ids": input_ids, "labels": input_ids}


def train(model, collator, sentences: list[str], vocab: WordVocabulary, args) -> None:
    features = [{"input_ids": vocab.encode(sentence)} for sentence in sentences] * args.epochs
    training_args = TrainingArguments(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch_size, num_train_epochs=1,
        learning_rate=args.learning_rate, lr_scheduler_type="cosine", warmup_steps=0.05, weight_decay=0.0,
        save_strategy="no", report_to=[], use_cpu=True, logging_strategy="no", seed=args.seed,
    )  # fmt: skip
    Trainer(model=model, args=training_args, train_dataset=features, data_collator=collator).train()


@torch.no_grad()
def completion_accuracy(model, vocab: WordVocabulary, questions: list[tuple[str, str]], diffusion: bool) -> float:
    """Greedy completion of each question by one word; exact match with the expected word."""
    model.eval()
    input_ids = torch.tensor([vocab.encode(question) for question, _ in questions])
    if diffusion:  # the answer and the final "." are denoised, one token per step
        sequences = model.generate(input_ids, max_new_tokens=2, steps=2, block_length=2)
    else:
        sequences = model.generate(
            input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=1, do_sample=False
        )
    return _exact_match(sequences[:, input_ids.shape[1]], questions, vocab)


@torch.no_grad()
def infilling_accuracy(model, vocab: WordVocabulary, questions: list[tuple[str, str]]) -> float:
    """Fills the one mask token of each question (e.g. "<mask> is the parent of Ben7 ."): one denoising step."""
    model.eval()
    input_ids = torch.tensor([vocab.encode(question) for question, _ in questions])
    predictions = model(input_ids).logits.argmax(-1)[input_ids == vocab.mask_token_id]
    return _exact_match(predictions, questions, vocab)


def _exact_match(predicted_ids: torch.Tensor, questions: list[tuple[str, str]], vocab: WordVocabulary) -> float:
    expected = torch.tensor([vocab.ids[answer] for _, answer in questions])
    return (predicted_ids == expected).float().mean().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=100, help="parent/child pairs; half are test pairs")
    parser.add_argument("--epochs", type=int, default=1500)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if SMOKE:
        args.pairs, args.epochs = 20, 100

    people, sentences, test_pairs = make_data(args.pairs, args.seed)
    vocab = WordVocabulary(people)
    llada_config, llama_config = model_configs(vocab, args)

    torch.manual_seed(args.seed)
    diffusion = LLaDAModelLM(llada_config)
    train(diffusion, BandedMaskingCollator(mask_token_id=vocab.mask_token_id), sentences, vocab, args)
    torch.manual_seed(args.seed)
    causal = LlamaForCausalLM(llama_config)
    train(causal, causal_lm_collator, sentences, vocab, args)

    # Forward: "Ada3 is the parent of" -> Ben7, by both models. Reversed (who is Ben7's parent?): the diffusion model
    # fills "<mask> is the parent of Ben7 ."; a left-to-right model can only continue "Ben7 is the child of", the
    # phrasing the demonstration pairs taught it (the diffusion model is asked that way too, in the middle row).
    mask = SPECIAL[vocab.mask_token_id]
    forward = [(f"{parent} is the parent of", child) for parent, child in test_pairs]
    infilling = [(f"{mask} is the parent of {child} .", parent) for parent, child in test_pairs]
    rephrased = [(f"{child} is the child of", parent) for parent, child in test_pairs]
    rows = [
        ("diffusion (LLaDA)", completion_accuracy(diffusion, vocab, forward, True),
         infilling_accuracy(diffusion, vocab, infilling), f"{mask} is the parent of B"),
        ("diffusion (LLaDA)", completion_accuracy(diffusion, vocab, forward, True),
         completion_accuracy(diffusion, vocab, rephrased, True), "B is the child of ..."),
        ("causal (Llama)", completion_accuracy(causal, vocab, forward, False),
         completion_accuracy(causal, vocab, rephrased, False), "B is the child of ..."),
    ]  # fmt: skip
    print(f"{len(test_pairs)} test pairs; {diffusion.num_parameters():,} parameters per model")
    print(f"{'model':<20}{'forward':>9}{'reversed':>10}   reversed question")
    for name, forward_accuracy, reversed_accuracy, question in rows:
        print(f"{name:<20}{forward_accuracy:>9.1%}{reversed_accuracy:>10.1%}   {question}")


if __name__ == "__main__":
    main()
