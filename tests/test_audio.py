"""Bad and unusual audio, processor and model-loading inputs: scaled, mixed, converted, or refused with a clear error."""

import io
import json

import numpy as np
import pytest
import torch

from llm_srt.audio_llm_srt import AudioInputError, as_float_mono, check_sampling_rate, load_audio
from llm_srt.testing import synthetic_speech


SR = 16000


@pytest.fixture(scope="module")
def speech():
    return synthetic_speech(0.5, seed=11)


# ------------------------------------------------------------------------------------------------- integer PCM
def test_int16_is_scaled_by_its_width():
    pcm = np.array([-32768, -16384, 0, 16384, 32767], dtype=np.int16)
    expected = pcm.astype(np.float32) / 32768
    np.testing.assert_array_equal(load_audio(pcm, sampling_rate=SR), expected)


@pytest.mark.parametrize("container", [list, lambda v: np.array(v), lambda v: np.array(v, dtype=np.int32),
                                       lambda v: torch.tensor(v)])
def test_int16_samples_in_a_wider_container_are_read_as_16_bit(container):
    # A Python list of int16 samples becomes an int64 array; scaling by int64's maximum made it silence.
    values = [-32768, -1000, 0, 1000, 32767] * 100
    expected = np.asarray(values, dtype=np.float32) / 32768
    np.testing.assert_allclose(load_audio({"array": container(values), "sampling_rate": SR}), expected, rtol=1e-6)
    np.testing.assert_allclose(as_float_mono(container(values), "x"), expected, rtol=1e-6)


def test_32_bit_pcm_is_scaled_by_2_pow_31():
    pcm = np.array([-(2**31), -(2**30), 0, 2**30, 2**31 - 1], dtype=np.int64)
    expected = pcm.astype(np.float64) / 2**31
    np.testing.assert_allclose(as_float_mono(pcm, "x"), expected.astype(np.float32))
    np.testing.assert_allclose(as_float_mono(pcm.astype(np.int32), "x"), expected.astype(np.float32))


def test_integers_beyond_32_bit_are_refused():
    with pytest.raises(AudioInputError, match="clip.*beyond 32-bit PCM.*float"):
        as_float_mono(np.array([0, 2**40], dtype=np.int64), "clip")
    with pytest.raises(AudioInputError, match="beyond 32-bit PCM"):
        load_audio({"array": [0, 2**33], "sampling_rate": SR})


def test_unsigned_8_bit_is_centred_and_signed_8_bit_scaled():
    np.testing.assert_array_equal(as_float_mono(np.array([0, 64, 128, 192, 255], dtype=np.uint8), "x"),
                                  np.array([-1, -0.5, 0, 0.5, 127 / 128], dtype=np.float32))
    np.testing.assert_array_equal(as_float_mono(np.array([-128, 0, 64, 127], dtype=np.int8), "x"),
                                  np.array([-1, 0, 0.5, 127 / 128], dtype=np.float32))
    np.testing.assert_array_equal(as_float_mono(np.array([0, 32768, 65535], dtype=np.uint16), "x"),
                                  np.array([-1, 0, 32767 / 32768], dtype=np.float32))


@pytest.mark.parametrize("samples, message", [
    (np.array([True, False] * 100), "bool"),
    (np.ones(200, dtype=np.complex64), "complex"),
    (np.array(["a", "b"]), "dtype <U1"),
    ([0.1, "x"], "numbers"),
    (np.ones(200, dtype=np.uint64), "unsigned"),
    ([[0.1, 0.2], [0.3]], "numbers"),
])
def test_non_numeric_samples_are_refused(samples, message):
    with pytest.raises(AudioInputError, match=f"clip.*{message}"):
        as_float_mono(samples, "clip")


