"""LLM-SRT on vLLM, through the decoding seam: `VllmEngine` gives the transformers engine's greedy tokens (asr, smt,
srt, different-length audio, shared transcripts with the forced history's n-gram ban), close first-step logprobs and
the same language detections; `llm-srt serve --engine vllm` answers the `openai` client as the default engine does;
`evaluate.py --engine vllm --tensor_parallel_size 2` writes the default engine's hypotheses and scores.

The transformers side runs here; vLLM runs in its own environment (transformers <5.20), named by
LLM_SRT_VLLM_PYTHON (docs/vllm.md); without it these tests are skipped."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

from llm_srt.decoding_llm_srt import DecodeRow, TransformersEngine
from llm_srt.testing import attach_detector_hearing, build_tiny_model_and_processor, save_model, synthetic_speech


VLLM_PYTHON = os.environ.get("LLM_SRT_VLLM_PYTHON")
pytestmark = pytest.mark.skipif(not VLLM_PYTHON, reason="LLM_SRT_VLLM_PYTHON (the vLLM environment's python) not set")
ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
MAX_NEW_TOKENS = 8
# Head size 32 everywhere (vLLM's CPU attention supports 32, 64, 80, ...).
SHAPES = dict(encoder_width=64, qformer_width=64, llm_width=128, num_heads=2, projector_dropout=0.0)
GREEDY = {"max_new_tokens": MAX_NEW_TOKENS, "num_beams": 1}
ROWS = [
    dict(window=0, task="srt", src_lang="eng", tgt_lang="deu"),
    dict(window=1, task="srt", src_lang="eng", tgt_lang="deu"),
    dict(window=2, task="srt", src_lang="eng", tgt_lang="zho"),
    dict(window=1, task="asr", src_lang="fra"),
    dict(window=2, task="smt", src_lang="eng", tgt_lang="jpn", transcript="I see three red cats."),
]
# n-gram size 1: no token of the forced `transcript<|src|><|tgt|>` (nor an earlier one) may be generated, so the
# answer shows whether the forced prefix counts as history
SHARED = dict(audio=[0, 1, 2], src_lang="eng", targets=["deu", "fra", "jpn"],
              settings={"max_new_tokens": 10, "num_beams": 1, "no_repeat_ngram_size": 1},
              transcripts=["I see three red cats.", "hello hello hello", None])
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}


def vllm_env() -> dict:
    return {**os.environ, **VLLM_ENV, "PYTHONPATH": ROOT}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny model with vLLM-supported head sizes, varied greedy tokens, and a language detector hearing German."""
    model, processor = build_tiny_model_and_processor(seed=0, **SHAPES)
    torch.manual_seed(1)
    with torch.no_grad():  # wider random weights after the encoder, so greedy tokens vary (not one token repeated)
        for name, weight in model.named_parameters():
            if weight.dim() == 2 and not name.startswith("audio_tower"):
                weight.normal_(0, 1.0 if "embed" in name else 0.2)
    attach_detector_hearing(model, "de", tmp_path_factory.mktemp("whisper"))
    return save_model(model, processor, tmp_path_factory.mktemp("tiny_vllm"))


@pytest.fixture(scope="module")
def audio():
    return [synthetic_speech(seconds, seed=i) for i, seconds in enumerate([0.4, 1.1, 2.0])]


@pytest.fixture(scope="module")
def transformers_side(folder, audio):
    from llm_srt import LlmSrtForConditionalGeneration, LlmSrtProcessor

    model = LlmSrtForConditionalGeneration.from_pretrained(folder).eval()
    engine = TransformersEngine(model, LlmSrtProcessor.from_pretrained(folder))
    handles, detections = engine.encode(audio, detect_language=True)
    rows = [DecodeRow(**row) for row in ROWS]
    answers = engine.decode_rows(handles, rows, GREEDY)
    with torch.no_grad():
        first = []
        for row in rows:
            block = engine.processor.prompt_blocks(row.task, row.src_lang, [row.tgt_lang], [row.transcript])[0]
            out = model(input_ids=torch.tensor([block]), audio_embeds=handles[row.window][None])
            first.append(torch.log_softmax(out.logits[0, -1].float(), dim=-1))
    shared = engine.decode_shared_transcript([handles[i] for i in SHARED["audio"]], SHARED["src_lang"],
                                             SHARED["targets"], SHARED["settings"], SHARED["transcripts"])
    sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
    from vllm_worker import live_segments

    return {"detections": [d["language"] for d in detections], "rows": answers, "first_logprobs": first,
            "shared": [[a["token_ids"] for a in per_audio] for per_audio in shared],
            "live": live_segments(engine, audio[2], GREEDY)}


