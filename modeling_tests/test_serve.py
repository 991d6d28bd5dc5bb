"""`transformers serve --trust-remote-code` and `transformers chat` on a folder we saved, in processes that never
import llada_hf themselves (the folder's remote-code files do)."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

import llada_hf


pytestmark = pytest.mark.slow

QUESTION = "Sort: 9 4 7 1 3"
ANSWER = "1 3 4 7 9"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def saved_bundled_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("served")
    AutoModelForCausalLM.from_pretrained(llada_hf.BUNDLED_MODEL_PATH).save_pretrained(folder)
    AutoTokenizer.from_pretrained(llada_hf.BUNDLED_MODEL_PATH).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def expected_completion_tokens(saved_bundled_model) -> int:
    """What the model's own generate() returns for the question: the answer through its first EOS."""
    tokenizer = AutoTokenizer.from_pretrained(saved_bundled_model)
    model = AutoModelForCausalLM.from_pretrained(saved_bundled_model)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    answer = model.generate(**inputs, max_new_tokens=1024)[0, inputs["input_ids"].shape[1] :]
    assert tokenizer.decode(answer, skip_special_tokens=True) == ANSWER
    return answer.numel()


@pytest.fixture(scope="module")
def server(saved_bundled_model):
    port = free_port()
    # Offline mode also blocks the client's requests to localhost: the server runs without it (nothing downloads).
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    command = [
        os.path.join(os.path.dirname(sys.executable), "transformers"), "serve", str(saved_bundled_model),
        "--trust-remote-code", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if process.poll() is not None:
                pytest.fail(f"transformers serve exited:\n{process.stdout.read()}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("transformers serve did not start within 2 minutes")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def post(url: str, body: dict) -> bytes:
    request = urllib.request.Request(
        f"{url}/v1/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.read()


def test_chat_completion(server, saved_bundled_model, expected_completion_tokens):
    # No `max_tokens`: serve raises the request to 1024 new tokens, far more than the model's 128 positions.
    body = {"model": str(saved_bundled_model), "messages": [{"role": "user", "content": QUESTION}]}
    reply = json.loads(post(server, body))
    choice = reply["choices"][0]
    assert choice["message"]["content"].strip() == ANSWER
    assert choice["finish_reason"] == "stop"
    assert reply["usage"]["completion_tokens"] == expected_completion_tokens


def test_streamed_chat_completion(server, saved_bundled_model, expected_completion_tokens):
    body = {"model": str(saved_bundled_model), "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
    events = [
        json.loads(line[len("data: ") :])
        for line in post(server, body).decode().splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]
    content = "".join(event["choices"][0]["delta"].get("content") or "" for event in events)
    assert content.strip() == ANSWER
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["usage"]["completion_tokens"] == expected_completion_tokens


def test_transformers_chat_answers_a_piped_prompt(server, saved_bundled_model):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    command = [os.path.join(os.path.dirname(sys.executable), "transformers"), "chat", str(saved_bundled_model), server]
    result = subprocess.run(command, input="Sort: 6 3 9\n", env=env, capture_output=True, text=True, timeout=120)
    assert "3 6 9" in result.stdout, result.stdout + result.stderr
