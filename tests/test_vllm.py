"""LLM-SRT on vLLM: greedy tokens and first-step logprobs equal to the transformers model, for asr, smt and srt and a
batch of different-length audio. The transformers side runs here; vLLM runs in its own environment (transformers
<5.20), named by LLM_SRT_VLLM_PYTHON (README: "Serving with vLLM"); without it these tests are skipped."""

import json
import os
import subprocess
import sys

import pytest
import torch

from llm_srt.testing import build_tiny_model_and_processor, synthetic_speech


VLLM_PYTHON = os.environ.get("LLM_SRT_VLLM_PYTHON")
pytestmark = pytest.mark.skipif(not VLLM_PYTHON, reason="LLM_SRT_VLLM_PYTHON (the vLLM environment's python) not set")
MAX_NEW_TOKENS = 8
# Head size 32 everywhere (vLLM's CPU attention supports 32, 64, 80, ...).
SHAPES = dict(encoder_width=64, qformer_width=64, llm_width=128, num_heads=2, projector_dropout=0.0)


def _cases(processor):
    lengths = [0.4, 1.1, 2.0]
    audios = [synthetic_speech(seconds, seed=i) for i, seconds in enumerate(lengths)]
    cases = [("srt", dict(src_lang="eng", tgt_lang="deu"), audio) for audio in audios]
    cases.append(("asr", dict(src_lang="fra"), audios[1]))
    cases.append(("smt", dict(src_lang="eng", tgt_lang="jpn", transcript="I see three red cats."), audios[2]))
    return cases


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    """(transformers answers, vLLM answers) for the same requests; one vLLM engine start."""
    folder = tmp_path_factory.mktemp("tiny_vllm")
    model, processor = build_tiny_model_and_processor(seed=0, **SHAPES)
    torch.manual_seed(1)
    with torch.no_grad():  # wider random weights after the encoder, so greedy tokens vary (not one token repeated)
        for name, weight in model.named_parameters():
            if weight.dim() == 2 and not name.startswith("audio_tower"):
                weight.normal_(0, 1.0 if "embed" in name else 0.2)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    reference, items = [], []
    for task, langs, audio in _cases(processor):
        inputs = processor(audio, task=task, sampling_rate=16000, **langs)
        with torch.no_grad():
            out = model.generate(**inputs, num_beams=1, do_sample=False, no_repeat_ngram_size=0,
                                 max_new_tokens=MAX_NEW_TOKENS, output_scores=True, return_dict_in_generate=True)
        first = torch.log_softmax(out.scores[0][0].float(), dim=-1)
        reference.append({"ids": out.sequences[0].tolist(), "first_logprobs": first})
        prompt = processor.build_prompt(task, langs["src_lang"], langs.get("tgt_lang"), langs.get("transcript"))
        items.append({"prompt_ids": processor.tokenizer.encode(prompt), "audio": audio.tolist()})
    request = tmp_path_factory.mktemp("io") / "request.json"
    answer = request.with_name("answer.json")
    request.write_text(json.dumps({"folder": str(folder), "items": items, "max_new_tokens": MAX_NEW_TOKENS}))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONPATH": os.getcwd()}
    worker = os.path.join(os.path.dirname(__file__), "vllm_worker.py")
    run = subprocess.run([VLLM_PYTHON, worker, str(request), str(answer)], env=env, capture_output=True, text=True,
                         timeout=1200)
    assert run.returncode == 0, run.stderr[-4000:]
    return reference, json.loads(answer.read_text())


def test_greedy_tokens_equal_transformers(decoded):
    reference, answers = decoded
    assert [r["ids"] for r in reference] == [a["ids"] for a in answers]
    # the comparison means something: the tiny model does not emit one token over and over
    assert len({tuple(r["ids"]) for r in reference}) > 1


def test_first_step_logprobs_close(decoded):
    reference, answers = decoded
    for ref, answer in zip(reference, answers):
        for token, logprob in answer["first_logprobs"].items():
            assert abs(ref["first_logprobs"][int(token)].item() - logprob) < 1e-3
