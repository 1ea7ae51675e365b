"""LLM-SRT configuration: Whisper encoder + Q-Former adapter + Qwen2.5 LLM; every shape, the released presets, and
the checks of a config folder."""

from __future__ import annotations

import copy
import json
import os
from typing import Any

from transformers import AutoConfig, PreTrainedConfig
from transformers.utils import logging

from .languages_llm_srt import MANDARIN_TAGS, recorded_directions, recorded_languages


try:
    from transformers.configuration_utils import SubConfigSpec
except ImportError:  # transformers < 5.20 (vLLM's pin): LlmSrtConfig.__post_init__ builds the sub-configs itself
    SubConfigSpec = None


logger = logging.get_logger(__name__)

# The pipeline task a saved model folder declares (config.custom_pipelines) and the pipeline registers.
PIPELINE_TASK = "speech-translation"

# Shapes of the released backbones, so a config can be built without downloading them (benchmarks, meta-device
# loading). When a model is assembled from real checkpoints, their own configs are used instead.
WHISPER_LARGE_V3_ENCODER = {
    "model_type": "whisper",
    "d_model": 1280,
    "encoder_layers": 32,
    "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "decoder_layers": 32,
    "decoder_attention_heads": 20,
    "decoder_ffn_dim": 5120,
    "num_mel_bins": 128,
    "max_source_positions": 1500,
    "vocab_size": 51866,
}
_QWEN25_COMMON = {
    "model_type": "qwen2",
    "hidden_act": "silu",
    "max_window_layers": 70,
    "rope_theta": 1000000.0,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
}
QWEN25_CONFIGS = {
    "3b": {**_QWEN25_COMMON, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
           "num_attention_heads": 16, "num_key_value_heads": 2, "vocab_size": 151936, "rms_norm_eps": 1e-6,
           "max_position_embeddings": 32768, "tie_word_embeddings": True},
    "7b": {**_QWEN25_COMMON, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
           "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "rms_norm_eps": 1e-6,
           "max_position_embeddings": 131072, "tie_word_embeddings": False},
    "32b": {**_QWEN25_COMMON, "hidden_size": 5120, "intermediate_size": 27648, "num_hidden_layers": 64,
            "num_attention_heads": 40, "num_key_value_heads": 8, "vocab_size": 152064, "rms_norm_eps": 1e-5,
            "max_position_embeddings": 131072, "tie_word_embeddings": False},
}
PRESETS = {
    size: {
        "audio_model_name_or_path": "openai/whisper-large-v3",
        "text_model_name_or_path": f"Qwen/Qwen2.5-{size.upper()}",
    }
    for size in QWEN25_CONFIGS
}

# The paper's LoRA (Table: r=8, alpha=32, dropout 0.05 on q_proj, v_proj).
DEFAULT_LORA_CONFIG = {"r": 8, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}


def projector_intermediate_size_for(llm_dim: int) -> int:
    """The original's MLP rule: <=1536 one linear layer (returns 0), <=2560 hidden 1536, larger hidden 2560."""
    if llm_dim <= 1536:
        return 0
    if llm_dim <= 2560:
        return 1536
    return 2560


def reference_near(folder: str | os.PathLike, reference: str) -> str:
    """A component reference of a saved config (e.g. `audio_model_name_or_path`): the folder of that name next to the
    model's `folder` when there is one, else the reference as given (a Hub id or another path)."""
    local = os.path.join(os.fspath(folder), str(reference))
    return local if not os.path.isabs(str(reference)) and os.path.isdir(local) else str(reference)


def check_model_location(path: str | os.PathLike) -> None:
    """Refuse a local model path that does not exist with `model folder not found: <path>`.

    Without this, a mistyped folder reaches the Hub client, which answers "Repo id must be in the form ...". A
    `PathLike`, or a string that cannot be a Hub repo id (absolute, `./x`, `a/b/c`, ...), is a local path.

    Raises:
        FileNotFoundError: the folder does not exist.
        NotADirectoryError: the path is a file, not a model folder.
        OSError: its `config.json` is not JSON (`read_config_json`).
    """
    text = os.fspath(path)
    if os.path.isdir(text):
        read_config_json(text)
        return
    if os.path.isfile(text):
        raise NotADirectoryError(f"model folder expected, got a file: {text}")
    if not isinstance(path, os.PathLike):
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(text)
            return  # `name` or `namespace/name`: left to the Hub
        except HFValidationError:
            pass
    raise FileNotFoundError(f"model folder not found: {text}")