def test_half_precision_is_converted(speech):
    ours = load_audio(speech, sampling_rate=SR)
    for form in (torch.from_numpy(speech).to(torch.bfloat16), torch.from_numpy(speech).half(),
                 speech.astype(np.float16), torch.from_numpy(speech).requires_grad_()):
        out = load_audio(form, sampling_rate=SR)
        assert out.dtype == np.float32 and out.shape == ours.shape
        np.testing.assert_allclose(out, ours, atol=1e-2)


# -------------------------------------------------------------------------------------------------- rates
@pytest.mark.parametrize("rate, message", [
    (16, "between 1000 and 384000 Hz, got 16 Hz.*pass 16000"),
    (44.1, "whole number of Hz, got 44.1.*pass 44100"),
    ("16000", "a number of Hz, got str '16000'"),
    (10**6, "1000000 Hz"),
    (True, "True"),
    (float("nan"), "nan"),
    (-8000, "-8000"),
])
def test_implausible_sampling_rates_are_refused(speech, rate, message):
    with pytest.raises(AudioInputError, match=message):
        load_audio(speech, sampling_rate=rate)
    with pytest.raises(AudioInputError, match=message):
        load_audio({"array": speech, "sampling_rate": rate})


def test_numpy_and_whole_float_rates_are_fine(speech):
    expected = load_audio(speech, sampling_rate=SR)
    for rate in (np.int64(SR), np.int32(SR), float(SR), np.float64(SR)):
        assert check_sampling_rate(rate, "x") == SR and type(check_sampling_rate(rate, "x")) is int
        np.testing.assert_array_equal(load_audio(speech, sampling_rate=rate), expected)


# ----------------------------------------------------------------------------------------------- channels
def test_channel_layouts(speech):
    left, right = speech, speech[::-1].copy()
    mono = (left + right) / 2
    for layout in (np.stack([left, right]), np.stack([left, right], axis=1)):
        np.testing.assert_allclose(as_float_mono(layout, "x"), mono, rtol=1e-6)
        np.testing.assert_allclose(load_audio(layout, sampling_rate=SR), mono, rtol=1e-6)
    np.testing.assert_array_equal(as_float_mono(speech[None, :], "x"), speech)
    np.testing.assert_array_equal(as_float_mono(speech[:, None], "x"), speech)
    six = np.tile(speech, (6, 1))
    np.testing.assert_allclose(as_float_mono(six, "x"), speech, rtol=1e-6)


@pytest.mark.parametrize("item", [5, None, object()])
def test_other_objects_are_refused(item):
    with pytest.raises(AudioInputError, match="unsupported audio input type"):
        load_audio(item, sampling_rate=SR)


@pytest.mark.parametrize("shape, message", [
    ((20, 1600), r"shape \(20, 1600\).*at most 8 channels.*list of clips"),
    ((4, 6), r"shape \(4, 6\).*ambiguous"),
    ((2, 3, 1600), r"1-D .* or 2-D"),
    ((), r"1-D .* or 2-D"),
])
def test_unrecognised_layouts_are_refused(shape, message):
    with pytest.raises(AudioInputError, match=f"clip.*{message}"):
        as_float_mono(np.zeros(shape, dtype=np.float32), "clip")


# ------------------------------------------------------------------------------------------------ processor
def features(processor, audio, **kwargs):
    return processor(audio, task="asr", src_lang="eng", sampling_rate=kwargs.pop("sampling_rate", SR),
                     **kwargs)["input_features"]


def test_processor_mixes_stereo_to_one_clip(tiny, speech):
    _, processor = tiny
    right = speech[::-1].copy()
    expected = features(processor, [(speech + right) / 2])
    for stereo in (np.stack([speech, right]), np.stack([speech, right], axis=1), torch.from_numpy(np.stack([speech, right]))):
        got = features(processor, stereo)
        assert got.shape[0] == 1  # one clip, not a batch of 2 (or of N two-sample clips)
        torch.testing.assert_close(got, expected)
    batch = features(processor, [np.stack([speech, right], axis=1), speech])
    assert batch.shape[0] == 2
    torch.testing.assert_close(batch[:1], expected)


