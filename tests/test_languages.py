"""The model knows what it was trained on: the languages and directions of its training data are recorded in its
config (train.py), `llm-srt languages --model` shows them, and the pipeline, the CLI and the server warn, once per
direction, when asked for a language or direction outside them."""

import json
import logging
import os

import pytest
import soundfile

from llm_srt.cli import main as cli
from llm_srt.languages_llm_srt import LANGUAGE_TABLE, untrained_reason
from llm_srt.configuration_llm_srt import LlmSrtConfig
from llm_srt.testing import build_tiny_model_and_processor, save_model, synthetic_speech


SR = 16000
FAST = {"num_beams": 1, "max_new_tokens": 3}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def untrained_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "not trained on" in r.getMessage()]


@pytest.fixture(scope="module")
def eng_deu(tokenizer):
    """A tiny model recorded as trained on eng and deu, in the one direction eng -> deu."""
    return build_tiny_model_and_processor(seed=0, tokenizer=tokenizer, trained_languages=["en", "German"],
                                          trained_directions=["eng-deu"])


@pytest.fixture(scope="module")
def eng_deu_folder(eng_deu, tmp_path_factory):
    return save_model(*eng_deu, tmp_path_factory.mktemp("eng_deu_model"))


def test_config_records_languages_and_directions_as_codes(tmp_path):
    config = LlmSrtConfig(trained_languages=["German", "en", "eng"], trained_directions=["en-de", "deu-eng"])
    assert config.trained_languages == ["deu", "eng"]  # canonical codes, table order, once each
    assert config.trained_directions == ["deu-eng", "eng-deu"]
    config.save_pretrained(tmp_path)
    again = LlmSrtConfig.from_pretrained(tmp_path)
    assert again.trained_languages == ["deu", "eng"] and again.trained_directions == ["deu-eng", "eng-deu"]
    assert LlmSrtConfig().trained_languages is None and LlmSrtConfig().trained_directions is None  # not recorded
    with pytest.raises(ValueError, match="trained_directions"):
        LlmSrtConfig(trained_directions=["eng"])
    with pytest.raises(ValueError, match="klingon"):
        LlmSrtConfig(trained_languages=["klingon"])


def test_untrained_reasons(eng_deu):
    config = eng_deu[0].config
    assert untrained_reason(config, "eng", "deu") is None
    assert untrained_reason(config, "English") is None  # recognition of a trained language
    assert "fra" in untrained_reason(config, "eng", "fra")
    assert "deu-eng" in untrained_reason(config, "deu", "eng")  # both languages known, the direction is not
    assert "jpn" in untrained_reason(config, "jpn")
    assert untrained_reason(LlmSrtConfig(), "jpn", "tha") is None  # nothing recorded: assumed all 15


def test_the_pipeline_warns_once_per_untrained_direction(eng_deu, caplog):
    from llm_srt.pipeline_llm_srt import SpeechTranslationPipeline

    model, processor = eng_deu
    pipe = SpeechTranslationPipeline(model=model, processor=processor)
    audio = {"array": synthetic_speech(0.8, seed=1), "sampling_rate": SR}
    with caplog.at_level(logging.WARNING):
        pipe(audio, src_lang="eng", tgt_lang="deu", generate_kwargs=FAST)
        assert untrained_warnings(caplog) == []
        pipe(audio, src_lang="eng", tgt_lang=["deu", "fra"], generate_kwargs=FAST)
        pipe(audio, src_lang="eng", tgt_lang="fra", generate_kwargs=FAST)
        pipe([audio, audio], src_lang="deu", tgt_lang="eng", generate_kwargs=FAST)
        pipe(audio, src_lang="jpn", task="transcribe", generate_kwargs=FAST)
    warnings = untrained_warnings(caplog)
    assert len(warnings) == 3, warnings  # eng->fra once, deu->eng once, jpn once
    assert "eng -> fra" in warnings[0] and "fra" in warnings[0].split(":", 1)[1]
    assert "deu -> eng" in warnings[1] and "eng-deu" in warnings[1]  # names the directions it was trained on
    assert "jpn" in warnings[2]