def read_config_json(folder: str | os.PathLike) -> dict | None:
    """A local model folder's `config.json` as a dict; None when `folder` is no local folder or has no config.json.

    Raises:
        OSError: the file is not JSON (one line naming the file, the JSON error and its line and column).
        ValueError: it is JSON but not an object.
    """
    path = os.path.join(os.fspath(folder), "config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except UnicodeDecodeError as error:
        raise OSError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); undo the edit, or save or "
                      "download the model again.") from None
    except json.JSONDecodeError as error:
        raise OSError(f"{path}: not valid JSON ({error.msg}, line {error.lineno} column {error.colno}); undo the "
                      "edit, or save or download the model again.") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a valid LLM-SRT config (expected a JSON object, got "
                         f"{type(config).__name__}); save or download it again.")
    return config


def _check_positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")


# Sizes of each sub-model that must be whole numbers >= 1 (a bad value fails deep in torch otherwise).
_SUB_CONFIG_SIZES = {
    "audio_config": ("d_model", "encoder_layers", "encoder_attention_heads", "num_mel_bins", "max_source_positions"),
    "projector_config": ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"),
    "text_config": ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size"),
}


class LlmSrtConfig(PreTrainedConfig):
    r"""Configuration of [`LlmSrtForConditionalGeneration`].

    Args:
        audio_config (`dict` or `WhisperConfig`): the Whisper model whose encoder hears the audio (128 mel bins for
            Whisper-large-v3).
        projector_config (`dict` or `Blip2QFormerConfig`): the Q-Former; hidden 768, 8 layers, its
            `encoder_hidden_size` is set to the encoder width.
        text_config (`dict` or `Qwen2Config`): the LLM.
        num_queries (`int`, defaults to 80): learned queries, i.e. audio embeddings given to the LLM per 30 s.
        projector_intermediate_size (`int`, *optional*): hidden width of the MLP after the Q-Former; 0 means a single
            linear layer. Derived from the LLM width as the original does when not given.
        projector_layer_norm_eps (`float`, defaults to 1e-5): epsilon of the LayerNorm closing the projector.
        audio_token_id (`int`, *optional*): id of the placeholder the processor writes in the 80 audio slots. Its
            embedding is replaced by the audio embeddings, so it must be an id the tokenizer never emits; defaults
            to the last row of the LLM's embedding matrix (Qwen2.5 pads its matrix beyond the tokenizer).
        mandarin_tag (`str`, defaults to `"zho"`): how Mandarin is tagged in prompts (`zho` or `cmn`), as trained.
        lora_config (`dict`, *optional*): when set, LoRA (peft) is applied to the LLM with these arguments.
        audio_model_name_or_path / text_model_name_or_path (`str`, *optional*): where the encoder and LLM weights come
            from; required for an adapter-only checkpoint.
        adapter_only (`bool`, defaults to False): the saved weights hold only the trained parts (projector, LoRA);
            the encoder and LLM are loaded from the two references above.
        trained_languages (`list[str]`, *optional*): the languages of the model's training data (sources of every
            stage, targets of the translation stages), as ISO 639-3 codes; recorded by `trainer_scripts/train.py`
            (the converter records the paper's 15). None: not recorded, all 15 assumed.
        trained_directions (`list[str]`, *optional*): the translation directions of its training data (`"eng-deu"`);
            empty after recognition (ASR) training only. None: not recorded, all 210 assumed.
        language_detector_languages (`list[str]`, *optional*): set when Whisper's decoder (language detection for
            `src_lang="auto"`) is part of the model: the Whisper language codes of its output rows. When None, the
            decoder is loaded from `audio_model_name_or_path` on first use.
    """

    model_type = "llm_srt"
    # sub-config -> (default model type, default arguments)
    _sub_config_defaults = {
        "audio_config": ("whisper", WHISPER_LARGE_V3_ENCODER),
        "projector_config": ("blip_2_qformer", {"num_hidden_layers": 8, "encoder_hidden_size": 1280}),
        "text_config": ("qwen2", QWEN25_CONFIGS["3b"]),
    }
    if SubConfigSpec is not None:
        sub_configs_defaults = {
            key: SubConfigSpec(config_class=AutoConfig, model_type=model_type_, init_kwargs=kwargs)
            for key, (model_type_, kwargs) in _sub_config_defaults.items()
        }
    else:
        sub_configs = {key: AutoConfig for key in _sub_config_defaults}

    audio_config: dict | PreTrainedConfig | None = None
    projector_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    num_queries: int = 80
    projector_intermediate_size: int | None = None
    projector_layer_norm_eps: float = 1e-5
    audio_token_id: int | None = None
    mandarin_tag: str = "zho"
    lora_config: dict | None = None
    audio_model_name_or_path: str | None = None
    text_model_name_or_path: str | None = None
    adapter_only: bool = False
    language_detector_languages: list[str] | None = None
    trained_languages: list[str] | None = None
    trained_directions: list[str] | None = None
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if SubConfigSpec is None:  # what transformers >= 5.20 does with sub_configs_defaults
            from transformers.models.auto.configuration_auto import CONFIG_MAPPING

            for key, (default_type, defaults) in self._sub_config_defaults.items():
                value = getattr(self, key)
                if not isinstance(value, PreTrainedConfig):
                    value = dict(defaults if value is None else value)
                    setattr(self, key, CONFIG_MAPPING[value.pop("model_type", default_type)](**value))
        super().__post_init__(**kwargs)
        for key, names in _SUB_CONFIG_SIZES.items():
            for name in names:
                if getattr(getattr(self, key), name, None) is not None:
                    _check_positive_int(getattr(getattr(self, key), name), f"{key}: {name}")
        for key, width, heads in (("audio_config", "d_model", "encoder_attention_heads"),
                                  ("projector_config", "hidden_size", "num_attention_heads"),
                                  ("text_config", "hidden_size", "num_attention_heads")):
            sub = getattr(self, key)
            if getattr(sub, width) % getattr(sub, heads):
                raise ValueError(f"{key}: {heads} {getattr(sub, heads)} does not divide its {width} "
                                 f"{getattr(sub, width)} (each head takes an equal share of the width).")
        _check_positive_int(self.num_queries, "num_queries")
        encoder_width = self.audio_config.d_model
        if self.projector_config.encoder_hidden_size != encoder_width:
            self.projector_config.encoder_hidden_size = encoder_width
        if self.projector_intermediate_size is None:
            self.projector_intermediate_size = projector_intermediate_size_for(self.text_config.hidden_size)
        if self.audio_token_id is None:
            self.audio_token_id = self.text_config.vocab_size - 1
        if not 0 <= self.audio_token_id < self.text_config.vocab_size:
            raise ValueError(
                f"audio_token_id={self.audio_token_id} is outside the LLM vocabulary (size {self.text_config.vocab_size})."
            )
        if self.mandarin_tag not in MANDARIN_TAGS:
            raise ValueError(f"mandarin_tag must be one of {MANDARIN_TAGS}, got {self.mandarin_tag!r}.")
        if self.lora_config is not None:
            self.lora_config = {**DEFAULT_LORA_CONFIG, **self.lora_config}
        if self.trained_languages is not None:
            self.trained_languages = recorded_languages(self.trained_languages, "trained_languages")
        if self.trained_directions is not None:
            self.trained_directions = recorded_directions(self.trained_directions)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "LlmSrtConfig":
        """Load a saved config; a missing folder and a config.json that parses but is not an LLM-SRT config (wrong
        types, bad values) are errors naming the folder or the file."""
        check_model_location(pretrained_model_name_or_path)
        read_config_json(pretrained_model_name_or_path)  # not JSON: named with its error, line and column
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except OSError:
            raise  # missing or unparsable files: transformers names them
        except (TypeError, ValueError, AttributeError, KeyError) as error:
            path = os.fspath(pretrained_model_name_or_path)
            where = os.path.join(path, "config.json") if os.path.isdir(path) else f"config.json of {path}"
            raise ValueError(
                f"{where}: not a valid LLM-SRT config ({type(error).__name__}: {error}); save or download it again."
            ) from error

    @property
    def chunk_length_s(self) -> float:
        """Longest audio one window holds, in seconds (30 for Whisper-large-v3)."""
        # Whisper: 2 mel frames per encoder position, 100 mel frames per second.
        return self.audio_config.max_source_positions * 2 / 100

    @classmethod
    def from_preset(cls, size: str, **kwargs) -> "LlmSrtConfig":
        """Config of the released shapes: `size` is "3b", "7b" or "32b" (Whisper-large-v3 + Qwen2.5-<size>)."""
        key = size.lower().removeprefix("llm-srt-")
        if key not in QWEN25_CONFIGS:
            raise ValueError(f"Unknown preset {size!r}; choose one of {sorted(QWEN25_CONFIGS)}.")
        return cls(
            audio_config=copy.deepcopy(WHISPER_LARGE_V3_ENCODER),
            text_config=copy.deepcopy(QWEN25_CONFIGS[key]),
            **{**PRESETS[key], **kwargs},
        )


LlmSrtConfig.register_for_auto_class()

__all__ = ["LlmSrtConfig", "PIPELINE_TASK", "check_model_location", "read_config_json", "reference_near"]