def test_processor_normalises_like_the_pipeline(tiny, speech):
    _, processor = tiny
    pcm = np.round(speech * 20000).astype(np.int16)
    forms = {
        "int16": pcm,
        "int16 list": pcm.tolist(),
        "int64": pcm.astype(np.int64),
        "uint8": (np.round(speech * 100) + 128).astype(np.uint8),
        "bfloat16": torch.from_numpy(speech).to(torch.bfloat16),
        "float16": speech.astype(np.float16),
        "stereo (N, 2)": np.stack([speech, speech * 0.5], axis=1),
    }
    for name, form in forms.items():
        expected = features(processor, [load_audio(form, sampling_rate=SR)])
        torch.testing.assert_close(features(processor, form), expected, msg=name)
        torch.testing.assert_close(features(processor, [form]), expected, msg=name)
    # scaled, not cast: int16 PCM gives the features of the float clip
    torch.testing.assert_close(features(processor, pcm), features(processor, pcm / 32768), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("rate, message", [
    ("16000", "a number of Hz, got str '16000'"), (44.1, "whole number"), (16, "16 Hz"), (8000, "8000 Hz.*16000 Hz.*resample"),
])
def test_processor_refuses_bad_rates(tiny, speech, rate, message):
    _, processor = tiny
    with pytest.raises(ValueError, match=message):
        features(processor, speech, sampling_rate=rate)


def test_processor_accepts_numpy_integer_rate(tiny, speech):
    _, processor = tiny
    torch.testing.assert_close(features(processor, speech, sampling_rate=np.int64(SR)), features(processor, speech))


@pytest.mark.parametrize("make, message", [
    (lambda tmp: str(tmp / "clip.wav"), r"audio\[0\] is a file path.*load_audio.*pipeline"),
    (lambda tmp: tmp / "clip.wav", r"audio\[0\] is a file path"),
    (lambda tmp: (tmp / "clip.wav").read_bytes(), r"audio\[0\] is file bytes.*load_audio.*pipeline"),
    (lambda tmp: memoryview((tmp / "clip.wav").read_bytes()), r"audio\[0\] is file bytes.*load_audio"),
    (lambda tmp: {"array": np.zeros(1600, dtype=np.float32), "sampling_rate": SR}, r"audio\[0\] is a dict.*load_audio"),
    (lambda tmp: {"path": str(tmp / "clip.wav"), "bytes": None}, r"audio\[0\] is a dict"),
])
def test_processor_refuses_undecoded_inputs_pointing_to_load_audio(tiny, speech, tmp_path, make, message):
    import soundfile

    _, processor = tiny
    soundfile.write(tmp_path / "clip.wav", speech, SR)
    with pytest.raises(ValueError, match=message):
        features(processor, make(tmp_path))
    with pytest.raises(ValueError, match=message.replace("0", "1", 1)):
        features(processor, [speech, make(tmp_path)])


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_load_audio_decodes_every_kind_of_file_bytes_the_processor_points_to_it_for(speech, tmp_path, wrap):
    """The processor refuses file bytes (bytes, bytearray, memoryview) naming load_audio: load_audio takes all three."""
    import soundfile

    soundfile.write(tmp_path / "clip.wav", speech, SR)
    expected = load_audio(str(tmp_path / "clip.wav"))
    np.testing.assert_array_equal(load_audio(wrap((tmp_path / "clip.wav").read_bytes())), expected)


@pytest.mark.parametrize("audio, message", [
    (np.zeros((20, 1600), dtype=np.float32), r"audio\[0\].*shape \(20, 1600\).*list of clips"),
    (np.zeros((2, 2, 1600), dtype=np.float32), r"audio\[0\].*1-D"),
    (np.array([True, False] * 800), r"audio\[0\].*bool"),
    ([np.zeros(1600, dtype=np.float32), "x"], r"audio\[1\] is a file path"),
    ([np.zeros(1600, dtype=np.float32), 3], r"audio\[1\] is of type int, not a clip"),
    ([np.zeros(1600, dtype=np.float32), None], r"audio\[1\] is of type NoneType, not a clip"),
])
def test_processor_refuses_unclear_arrays(tiny, audio, message):
    _, processor = tiny
    with pytest.raises(ValueError, match=message):
        features(processor, audio)


# ---------------------------------------------------------------------------------------------- model loading
def test_missing_model_folder_is_named(tmp_path):
    from llm_srt import LlmSrtConfig, LlmSrtForConditionalGeneration

    for path in (str(tmp_path / "nope"), "./no/such/model", tmp_path / "nope"):
        with pytest.raises(FileNotFoundError, match=f"model folder not found: {str(path)}"):
            LlmSrtForConditionalGeneration.from_pretrained(path)
        with pytest.raises(FileNotFoundError, match="model folder not found"):
            LlmSrtConfig.from_pretrained(path)


def test_truncated_weights_name_the_file(tiny, tmp_path):
    from llm_srt import LlmSrtForConditionalGeneration

    model, _ = tiny
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    for cut in (len(data) // 2, 40):
        weights.write_bytes(data[:cut])
        with pytest.raises(OSError, match=f"{weights}.*truncated or corrupt"):
            LlmSrtForConditionalGeneration.from_pretrained(tmp_path)


def test_truncated_adapter_weights_name_the_file(tiny, tmp_path):
    from transformers import WhisperModel

    from llm_srt import LlmSrtForConditionalGeneration

    model, _ = tiny
    WhisperModel(model.config.audio_config).save_pretrained(tmp_path / "whisper")
    model.language_model.save_pretrained(tmp_path / "llm")
    model.config.audio_model_name_or_path, previous_audio = str(tmp_path / "whisper"), model.config.audio_model_name_or_path
    model.config.text_model_name_or_path, previous_text = str(tmp_path / "llm"), model.config.text_model_name_or_path
    try:
        model.save_pretrained(tmp_path / "adapter", adapter_only=True)
    finally:
        model.config.audio_model_name_or_path, model.config.text_model_name_or_path = previous_audio, previous_text
    weights = tmp_path / "adapter" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(OSError, match=f"{weights}.*truncated or corrupt"):
        LlmSrtForConditionalGeneration.from_pretrained(tmp_path / "adapter")


@pytest.mark.parametrize("edit", [
    lambda config: [],
    lambda config: {**config, "text_config": 5},
    lambda config: {**config, "audio_config": "whisper"},
    lambda config: {**config, "num_queries": "eighty"},
    lambda config: {**config, "num_queries": -1},
    lambda config: {**config, "text_config": {**config["text_config"], "model_type": "no-such-model"}},
])
def test_corrupt_config_names_the_file(tiny, tmp_path, edit):
    from llm_srt import LlmSrtConfig, LlmSrtForConditionalGeneration

    model, _ = tiny
    model.config.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(edit(json.loads(config_file.read_text()))))
    for load in (LlmSrtConfig.from_pretrained, LlmSrtForConditionalGeneration.from_pretrained):
        with pytest.raises(ValueError, match=f"{config_file}: not a valid LLM-SRT config"):
            load(tmp_path)


def test_unparsable_config_names_the_file(tiny, tmp_path):
    from llm_srt import LlmSrtConfig

    model, _ = tiny
    model.config.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llm_srt", ')
    with pytest.raises(OSError, match=str(tmp_path / "config.json")):
        LlmSrtConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_beams": 0}, "num_beams must be a positive integer, got 0"),
    ({"num_beams": -2}, "num_beams must be a positive integer, got -2"),
    ({"num_beams": 2.5}, "num_beams must be a positive integer, got 2.5"),
    ({"num_return_sequences": 0}, "num_return_sequences"),
    ({"num_beams": 2, "num_return_sequences": 3}, "num_return_sequences.*3.*num_beams.*2"),
    ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
])
def test_bad_generation_arguments_are_refused(tiny, kwargs, message):
    from transformers import GenerationConfig

    from llm_srt.generation_llm_srt import check_generate_kwargs as _check_generate_kwargs

    model, _ = tiny
    _check_generate_kwargs({"num_beams": 1, "max_new_tokens": 6, "num_return_sequences": 1}, model.generation_config)
    _check_generate_kwargs({}, model.generation_config)  # the original's defaults are fine
    with pytest.raises(ValueError, match=message):
        _check_generate_kwargs(kwargs, model.generation_config)
    with pytest.raises(ValueError, match=message):  # the same through a generation_config object
        _check_generate_kwargs({"generation_config": GenerationConfig(**{**model.generation_config.to_dict(), **kwargs})},
                               model.generation_config)