@pytest.fixture(scope="module")
def vllm_side(folder, audio, tmp_path_factory):
    io = tmp_path_factory.mktemp("io")
    request, answer = io / "request.json", io / "answer.json"
    request.write_text(json.dumps({"folder": folder, "audio": [a.tolist() for a in audio], "rows": ROWS,
                                   "settings": GREEDY, "shared": SHARED}))
    run = subprocess.run([VLLM_PYTHON, os.path.join(ROOT, "tests", "integration", "vllm_worker.py"), str(request), str(answer)],
                         env=vllm_env(), capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-4000:]
    # a successful run ends without vLLM logging a failure while VllmEngine shuts it down
    assert "output_handler failed" not in run.stderr, run.stderr[-4000:]
    return json.loads(answer.read_text())


def test_greedy_tokens_equal_the_transformers_engine(transformers_side, vllm_side):
    ours = [{"ids": a["token_ids"], "complete": a["complete"], "text": a["text"]} for a in transformers_side["rows"]]
    assert ours == vllm_side["rows"]
    # the comparison means something: the tiny model does not emit one token over and over
    assert len({tuple(r["ids"]) for r in ours}) == len(ours)


def test_first_step_logprobs_close(transformers_side, vllm_side):
    for ours, theirs in zip(transformers_side["first_logprobs"], vllm_side["first_logprobs"]):
        assert len(theirs) >= 5
        for token, logprob in theirs.items():
            assert abs(ours[int(token)].item() - logprob) < 1e-3


def test_shared_transcript_equal_and_the_forced_prefix_counts_as_history(folder, transformers_side, vllm_side):
    from llm_srt import LlmSrtProcessor

    assert transformers_side["shared"] == vllm_side["shared"]
    processor = LlmSrtProcessor.from_pretrained(folder)
    _, prefixes = processor.forced_answer_inputs("eng", SHARED["targets"], SHARED["transcripts"][:1])
    for prefix, answer in zip(prefixes, vllm_side["shared"][0]):
        assert answer[:len(prefix)] == prefix
        generated = answer[len(prefix):]
        assert generated and not set(generated) & set(prefix)  # the 1-gram ban saw the forced prefix
        assert len(set(generated)) == len(generated)


def test_language_detection_and_refusals(transformers_side, vllm_side):
    assert vllm_side["detections"] == transformers_side["detections"] == ["deu"] * 3
    beams, unknown = vllm_side["refusals"]
    assert "num_beams=4" in beams and "transformers engine" in beams
    assert "output_scores" in unknown


def test_live_translation_on_vllm_equals_the_transformers_engine(transformers_side, vllm_side):
    """`LiveTranslator` decodes through the seam, so a live session runs on vLLM with the same segments."""
    assert vllm_side["live"] == transformers_side["live"]
    assert transformers_side["live"] and all(set(s["translations"]) == {"deu", "fra"} for s in vllm_side["live"])


# ---------------------------------------------------------------------------------------------- llm-srt serve
@pytest.fixture(scope="module")
def vllm_server(folder, tmp_path_factory):
    from llm_srt.testing import ServerProcess

    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with ServerProcess.llm_srt_serve(VLLM_PYTHON, folder, "--engine", "vllm", "--max-new-tokens", str(MAX_NEW_TOKENS), "--dtype",
                       "float32", env=vllm_env(), log_path=log) as server:
        yield server.url + "/v1"


