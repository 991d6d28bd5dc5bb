"""The `llada_hf` lm-eval model, offline on a local task, through lm-eval's CLI and through `simple_evaluate`; lm-eval's
own `hf` model warns that it scores our models wrongly."""

import json
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from reversal_task import build_tokenizer, random_digits, reversal_example, tiny_llada, trained_reversal_model


lm_eval = pytest.importorskip("lm_eval")

NUM_DOCS = 12
# No official keyword (`steps`, `gen_length`): generate_until is in transformers' dialect, where `max_gen_toks` (64, more
# than the model's 5-token canvas) is an upper bound and each answer ends at its EOS.
MODEL_ARGS = "mc_num=8,mc_batch_size=32,canvas_length=5,block_length=5"
TASK_YAML = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
doc_to_text: "{{{{prompt}}}}"
"""
MULTIPLE_CHOICE = """\
output_type: multiple_choice
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
"""
GENERATION = """\
output_type: generate_until
doc_to_target: "{{answer}}"
generation_kwargs:
  until: ["<eos>"]
  max_gen_toks: 64
metric_list:
  - metric: exact_match
"""


@pytest.fixture(scope="module")
def local_eval(tmp_path_factory):
    """A saved trained reversal model and two local tasks over held-out prompts: choose among 4 answers, generate."""
    root = tmp_path_factory.mktemp("lm_eval")
    model, tokenizer = trained_reversal_model()
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")

    rng = random.Random(99)
    docs = []
    for _ in range(NUM_DOCS):
        prompt, answer = reversal_example(rng)
        choices = [random_digits(rng) for _ in range(3)]
        label = rng.randrange(4)
        choices.insert(label, answer)
        docs.append({"prompt": prompt, "answer": answer, "choices": choices, "label": label})
    data = root / "reversal.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in docs))

    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "reversal_mc.yaml").write_text(TASK_YAML.format(name="reversal_mc", data=data) + MULTIPLE_CHOICE)
    (tasks / "reversal_gen.yaml").write_text(TASK_YAML.format(name="reversal_gen", data=data) + GENERATION)
    return root


@pytest.mark.slow  # about 15 s: a fresh interpreter imports torch, transformers and lm-eval
def test_cli_registers_the_model_and_runs_lm_eval(local_eval):
    output = local_eval / "results"
    command = [
        sys.executable, "-m", "llada_hf.evaluation", "--model", "llada_hf",
        "--model_args", f"pretrained={local_eval / 'model'},{MODEL_ARGS}", "--tasks", "reversal_mc,reversal_gen",
        "--include_path", str(local_eval / "tasks"), "--batch_size", "6", "--output_path", str(output), "--seed", "0",
    ]  # fmt: skip
    environment = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]

    results = json.loads(next(Path(output).rglob("results_*.json")).read_text())["results"]
    assert results["reversal_mc"]["acc,none"] >= 0.9
    assert results["reversal_gen"]["exact_match,none"] >= 0.9


def test_simple_evaluate_after_import(local_eval):
    import llada_hf.evaluation  # noqa: F401  (registers "llada_hf")
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(
        model="llada_hf",
        model_args=f"pretrained={local_eval / 'model'},{MODEL_ARGS}",
        tasks=["reversal_mc", "reversal_gen"],
        task_manager=TaskManager(include_path=str(local_eval / "tasks")),
        batch_size=6,
        log_samples=True,
        random_seed=0,
    )
    assert results["results"]["reversal_mc"]["acc,none"] >= 0.9
    generations = [sample["filtered_resps"][0] for sample in results["samples"]["reversal_gen"]]
    targets = [sample["target"] for sample in results["samples"]["reversal_gen"]]
    assert sum(g == t for g, t in zip(generations, targets)) >= 0.9 * NUM_DOCS, list(zip(generations, targets))


def test_rolling_loglikelihood_and_greedy_check_in_process():
    from lm_eval.api.instance import Instance

    from llada_hf.evaluation import DiffusionLMEval

    model, tokenizer = trained_reversal_model()
    lm = DiffusionLMEval(pretrained=model, tokenizer=tokenizer, device="cpu", mc_num=16, check_greedy=True)
    prompt, answer = reversal_example(random.Random(5))
    wrong = " ".join(reversed(answer.split()))  # the prompt's digits copied, not reversed

    def request(kind, *args):
        return Instance(request_type=kind, doc={}, arguments=args, idx=0)

    texts = [f"{prompt} {answer} <eos>", f"{prompt} {wrong} <eos>"]
    correct_text, wrong_text = lm.loglikelihood_rolling(
        [request("loglikelihood_rolling", text) for text in texts], disable_tqdm=True
    )
    assert correct_text > wrong_text + 5.0
    (correct_score, correct_greedy), (wrong_score, wrong_greedy) = lm.loglikelihood(
        [request("loglikelihood", prompt, f" {answer}"), request("loglikelihood", prompt, f" {wrong}")],
        disable_tqdm=True,
    )
    assert correct_greedy and not wrong_greedy and correct_score > wrong_score


HF_WARNING = "llada-hf-eval --model llada_hf"


@pytest.fixture(scope="module")
def untrained_folder(tmp_path_factory):
    """A saved tiny random LLaDA and its tokenizer: enough to load, nothing is scored."""
    folder = tmp_path_factory.mktemp("untrained")
    tokenizer = build_tokenizer()
    tiny_llada(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("pretrained", ["folder", "instance", "peft"])
def test_lm_eval_hf_model_warns_once_that_it_scores_a_diffusion_model_wrongly(untrained_folder, pretrained):
    from lm_eval.models.huggingface import HFLM

    if pretrained == "folder":
        kwargs = {"pretrained": str(untrained_folder), "dtype": "float32"}
    else:
        tokenizer = build_tokenizer()
        model = tiny_llada(tokenizer)
        if pretrained == "peft":
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(target_modules=["q_proj", "v_proj"]))
        kwargs = {"pretrained": model, "tokenizer": tokenizer}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        HFLM(device="cpu", **kwargs)
    messages = [str(warning.message) for warning in caught if HF_WARNING in str(warning.message)]
    assert len(messages) == 1, messages
    assert "masked-diffusion" in messages[0] and "LLaDAModelLM" in messages[0]


def test_llada_hf_lm_eval_model_does_not_warn(untrained_folder):
    from lm_eval.models.huggingface import HFLM  # noqa: F401  (the check only runs once lm-eval's `hf` is imported)

    from llada_hf.evaluation import DiffusionLMEval

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DiffusionLMEval(pretrained=str(untrained_folder), device="cpu", dtype="float32")
    assert not [warning for warning in caught if HF_WARNING in str(warning.message)]


def test_generate_until_with_max_gen_toks_above_the_canvas():
    """lm-eval asks for up to `max_gen_toks` tokens (here far more than the model's 64 positions): the answer grows a
    canvas at a time and ends at its EOS."""
    from lm_eval.api.instance import Instance

    from llada_hf.evaluation import DiffusionLMEval

    model, tokenizer = trained_reversal_model()
    lm = DiffusionLMEval(pretrained=model, tokenizer=tokenizer, device="cpu", canvas_length=5, block_length=5)
    rng = random.Random(11)
    examples = [reversal_example(rng) for _ in range(8)]
    requests = [
        Instance(request_type="generate_until", doc={}, arguments=(prompt, {"until": [], "max_gen_toks": 1024}), idx=0)
        for prompt, _ in examples
    ]
    answers = lm.generate_until(requests, disable_tqdm=True)
    assert sum(answer.strip() == expected for answer, (_, expected) in zip(answers, examples)) >= 7, answers