def test_generate_refuses_num_beams_0(tiny, speech):
    model, processor = tiny
    batch = processor([speech], task="asr", src_lang="eng", sampling_rate=SR)
    with pytest.raises(ValueError, match="num_beams must be a positive integer, got 0"):
        model.generate(**batch, max_new_tokens=2, num_beams=0)


# ------------------------------------------------------------------------------------------- found in QA (round 2)
@pytest.mark.parametrize("scale", [32768.0, 1000.0, 1e300])
def test_float_samples_far_outside_unit_range_are_refused(speech, scale):
    # `pcm.astype(np.float32)` (int16 PCM cast without scaling) was used as is: loud clipped noise to the model.
    loud = speech.astype(np.float64) * scale
    with pytest.raises(AudioInputError, match=r"far outside \[-1, 1\].*divide by 32768"):
        load_audio(loud, sampling_rate=SR)
    with pytest.raises(AudioInputError, match=r"far outside \[-1, 1\]"):
        as_float_mono(torch.tensor(loud), "x")


def test_float_samples_a_little_over_full_scale_are_kept(speech):
    hot = speech / np.abs(speech).max() * 4.0  # +12 dBFS: clipped but real audio, not mis-scaled PCM
    np.testing.assert_allclose(load_audio(hot, sampling_rate=SR), hot.astype(np.float32))