def _ask(base_url, wav, model):
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=300)
    with open(wav, "rb") as f:
        transcription = client.audio.transcriptions.create(model=model, file=f, language="fra",
                                                           response_format="verbose_json")
    with open(wav, "rb") as f:  # several targets, one shared transcript; the language detected
        translation = client.audio.translations.create(model=model, file=f, response_format="verbose_json",
                                                       extra_body={"target_language": "deu,jpn"})
    with pytest.raises(openai.BadRequestError, match="Unsupported language"):
        with open(wav, "rb") as f:
            client.audio.transcriptions.create(model=model, file=f, language="klingon")
    return transcription.model_dump(), translation.model_dump()


def test_serve_engine_vllm_answers_as_the_default_engine(folder, vllm_server, audio, tmp_path):
    from llm_srt.serving import create_app
    from llm_srt.testing import ServerThread

    wav = tmp_path / "speech.wav"
    soundfile.write(wav, audio[2], 16000, subtype="FLOAT")
    theirs = _ask(vllm_server, wav, folder)  # the path as given on the command line names the model
    # vLLM computes in the folder's float32; the default engine would take bf16 on a CPU that computes it natively
    with ServerThread(create_app(folder, max_new_tokens=MAX_NEW_TOKENS, dtype="float32")) as server:
        ours = _ask(server.url + "/v1", wav, os.path.basename(folder))
    assert theirs == ours
    transcription, translation = theirs
    assert transcription["language"] in ("fra", "french") and transcription["text"]
    per_target = translation["translations"]
    assert [t["target_language"] for t in per_target] == ["german", "japanese"]
    assert {t["language"] for t in per_target} == {"german"}  # detected: the detector hears German