def test_cli_languages_lists_the_models_languages(eng_deu_folder, tmp_path, capsys):
    assert cli.main(["languages"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n{code} " in out for code in LANGUAGE_TABLE)  # the 15 without --model
    assert cli.main(["languages", "--model", eng_deu_folder]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines()[1:] if line.strip() and line.split()[0] in LANGUAGE_TABLE]
    assert rows == ["deu", "eng"], out
    assert "eng-deu" in out and "1 direction" in out
    # a model without a record: all 15 assumed, and said so
    unrecorded = tmp_path / "unrecorded"
    LlmSrtConfig().save_pretrained(unrecorded)
    assert cli.main(["languages", "--model", str(unrecorded)]) == 0
    out = capsys.readouterr().out
    assert "not recorded" in out and all(f"\n{code} " in out for code in LANGUAGE_TABLE)
    assert cli.main(["languages", "--model", str(tmp_path / "missing")]) == 2
    assert "llm-srt: error:" in capsys.readouterr().err


@pytest.mark.integration
def test_cli_translate_warns_on_stderr_on_its_own_line(eng_deu_folder, tmp_path, capsys):
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"clip{i}.wav"))
        soundfile.write(paths[-1], synthetic_speech(0.8, seed=i), SR)
    status = cli.main(["translate", *paths, "--model", eng_deu_folder, "--src", "eng", "--tgt", "deu,fra",
                       "--beams", "1", "--max-new-tokens", "3"])
    err = capsys.readouterr().err
    assert status == 0
    shown = [line.split("\r")[-1] for line in err.split("\n")]
    warned = [line for line in shown if "not trained on" in line]
    assert len(warned) == 1 and warned[0].startswith("This model was not trained on eng -> fra"), err


@pytest.mark.integration
def test_the_server_warns_once_per_untrained_direction(eng_deu_folder, caplog):
    pytest.importorskip("fastapi")
    openai = pytest.importorskip("openai")
    import io

    from llm_srt.serving import create_app
    from llm_srt.testing import ServerThread

    buffer = io.BytesIO()
    soundfile.write(buffer, synthetic_speech(0.8, seed=2), SR, format="WAV")
    app = create_app(eng_deu_folder, served_model_name="m", max_new_tokens=3)
    with caplog.at_level(logging.WARNING), ServerThread(app) as running:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        for _ in range(2):
            client.audio.translations.create(model="m", file=("a.wav", buffer.getvalue()),
                                             extra_body={"language": "eng", "target_language": "spa"})
        client.audio.transcriptions.create(model="m", file=("a.wav", buffer.getvalue()), language="en")
    warnings = untrained_warnings(caplog)
    assert len(warnings) == 1 and "eng -> spa" in warnings[0], warnings


@pytest.mark.integration
def test_train_records_the_languages_and_directions_of_its_data(tmp_path):
    """ASR data adds languages only; SMT/SRT data adds its languages and directions to what the starting model
    recorded."""
    from llm_srt.testing import save_tiny_model
    from llm_srt.training.train import main

    rows = []
    for i, (src, tgt) in enumerate((("eng", "deu"), ("fra", "deu"))):
        soundfile.write(tmp_path / f"u{i}.wav", synthetic_speech(0.8, seed=i), SR)
        rows.append({"audio": f"u{i}.wav", "src_lang": src, "tgt_lang": tgt, "transcript": f"text {i}",
                     "translation": f"Text {i}", "key": f"u{i}"})
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    previous = save_tiny_model(tmp_path / "init")
    assert LlmSrtConfig.from_pretrained(previous).trained_languages is None
    recorded = {}
    for stage in ("asr", "srt"):
        out = str(tmp_path / stage)
        main(["--recipe", stage, "--init_from", previous,
              "--train_file", str(manifest), "--output_dir", out, "--max_steps", "1", "--bf16", "false",
              "--per_device_train_batch_size", "2", "--eval_strategy", "no", "--save_strategy", "no",
              "--dataloader_num_workers", "0", "--seed", "0"])
        config = LlmSrtConfig.from_pretrained(out)
        recorded[stage] = (config.trained_languages, config.trained_directions)
        previous = out
    assert recorded["asr"] == (["eng", "fra"], [])  # heard eng and fra, no direction trained yet
    assert recorded["srt"] == (["deu", "eng", "fra"], ["eng-deu", "fra-deu"])