def test_huge_integer_rate_is_refused_clearly(speech):
    # np.isfinite(2**70) raised a TypeError naming nothing
    with pytest.raises(AudioInputError, match="between 1000 and 384000"):
        check_sampling_rate(2**70, "x")
    with pytest.raises(AudioInputError, match="between 1000 and 384000"):
        load_audio(speech, sampling_rate=2**70)


def test_a_files_own_rate_gets_no_khz_hint(tmp_path):
    import soundfile

    path = tmp_path / "low.wav"
    soundfile.write(path, np.zeros(500, dtype=np.float32), 500)
    with pytest.raises(AudioInputError, match="got 500 Hz") as error:
        load_audio(str(path))
    assert "kHz" not in str(error.value)


def test_processor_takes_a_list_of_0d_tensors_as_one_clip(tiny, speech):
    # load_audio reads list(tensor) as samples; the processor took it as a batch of 0-D clips and refused each.
    _, processor = tiny
    as_list = list(torch.tensor(speech))
    expected = features(processor, speech)
    torch.testing.assert_close(features(processor, as_list), expected)
    np.testing.assert_array_equal(load_audio(as_list, sampling_rate=SR), speech.astype(np.float32))


# ------------------------------------------------------------------------------- FLAC without a length in its header
def test_a_flac_without_its_length_in_the_header_is_decoded(speech, tmp_path):
    """Streaming encoders leave STREAMINFO's total_samples at 0 (unknown): soundfile then reports 2**63-1 frames.
    Such a file is decoded (in blocks) and its true length counted, not refused as 576460752303424 s of audio."""
    import soundfile

    from llm_srt.audio_llm_srt import audio_file_info
    from llm_srt.testing import flac_without_length
    from llm_srt.training.data import DataError, RowChecker

    data = flac_without_length(speech)
    assert soundfile.info(io.BytesIO(data)).frames > 2**62  # what the header says: unknown
    path = tmp_path / "stream.flac"
    path.write_bytes(data)
    for source in (str(path), data, {"bytes": data}):
        audio = load_audio(source)
        assert len(audio) == len(speech) and np.allclose(audio, speech, atol=1e-3)
    info = audio_file_info(str(path))
    assert (info.frames, info.samplerate, info.channels) == (len(speech), 16000, 1)
    assert audio_file_info(io.BytesIO(data), max_frames=100).frames == 101  # counting stops past a limit
    # training's row check reads the true length: a 0.5 s clip is fine in a 2 s window, a 3 s one named in seconds
    check = RowChecker("train.jsonl", base_dir=str(tmp_path), max_seconds=2.0)
    check({"audio": "stream.flac", "src_lang": "eng", "transcript": "x"}, "line 1")
    (tmp_path / "long.flac").write_bytes(flac_without_length(np.tile(speech, 6)))
    with pytest.raises(DataError, match=r"long.flac lasts 3\.0 s, longer than the model's 2 s window"):
        check({"audio": "long.flac", "src_lang": "eng", "transcript": "x"}, "line 2")