def test_serve_engine_vllm_refuses_beams_by_name(folder):
    run = subprocess.run([VLLM_PYTHON, "-m", "llm_srt.cli", "serve", folder, "--engine", "vllm", "--num-beams", "4"],
                         env=vllm_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "num_beams=4" in run.stderr and "transformers engine" in run.stderr


def test_the_transformers_engine_in_vllms_environment_refuses_to_start_by_name(folder):
    """vLLM pins a transformers older than the model's `cache` API: the default engine there used to start, then
    answer every request with a 500 ('CausalLMOutputWithPast' object has no attribute 'cache')."""
    run = subprocess.run([VLLM_PYTHON, "-m", "llm_srt.cli", "serve", folder, "--port", "0"], env=vllm_env(),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "needs transformers >= 5.24" in run.stderr and "--engine vllm" in run.stderr, run.stderr[-2000:]


# ------------------------------------------------------------------------------------ vLLM's own OpenAI server
def test_vllm_own_server_answers_the_openai_client(folder, audio, tmp_path):
    """`python -m vllm.entrypoints.openai.api_server` on a folder of ours (no --trust-remote-code): a transcription
    equal to `llm-srt serve`'s, a translation into a non-English target, our codes and names accepted, an unsupported
    language a 400 naming the supported ones."""
    import openai

    from llm_srt.serving import create_app
    from llm_srt.testing import ServerProcess, ServerThread

    wav = tmp_path / "speech.wav"
    soundfile.write(wav, audio[1], 16000, subtype="FLOAT")
    command = [VLLM_PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", folder, "--dtype", "float32",
               "--max-model-len", "512", "--enforce-eager", "--port", "{port}"]
    with ServerProcess(command, env=vllm_env(), log_path=tmp_path / "vllm.log") as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=300)
        limit = {"max_completion_tokens": MAX_NEW_TOKENS}
        with open(wav, "rb") as f:
            theirs = client.audio.transcriptions.create(model=folder, file=f, language="French", extra_body=limit)
        with open(wav, "rb") as f:
            translated = client.audio.translations.create(model=folder, file=f,
                                                          extra_body={**limit, "language": "eng", "to_language": "deu"})
        with pytest.raises(openai.BadRequestError, match="Unsupported language"):
            with open(wav, "rb") as f:
                client.audio.transcriptions.create(model=folder, file=f, language="Klingon", extra_body=limit)
        # a translation into the spoken language is its transcript, as `llm-srt serve` answers it (not eng->eng SRT)
        with open(wav, "rb") as f:
            into_english = client.audio.translations.create(model=folder, file=f,
                                                            extra_body={**limit, "language": "en", "to_language": "en"})
        with open(wav, "rb") as f:
            english = client.audio.transcriptions.create(model=folder, file=f, language="en", extra_body=limit)
        # silence is never sent to the LLM (which invents text for it): an empty answer, for both endpoints
        silent = {}
        for name, samples in (("silence", np.zeros(16000, np.float32)), ("one_zero_sample", np.zeros(1, np.float32))):
            soundfile.write(tmp_path / f"{name}.wav", samples, 16000, subtype="FLOAT")
            with open(tmp_path / f"{name}.wav", "rb") as f:
                silent[name] = client.audio.transcriptions.create(model=folder, file=f, language="en",
                                                                  extra_body=limit).text
            with open(tmp_path / f"{name}.wav", "rb") as f:
                silent[name + "_translated"] = client.audio.translations.create(
                    model=folder, file=f, extra_body={**limit, "language": "en", "to_language": "de"}).text
            with open(tmp_path / f"{name}.wav", "rb") as f:  # vLLM's beam search reads logprobs, not samples
                silent[name + "_beam_search"] = client.audio.transcriptions.create(
                    model=folder, file=f, language="en", extra_body={**limit, "use_beam_search": True}).text
        # an empty language field is a missing one
        refusals = []
        for language in (None, ""):
            with pytest.raises(openai.BadRequestError) as refused, open(wav, "rb") as f:
                client.audio.transcriptions.create(model=folder, file=f, extra_body={**limit, "language": language})
            refusals.append(refused.value.body)
        with pytest.raises(openai.BadRequestError, match="NaN or infinite"):
            samples = audio[1].copy()
            samples[100] = np.nan
            soundfile.write(tmp_path / "nan.wav", samples, 16000, subtype="FLOAT")
            with open(tmp_path / "nan.wav", "rb") as f:
                client.audio.transcriptions.create(model=folder, file=f, language="en", extra_body=limit)
        # a target on the transcription endpoint was answered with the transcript, without a word (as llm-srt serve)
        with pytest.raises(openai.BadRequestError, match="to_language is for /v1/audio/translations"):
            with open(wav, "rb") as f:
                client.audio.transcriptions.create(model=folder, file=f, language="en",
                                                   extra_body={**limit, "to_language": "de"})
        with open(wav, "rb") as f:  # still serving, unchanged
            assert client.audio.transcriptions.create(model=folder, file=f, language="en",
                                                      extra_body=limit).text == english.text
    assert into_english.text == english.text and english.text
    assert silent == {"silence": "", "silence_translated": "", "silence_beam_search": "", "one_zero_sample": "",
                      "one_zero_sample_translated": "", "one_zero_sample_beam_search": ""}, silent
    assert refusals[0] == refusals[1] and "needs the spoken language" in str(refusals[0]), refusals
    with ServerThread(create_app(folder, max_new_tokens=MAX_NEW_TOKENS, dtype="float32")) as ours_server:
        client = openai.OpenAI(base_url=ours_server.url + "/v1", api_key="none", max_retries=0, timeout=300)
        with open(wav, "rb") as f:
            ours = client.audio.transcriptions.create(model=os.path.basename(folder), file=f, language="fra")
        with open(wav, "rb") as f:  # the same form fields as vLLM's server was sent
            ours_translated = client.audio.translations.create(model=os.path.basename(folder), file=f,
                                                               extra_body={"language": "eng", "to_language": "deu"})
    assert theirs.text == ours.text and ours.text
    # (the texts may differ here: 8 new tokens end inside this random model's transcript, which `llm-srt serve`
    # reports as an incomplete translation and vLLM's API, by the original scorer's rule, as the text after "|>")
    assert translated.text and ours_translated.target_language == "deu"


SILENCE_PROCESSOR = """
import json, types
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate
from llm_srt.vllm.silence import LlmSrtSilenceLogitsProcessor

def processor(architecture):
    config = types.SimpleNamespace(model_config=types.SimpleNamespace(hf_config=types.SimpleNamespace(
        architectures=[architecture])))
    return LlmSrtSilenceLogitsProcessor(config, torch.device("cpu"), False)

def params():
    p = SamplingParams(temperature=0)
    p._eos_token_id = 7
    return p

added = [(0, params(), [7], []), (1, params(), [3, 7], []), (2, params(), [5, 6], [])]
found = {}
for architecture in ("LlmSrtForConditionalGeneration", "Qwen2AudioForConditionalGeneration"):
    lp = processor(architecture)
    lp.update_state(BatchUpdate(batch_size=3, removed=[], added=added, moved=[]))
    logits = lp.apply(torch.zeros(3, 10))
    found[architecture] = {"argmax_invariant": lp.is_argmax_invariant(), "argmax": logits.argmax(-1).tolist(),
                           "forced_rows": sorted(lp.silent)}
lp.update_state(None)
ours = processor("LlmSrtForConditionalGeneration")
ours.update_state(BatchUpdate(batch_size=3, removed=[], added=added, moved=[]))
ours.update_state(BatchUpdate(batch_size=2, removed=[0], added=[], moved=[]))  # the silent request finished
found["after_removal"] = sorted(ours.silent)
print(json.dumps(found))
"""


def test_silence_processor_forces_end_of_sequence_only_for_silent_prompts_of_llm_srt():
    """The processor is installed for every vLLM model (entry point): it forces EOS only on LLM-SRT's silent-chunk
    prompt (`[eos]` alone), and is inert (argmax invariant, nothing forced) for another model."""
    run = subprocess.run([VLLM_PYTHON, "-c", SILENCE_PROCESSOR], env=vllm_env(), capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["LlmSrtForConditionalGeneration"] == {"argmax_invariant": False, "argmax": [7, 0, 0],
                                                       "forced_rows": [0]}, found
    assert found["Qwen2AudioForConditionalGeneration"] == {"argmax_invariant": True, "argmax": [0, 0, 0],
                                                           "forced_rows": []}, found
    assert found["after_removal"] == [], found


CUTS_OF_VLLMS_SPLITTER = """
import json, sys, types
import numpy as np
from transformers import WhisperFeatureExtractor
from vllm.multimodal.audio import split_audio
from llm_srt.testing import synthetic_speech
from llm_srt.vllm.model import LlmSrtVllmForConditionalGeneration

folder = sys.argv[1]
WhisperFeatureExtractor(feature_size=128, chunk_length=30).save_pretrained(folder)  # Whisper-large-v3's 30 s window
model_config = types.SimpleNamespace(model=folder, revision=None)
config = LlmSrtVllmForConditionalGeneration.get_speech_to_text_config(model_config, "transcribe")
pause = np.zeros(int(0.6 * 16000), np.float32)
parts = [synthetic_speech(seconds, seed=i) for i, seconds in enumerate([12.0, 14.0, 13.0, 9.0])]
audio = np.concatenate([parts[0], pause, parts[1], pause, parts[2], pause, parts[3]])
chunks = split_audio(audio, 16000, config.max_audio_clip_s, config.overlap_chunk_second,
                     config.min_energy_split_window_size)
cuts = np.cumsum([len(chunk) for chunk in chunks])[:-1].tolist()
print(json.dumps({"window": config.max_audio_clip_s, "cuts": cuts, "silent_at_cut": [bool(audio[c] == 0) for c in cuts]}))
"""


def test_vllm_own_server_cuts_long_audio_in_pauses(tmp_path):
    """vLLM's own server cuts audio longer than the window (`split_audio`, with this model's speech-to-text config)
    in a pause between sentences: 48 s of four sentences with 0.6 s pauses, a 30 s window. vLLM's default config looks
    for the quietest point only in each chunk's last second, which here is inside the second sentence."""
    run = subprocess.run([VLLM_PYTHON, "-c", CUTS_OF_VLLMS_SPLITTER, str(tmp_path)], env=vllm_env(),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["window"] == 30 and found["cuts"], found
    assert all(found["silent_at_cut"]), found


STREAMING_POST_PROCESSOR = """
import json
from llm_srt.vllm.model import LlmSrtVllmForConditionalGeneration as Model

def stream(deltas):
    processor = Model.get_streaming_post_processor_cls()()
    return [processor.process_delta(delta, index == len(deltas) - 1) for index, delta in enumerate(deltas)]

srt = "I see three red cats.<|eng|><|deu|>Ich sehe drei rote Katzen. "
cases = {
    "srt_by_character": list(srt),
    "srt_by_token": ["I", " see", " three", " red", " cats", ".<", "|", "eng", "|><|", "deu", "|>", "Ich", " sehe",
                     " drei", " rote", " Katzen", ".", " "],
    "asr": ["I", " see", " three", " red", " cats", "."],
    "angle_bracket_in_translation": ["a<|eng|><|deu|>", "x ", "<", "b", "> y", " "],
    "tag_inside_translation": ["a<|eng|><|deu|>", "Ich", "<|deu|>", "Hallo"],
    "silence": [""],
}
print(json.dumps({name: {"sent": stream(deltas), "whole": Model.post_process_output("".join(deltas))}
                  for name, deltas in cases.items()}))
"""


def test_streamed_answers_are_the_post_processed_text_sent_as_it_becomes_known():
    """vLLM's `stream=true`: the deltas a client gets, joined, are `post_process_output` of the whole answer; a
    translation's transcript and tags are never sent, and its words are sent once the tags have passed."""
    run = subprocess.run([VLLM_PYTHON, "-c", STREAMING_POST_PROCESSOR], env=vllm_env(), capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    for name in ("srt_by_character", "srt_by_token", "asr", "angle_bracket_in_translation", "silence"):
        assert "".join(found[name]["sent"]) == found[name]["whole"], (name, found[name])
    by_token = found["srt_by_token"]["sent"]
    assert by_token[:11] == [""] * 11 and by_token[11:] == ["Ich", " sehe", " drei", " rote", " Katzen", ".", ""]
    by_character = found["srt_by_character"]["sent"]
    assert "".join(by_character[:len("I see three red cats.<|eng|><|deu|>")]) == ""
    assert "".join(by_character[:-1]) == "Ich sehe drei rote Katzen." and by_character[-1] == ""
    assert found["asr"]["sent"] == [""] * 5 + ["I see three red cats."]  # whole: it could be a translation's start
    assert found["angle_bracket_in_translation"]["sent"] == ["", "x", "", " <b", "> y", ""]
    # a tag inside the translation: what was sent stays sent, the stream ends there
    assert found["tag_inside_translation"] == {"sent": ["", "Ich", "", ""], "whole": "Hallo"}


def _streamed_text(url: str, fields: dict, wav) -> str:
    """The deltas of a `stream=true` request to vLLM's server, joined (server-sent events)."""
    import urllib.request

    from llm_srt.testing import MULTIPART_BOUNDARY, multipart_form

    request = urllib.request.Request(
        url, data=multipart_form({**fields, "stream": "true"}, wav.read_bytes()),
        headers={"Content-Type": f"multipart/form-data; boundary={MULTIPART_BOUNDARY}"})
    with urllib.request.urlopen(request, timeout=300) as response:
        events = response.read().decode()
    text = []
    for line in events.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line.removeprefix("data: "))["choices"]:
                text.append(choice["delta"].get("content") or "")
    return "".join(text)


def test_vllm_own_server_streams_the_translation_without_its_transcript(tmp_path):
    """A model that answers real words (trained on espeak-ng speech, head sizes vLLM's CPU attention takes): on vLLM's
    server, a streamed translation is the translation alone, as the non-streamed one, never the model's raw
    `transcript<|eng|><|deu|>translation`; a streamed transcription is the transcript."""
    import shutil

    import openai

    from llm_srt.testing import ServerProcess, build_parrot_model

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng (Debian package) not installed")
    shapes = {key: value for key, value in SHAPES.items() if key != "projector_dropout"}
    model, processor, clips = build_parrot_model(**shapes)
    folder = save_model(model, processor, tmp_path / "parrot")
    wav = tmp_path / "cats.wav"
    soundfile.write(wav, clips[0], 16000, subtype="FLOAT")
    command = [VLLM_PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", folder, "--dtype", "float32",
               "--max-model-len", "512", "--enforce-eager", "--port", "{port}"]
    answers = {}
    with ServerProcess(command, env=vllm_env(), log_path=tmp_path / "vllm.log") as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=300)
        for endpoint, fields in (("transcriptions", {"language": "en"}),
                                 ("translations", {"language": "en", "to_language": "de"}),
                                 ("translations", {"language": "eng", "to_language": "French"})):
            create = getattr(client.audio, endpoint).create
            with open(wav, "rb") as f:
                whole = create(model=folder, file=f, extra_body=fields).text
            streamed = _streamed_text(f"{server.url}/v1/audio/{endpoint}", {"model": folder, **fields}, wav)
            answers[f"{endpoint} {fields.get('to_language', '')}".strip()] = (whole, streamed)
    assert answers == {
        "transcriptions": ("I see three red cats.",) * 2,
        "translations de": ("Ich sehe drei rote Katzen.",) * 2,
        "translations French": ("Je vois trois chats rouges.",) * 2,
    }, answers


def test_vllm_refuses_non_finite_and_empty_audio_and_the_next_answer_is_unchanged(vllm_side):
    """NaN/inf samples gave 400 tokens of garbage on vLLM's own server, and the next clean request a wrong answer."""
    found = vllm_side["bad_audio"]
    assert found["refusals"] == {"nan": "audio[0] contains NaN or infinite samples.",
                                 "inf": "audio[0] contains NaN or infinite samples.",
                                 "empty": "audio[0] is empty (0 samples)."}, found
    assert found["same_after"], found


# ---------------------------------------------------------------------------------------------- evaluate.py
def test_evaluate_engine_vllm_split_over_two_processes_equals_the_default(folder, audio, tmp_path):
    rows = []
    for i, clip in enumerate(audio):
        soundfile.write(tmp_path / f"c{i}.wav", clip, 16000)
        for tgt in ("deu", "jpn"):
            rows.append({"audio": f"c{i}.wav", "src_lang": "eng", "tgt_lang": tgt, "transcript": f"I see {i} cats",
                         "translation": f"{tgt} {i}", "key": f"c{i}-{tgt}"})
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    script = os.path.join(ROOT, "trainer_scripts", "evaluate_model.py")
    common = ["--model", folder, "--test_file", str(test_file), "--task", "srt", "--batch_size", "4",
              "--max_new_tokens", str(MAX_NEW_TOKENS), "--dtype", "float32"]  # vLLM's "auto" casts float32 to bf16
    ours = subprocess.run([sys.executable, script, *common, "--num_beams", "1", "--output_dir", str(tmp_path / "tf")],
                          capture_output=True, text=True, timeout=600)
    assert ours.returncode == 0, ours.stderr[-3000:]
    # the LLM split over 2 CPU processes (tensor parallel); one NUMA node: vLLM cannot bind 2 CPU workers itself,
    # so one core each, by hand
    theirs = subprocess.run([VLLM_PYTHON, script, *common, "--engine", "vllm", "--tensor_parallel_size", "2",
                             "--output_dir", str(tmp_path / "vllm")],
                            env={**vllm_env(), "VLLM_CPU_OMP_THREADS_BIND": "0|1"},
                            capture_output=True, text=True, timeout=1200)
    assert theirs.returncode == 0, theirs.stderr[-4000:]

    def hypotheses(name):
        lines = open(tmp_path / name / "hypotheses.srt.jsonl", encoding="utf-8").read().splitlines()
        return {item["key"]: (item["raw"], item["hypothesis"]) for item in map(json.loads, lines)}

    assert hypotheses("vllm") == hypotheses("tf") and len(hypotheses("tf")) == len(rows)
    scores = [json.load(open(tmp_path / name / "results.json")) for name in ("tf", "vllm")]
    assert scores[0]["directions"] == scores[1]["directions"] and scores[0]["averages"] == scores[1]["averages"]
    assert scores[1]["speed"]["engine"] == "vllm" and scores[0]["speed"]["engine"] == "transformers"
