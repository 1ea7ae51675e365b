"""Issue 21: the pipeline's arguments are checked at its entry, with messages naming the argument (not raw
TypeErrors from deep inside); the CLI refuses the same values."""

import numpy as np
import pytest
from transformers import pipeline

from llm_srt.cli.main import main as cli_main


@pytest.fixture(scope="module")
def pipe(tiny_folder):
    return pipeline("speech-translation", model=tiny_folder, trust_remote_code=True)


RAW = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
AUDIO = {"raw": RAW, "sampling_rate": 16000}


@pytest.mark.parametrize("kwargs, named", [
    ({"tgt_lang": 5}, "tgt_lang"),
    ({"tgt_lang": ["deu", 7]}, "tgt_lang"),
    ({"src_lang": 3, "tgt_lang": "deu"}, "src_lang"),
    ({"tgt_lang": "deu", "batch_size": "2"}, "batch_size"),
    ({"tgt_lang": "deu", "batch_size": 2.5}, "batch_size"),
    ({"tgt_lang": "deu", "chunk_length_s": 0.001}, "chunk_length_s"),
    ({"tgt_lang": "deu", "chunk_length_s": -1}, "chunk_length_s"),
    ({"tgt_lang": "deu", "chunk_length_s": "10"}, "chunk_length_s"),
    ({"tgt_lang": "deu", "generate_kwargs": "num_beams=2"}, "generate_kwargs"),
    ({"tgt_lang": "deu", "generate_kwargs": {"max_new_tokens": "5"}}, "max_new_tokens"),
    ({"tgt_lang": "deu", "generate_kwargs": {"num_beams": 1.5}}, "num_beams"),
    ({"tgt_lang": "deu", "max_new_tokens": -3}, "max_new_tokens"),
    ({"tgt_lang": "deu", "num_workers": "1"}, "num_workers"),
])
def test_bad_argument_types_are_named(pipe, kwargs, named):
    with pytest.raises((TypeError, ValueError), match=named) as caught:
        pipe(AUDIO, src_lang=kwargs.pop("src_lang", "eng"), **kwargs)
    assert "Traceback" not in str(caught.value)


@pytest.mark.parametrize("kwargs, named", [({"batch_size": 0}, "batch_size"), ({"batch_size": -2}, "batch_size"),
                                           ({"batch_size": 1.5}, "batch_size"), ({"num_workers": -1}, "num_workers")])
def test_bad_batch_settings_are_refused_when_the_pipeline_is_made(tiny_folder, kwargs, named):
    """The base class keeps these for every call: pipeline(..., batch_size=0) was accepted."""
    with pytest.raises(ValueError, match=named):
        pipeline("speech-translation", model=tiny_folder, trust_remote_code=True, **kwargs)


def test_good_arguments_still_run(pipe):
    out = pipe(AUDIO, src_lang="eng", tgt_lang="deu", batch_size=2, chunk_length_s=1.5, max_new_tokens=3)
    assert out["tgt_lang"] == "deu" and out["complete"] in (True, False)


def test_cli_refuses_a_tiny_chunk_length(tiny_folder, tmp_path, capsys):
    audio = tmp_path / "a.wav"
    import soundfile

    soundfile.write(audio, RAW, 16000)
    code = cli_main(["translate", str(audio), "--model", tiny_folder, "--src", "eng", "--tgt", "deu",
                     "--chunk-length", "0.001"])
    assert code == 2
    assert "--chunk-length" in capsys.readouterr().err


@pytest.mark.parametrize("temperature", [1e-45, 1e-3, -0.5, float("nan"), float("inf")])
def test_an_underflowing_temperature_is_refused_at_the_entry(pipe, tiny, temperature):
    """A positive temperature below 0.01 overflows logits / temperature and failed deep inside sampling (a 500 in
    the server); it is refused where the value comes in: the pipeline's entry and the model's generate, naming it."""
    import torch

    with pytest.raises(ValueError, match=r"temperature must be 0 \(greedy\) or a number >= 0.01"):
        pipe(AUDIO, src_lang="eng", tgt_lang="deu", generate_kwargs={"do_sample": True, "temperature": temperature})
    model, processor = tiny
    inputs = processor(audio=[RAW], sampling_rate=16000, task="asr", src_lang="eng", return_tensors="pt")
    with pytest.raises(ValueError, match=r"temperature must be 0 \(greedy\) or a number >= 0.01"):
        model.generate(**inputs, do_sample=True, temperature=temperature, max_new_tokens=2)
    with torch.no_grad():  # a usable temperature still samples
        model.generate(**inputs, do_sample=True, temperature=0.7, max_new_tokens=2)


# ------------------------------------------------------------------------ duplicate targets, source == target
def test_one_rule_for_targets():
    """`normalize_targets` is the rule every entry uses: a language named twice (under any of its names) is refused
    naming it; a target equal to the source is kept with a warning."""
    import logging

    from llm_srt.languages_llm_srt import normalize_targets

    assert normalize_targets(["German", "fr"], "eng") == ["deu", "fra"]
    with pytest.raises(ValueError, match=r"tgt_lang names deu twice \('deu' and 'de'\); give each target once"):
        normalize_targets(["deu", "fra", "de"])
    with pytest.raises(ValueError, match="tgt_lang is empty"):
        normalize_targets([])
    logger = logging.getLogger("llm_srt.languages_llm_srt")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        assert normalize_targets(["eng", "deu"], "en") == ["eng", "deu"]
    finally:
        logger.removeHandler(handler)
    assert any("eng" in r.getMessage() and "is the spoken language" in r.getMessage() for r in records)


def test_pipeline_refuses_duplicate_targets_and_warns_on_its_own_language(pipe, caplog):
    import logging

    with pytest.raises(ValueError, match="tgt_lang names deu twice"):
        pipe(AUDIO, src_lang="eng", tgt_lang=["deu", "German"], generate_kwargs={"max_new_tokens": 2})
    with caplog.at_level(logging.WARNING):
        result = pipe(AUDIO, src_lang="eng", tgt_lang="en", generate_kwargs={"max_new_tokens": 2, "num_beams": 1})
    assert result["tgt_lang"] == "eng" and "tgt_lang eng is the spoken language" in caplog.text


def test_cli_refuses_duplicate_targets(tiny_folder, tmp_path, capsys):
    import soundfile

    path = tmp_path / "a.wav"
    soundfile.write(path, RAW, 16000)
    try:
        status = cli_main(["translate", str(path), "--model", tiny_folder, "--src", "eng", "--tgt", "deu,fra,de"])
    except SystemExit as stop:
        status = stop.code
    err = capsys.readouterr().err
    assert status == 2 and "--tgt names deu twice" in err and "Traceback" not in err


def test_generate_many_targets_refuses_duplicates(tiny):

    from llm_srt.generation_llm_srt import generate_many_targets

    model, processor = tiny
    features = processor(audio=[RAW], sampling_rate=16000, task="asr", src_lang="eng",
                         return_tensors="pt")["input_features"]
    with pytest.raises(ValueError, match="tgt_langs names deu twice"):
        processor.shared_prompt_prefix("srt", "eng", ["deu", "German"])
    with pytest.raises(ValueError, match="tgt_langs names fra twice"):
        generate_many_targets(model, processor, "eng", ["fra", "deu", "fr"], input_features=features,
                              max_new_tokens=2)