def test_a_wav_whose_data_size_field_is_0_is_read_to_its_end_as_ffmpeg_reads_it(speech, tmp_path):
    """A writer that never came back to fill in the data chunk's size leaves 0 there; libsndfile then reads 0 frames
    and the clip was refused as "empty (0 samples)" although it holds the speech."""
    import soundfile

    from llm_srt.audio_llm_srt import audio_file_info

    buffer = io.BytesIO()
    soundfile.write(buffer, np.tile(speech, 3), 16000, format="WAV", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    size_at = data.index(b"data") + 4
    data[size_at:size_at + 4] = bytes(4)
    data = bytes(data)
    assert soundfile.info(io.BytesIO(data)).frames == 0  # what libsndfile reads
    path = tmp_path / "unfinished.wav"
    path.write_bytes(data)
    for source in (str(path), data):
        audio = load_audio(source)
        assert len(audio) == 3 * len(speech) and np.allclose(audio, np.tile(speech, 3), atol=1e-3)
    assert audio_file_info(str(path)).frames == 3 * len(speech)  # counted for the limits (server, row checks)
    empty = bytearray(buffer.getvalue()[:size_at + 4])  # a header and no audio at all: still empty
    empty[size_at:size_at + 4] = bytes(4)
    with pytest.raises(AudioInputError, match="empty"):
        load_audio(bytes(empty))


def test_config_refuses_a_qformer_head_count_that_does_not_divide_its_width():
    from llm_srt import LlmSrtConfig
    from llm_srt.testing import tiny_config

    config = tiny_config(400).to_dict()
    projector = config["projector_config"]
    with pytest.raises(ValueError, match=r"projector_config: num_attention_heads 5 does not divide its hidden_size "
                                         r"32"):
        LlmSrtConfig(**{**config, "projector_config": {**projector, "num_attention_heads": 5}})
    with pytest.raises(ValueError, match=r"num_queries must be a whole number >= 1, got 'eighty'"):
        LlmSrtConfig(**{**config, "num_queries": "eighty"})


def test_config_json_that_is_not_json_is_named_with_its_error(tmp_path):
    from llm_srt import LlmSrtConfig

    (tmp_path / "config.json").write_text('{"model_type": "llm_srt",\n "num_queries" 80}')
    with pytest.raises(OSError) as raised:
        LlmSrtConfig.from_pretrained(tmp_path)
    assert str(raised.value) == (f"{tmp_path / 'config.json'}: not valid JSON (Expecting ':' delimiter, line 2 "
                                 "column 16); undo the edit, or save or download the model again.")