def test_language_detection_chooses_among_the_languages_the_model_was_trained_on(eng_deu, tmp_path):
    """A model trained on eng and deu is never 'detected' as speaking a language it never heard: the candidates are
    its recorded languages, and a recording Whisper hears as French is flagged unsupported (not 0.99 sure of one)."""
    from llm_srt.testing import attach_detector_hearing

    model, processor = eng_deu
    features = processor.extract_features([synthetic_speech(1.0, seed=3)], SR)
    attach_detector_hearing(model, "de", tmp_path / "hears_german")
    heard = model.detect_language(input_features=features)[0]
    assert set(heard["probabilities"]) == {"eng", "deu"} and heard["language"] == "deu" and heard["supported"]
    attach_detector_hearing(model, "fr", tmp_path / "hears_french")
    heard = model.detect_language(input_features=features)[0]
    assert set(heard["probabilities"]) == {"eng", "deu"}
    assert heard["whisper_language"] == "fr" and not heard["supported"]
    # a model that records nothing (e.g. converted before this was recorded) chooses among all 15
    model.config.trained_languages, recorded = None, model.config.trained_languages
    try:
        assert len(model.detect_language(input_features=features)[0]["probabilities"]) == 15
    finally:
        model.config.trained_languages = recorded


def test_untrained_direction_error_refuses_every_time_also_after_a_warned_call(eng_deu, caplog):
    """The warn-once memory silences repeated warnings only: a direction answered once with a warning (the default)
    is still refused when a later call asks for "error", and refused again on every later call."""
    from llm_srt.pipeline_llm_srt import SpeechTranslationPipeline

    model, processor = eng_deu
    pipe = SpeechTranslationPipeline(model=model, processor=processor)
    audio = {"array": synthetic_speech(0.8, seed=1), "sampling_rate": SR}
    with caplog.at_level(logging.WARNING):
        pipe(audio, src_lang="eng", tgt_lang="fra", generate_kwargs=FAST)  # warned, and remembered
        pipe(audio, src_lang="jpn", task="transcribe", generate_kwargs=FAST)
    assert len(untrained_warnings(caplog)) == 2
    for _ in range(2):
        with pytest.raises(ValueError, match="not trained on eng -> fra"):
            pipe(audio, src_lang="eng", tgt_lang="fra", untrained_direction="error", generate_kwargs=FAST)
        with pytest.raises(ValueError, match="not trained on jpn"):
            pipe(audio, src_lang="jpn", task="transcribe", untrained_direction="error", generate_kwargs=FAST)


def test_a_detector_that_knows_only_the_candidates_says_it_cannot_report_other_languages(eng_deu, tmp_path,
                                                                                           caplog):
    """A recording in a language the model never heard is reported unsupported only by a detector that knows more
    languages than the ones it chooses among (Whisper's decoder: 100). A detector trained with the model on its own
    languages (the demo's) always answers one of them, with high confidence: a warning says so, once."""
    from llm_srt.language_detection_llm_srt import LlmSrtLanguageDetector
    from llm_srt.testing import attach_detector_hearing

    model, processor = eng_deu
    features = processor.extract_features([synthetic_speech(1.0, seed=3)], SR)
    attach_detector_hearing(model, "es", tmp_path / "hears_spanish")  # Whisper's 100 languages: Spanish reported
    with caplog.at_level(logging.WARNING):
        heard = model.detect_language(input_features=features)[0]
    assert heard["whisper_language"] == "es" and not heard["supported"] and "knows only" not in caplog.text
    closed = LlmSrtLanguageDetector(model.config.audio_config, ["en", "de"])
    model.set_language_detector(closed)
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(2):
                heard = model.detect_language(input_features=features)[0]
        assert heard["supported"] and heard["language"] in ("eng", "deu")  # it cannot tell
        warned = [r.getMessage() for r in caplog.records if "knows only" in r.getMessage()]
        assert len(warned) == 1 and "knows only eng, deu" in warned[0] and "never reported as unsupported" in warned[0]
    finally:
        attach_detector_hearing(model, "de", tmp_path / "hears_german")


@pytest.mark.integration
def test_untrained_direction_error_refuses_in_the_pipeline_cli_and_server(eng_deu, eng_deu_folder, tmp_path, capsys):
    """`untrained_direction="error"` (`--untrained-direction error`): a direction outside the record is refused by
    name before decoding, a trained one still answered."""
    from llm_srt.pipeline_llm_srt import SpeechTranslationPipeline

    model, processor = eng_deu
    pipe = SpeechTranslationPipeline(model=model, processor=processor)
    audio = {"array": synthetic_speech(0.8, seed=1), "sampling_rate": SR}
    assert isinstance(pipe(audio, src_lang="eng", tgt_lang="deu", untrained_direction="error",
                           generate_kwargs=FAST)["text"], str)
    with pytest.raises(ValueError, match=r"not trained on eng -> fra: .*untrained_direction='warn'"):
        pipe(audio, src_lang="eng", tgt_lang=["deu", "fra"], untrained_direction="error", generate_kwargs=FAST)
    with pytest.raises(ValueError, match="not trained on jpn"):
        pipe(audio, src_lang="jpn", task="transcribe", untrained_direction="error", generate_kwargs=FAST)
    with pytest.raises(ValueError, match="untrained_direction must be 'warn' or 'error'"):
        pipe(audio, src_lang="eng", tgt_lang="deu", untrained_direction="refuse")
    pipe(audio, src_lang="eng", tgt_lang="fra", generate_kwargs=FAST)  # the default still answers

    path = str(tmp_path / "clip.wav")
    soundfile.write(path, synthetic_speech(0.8, seed=3), SR)
    capsys.readouterr()
    status = cli.main(["translate", path, path, "--model", eng_deu_folder, "--src", "eng", "--tgt", "fra",
                       "--beams", "1", "--max-new-tokens", "3", "--untrained-direction", "error"])
    out, err = capsys.readouterr()
    assert status == 1 and out == "" and err.count("not trained on eng -> fra") == 2, err  # every file refused

    pytest.importorskip("fastapi")
    openai = pytest.importorskip("openai")
    import io

    from llm_srt.serving import create_app
    from llm_srt.testing import ServerThread

    buffer = io.BytesIO()
    soundfile.write(buffer, synthetic_speech(0.8, seed=2), SR, format="WAV")
    app = create_app(eng_deu_folder, served_model_name="m", max_new_tokens=3, untrained_direction="error")
    with ServerThread(app) as running:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        for _ in range(2):  # refused every time
            with pytest.raises(openai.BadRequestError) as refused:
                client.audio.translations.create(model="m", file=("a.wav", buffer.getvalue()),
                                                 extra_body={"language": "eng", "target_language": "spa"})
            assert "not trained on eng -> spa" in str(refused.value) and "untrained_direction" in str(refused.value)
        answer = client.audio.translations.create(model="m", file=("a.wav", buffer.getvalue()),
                                                  extra_body={"language": "eng", "target_language": "deu"})
        assert isinstance(answer.text, str)
    with pytest.raises(ValueError, match="untrained_direction must be"):
        create_app(eng_deu_folder, untrained_direction="ignore")
