"""LLM-SRT: a frozen Whisper encoder, a Q-Former adapter with learned queries, and a (frozen) Qwen2.5 LLM.

The audio of each 30 s window is compressed by the Q-Former into `num_queries` (80) embeddings that are placed in the
LLM's input sequence in front of the prompt: `[80 audio slots][prompt][answer][eos]`, as in the original
implementation (SLAM-LLM `examples/st_covost2`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    Blip2QFormerModel,
    GenerationConfig,
    PreTrainedModel,
    WhisperConfig,
)
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.whisper.modeling_whisper import WhisperEncoder
from transformers.utils import cached_file, logging

from .configuration_llm_srt import PIPELINE_TASK, DEFAULT_LORA_CONFIG, LlmSrtConfig, check_model_location
from .language_detection_llm_srt import LanguageDetectionMixin, LlmSrtLanguageDetector
from .generation_llm_srt import LlmSrtGenerationMixin
from .quantization_llm_srt import as_quantization_config, check_requested_quantization, use_few_rows_linear


logger = logging.get_logger(__name__)

ADAPTER_WEIGHTS_NAME = "model.safetensors"
# from_pretrained arguments that say where and how to fetch files, passed on to every file we read ourselves.
HUB_KWARGS = ("cache_dir", "revision", "token", "local_files_only")

# The original's decoding (SPEC "Inference"): beam 5, no 5-gram repeats among generated tokens, 400 new tokens.
ORIGINAL_GENERATION_KWARGS = {
    "num_beams": 5,
    "do_sample": False,
    "max_new_tokens": 400,
    "min_length": 1,
    "repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 5,
}


def is_adapter_key(name: str) -> bool:
    """Whether a state-dict key belongs to the trained parts that an adapter-only checkpoint holds."""
    return name.startswith("projector.") or ".lora_" in name


def state_dict_mismatches(
    own: dict[str, torch.Tensor], given: dict[str, torch.Tensor], required: set[str]
) -> list[str]:
    """What stops `given` from loading into a model whose (loadable) state is `own`: `required` keys it does not
    fill, keys with no place in `own`, and shape mismatches. Empty when it fits."""
    missing = sorted(required - set(given))
    unknown = sorted(set(given) - set(own))
    wrong = sorted(k for k in set(given) & set(own) if tuple(given[k].shape) != tuple(own[k].shape))
    problems = []
    if missing:
        problems.append(f"parameters not filled: {missing}")
    if unknown:
        problems.append(f"keys with no place in the model: {unknown}")
    if wrong:
        problems.append("wrong shapes: " + ", ".join(
            f"{k} {tuple(given[k].shape)} (model {tuple(own[k].shape)})" for k in wrong))
    return problems


def unreadable_safetensors(folder: str) -> list[str]:
    """The `.safetensors` files in `folder` whose header cannot be read (truncated or corrupt)."""
    from safetensors import SafetensorError, safe_open

    bad = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            path = os.path.join(folder, name)
            try:
                with safe_open(path, framework="pt"):
                    pass
            except (SafetensorError, OSError):
                bad.append(path)
    return bad


def corrupt_weights_error(where: str, error: Exception) -> OSError:
    """The error to raise for weights safetensors cannot read: names the file (the library's message does not)."""
    return OSError(
        f"{where} is truncated or corrupt: its weights cannot be read ({error}); save or download it again."
    )


PIPELINE_MODULE = "pipeline_llm_srt"


def _save_pipeline_code(folder: str | os.PathLike) -> None:
    """Copy the pipeline module and the modules it imports into a saved folder, so `pipeline(model=folder,
    trust_remote_code=True)` loads it where llm_srt is not installed. A model itself loaded as remote code (the
    Hub's module cache holds only what the model needs) has no pipeline file beside it: then none is copied."""
    from transformers.dynamic_module_utils import get_relative_import_files

    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{PIPELINE_MODULE}.py")
    if not os.path.isfile(source):
        logger.warning(f"{PIPELINE_MODULE}.py is not beside {__file__}: the saved folder carries no pipeline code "
                       "(save from an installed llm_srt to include it).")
        return
    for path in [source, *get_relative_import_files(source)]:
        shutil.copy(path, os.path.join(os.fspath(folder), os.path.basename(path)))


@dataclass
class LlmSrtCausalLMOutput(CausalLMOutputWithPast):
    """Causal LM output plus the projector's audio embeddings of shape `(batch, num_queries, llm_hidden)`."""

    audio_embeds: torch.FloatTensor | None = None


MIN_TRANSFORMERS_FOR_MODEL = "5.24"


def check_transformers_cache_api() -> None:
    """The model passes and returns the LLM's KV cache as `cache` (transformers 5.24 renamed `past_key_values` so).
    An older transformers would take the argument silently and fail on the first answer: refuse it up front, by name."""
    if "cache" not in CausalLMOutputWithPast.__dataclass_fields__:
        import transformers

        raise ImportError(
            f"LlmSrtForConditionalGeneration needs transformers >= {MIN_TRANSFORMERS_FOR_MODEL} (its LLMs' `cache` "
            f"argument); this Python has transformers {transformers.__version__}. vLLM's environment pins an older "
            "one: there, decode with the vLLM engine (`--engine vllm`), or run the transformers engine from the main "
            "environment."
        )


class LlmSrtProjector(nn.Module):
    """The original `EncoderProjectorQFormer`: learned queries read the encoder frames through a BLIP-2 Q-Former,
    then an MLP (sized by the LLM width) and a LayerNorm map them to the LLM's embedding space."""

    def __init__(self, config: LlmSrtConfig):
        super().__init__()
        qformer_config = config.projector_config
        llm_dim = config.text_config.hidden_size
        self.query = nn.Parameter(torch.zeros(1, config.num_queries, qformer_config.hidden_size))
        self.qformer = Blip2QFormerModel(qformer_config)
        # Attribute names are the original's, so its checkpoints map key for key.
        if config.projector_intermediate_size == 0:
            self.linear = nn.Linear(qformer_config.hidden_size, llm_dim)
        else:
            self.linear1 = nn.Linear(qformer_config.hidden_size, config.projector_intermediate_size)
            self.relu = nn.ReLU()
            self.linear2 = nn.Linear(config.projector_intermediate_size, llm_dim)
        self.norm = nn.LayerNorm(llm_dim, eps=config.projector_layer_norm_eps)

    def forward(self, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        query = self.query.expand(encoder_hidden_states.shape[0], -1, -1)
        # The original passes an all-ones encoder mask (audio is always padded to the full window): same as None.
        hidden = self.qformer(query_embeds=query, encoder_hidden_states=encoder_hidden_states).last_hidden_state
        if hasattr(self, "linear"):
            hidden = self.linear(hidden)
        else:
            hidden = self.linear2(self.relu(self.linear1(hidden)))
        return self.norm(hidden)


class LlmSrtPreTrainedModel(PreTrainedModel):
    config: LlmSrtConfig
    config_class = LlmSrtConfig
    base_model_prefix = "llm_srt"
    main_input_name = "input_ids"
    input_modalities = ("audio", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["WhisperEncoderLayer", "WhisperDecoderLayer", "Blip2QFormerLayer", "Qwen2DecoderLayer"]
    _skip_keys_device_placement = ["cache", "past_key_values"]
    _supports_sdpa = True
    _supports_flash_attn = False  # the Q-Former has no flash-attention path
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, LlmSrtProjector):
            module.query.normal_(mean=0.0, std=1.0)  # as the original


def load_whisper_encoder(name_or_path: str, **kwargs) -> WhisperEncoder:
    """Load only the encoder of a Whisper checkpoint (full model, `WhisperModel`, or an encoder-only save)."""
    return WhisperEncoder.from_pretrained(
        name_or_path, key_mapping={r"^model\.encoder\.": "", r"^encoder\.": ""}, **kwargs
    )


class LlmSrtForConditionalGeneration(LlmSrtPreTrainedModel, LlmSrtGenerationMixin, LanguageDetectionMixin):
    """LLM-SRT for ASR, speech-aided text translation (SMT: the audio and its transcript) and speech translation
    (SRT), selected by the processor's prompts.

    `forward` computes the LLM's loss on the answer tokens (labels are -100 elsewhere); `generate` decodes with the
    original's settings by default (beam 5, `no_repeat_ngram_size=5`, 400 new tokens) and returns only new tokens.
    """

    def __init__(
        self,
        config: LlmSrtConfig,
        audio_tower: WhisperEncoder | None = None,
        language_model: PreTrainedModel | None = None,
    ):
        check_transformers_cache_api()
        super().__init__(config)
        self.audio_tower = audio_tower if audio_tower is not None else WhisperEncoder(config.audio_config)
        self.projector = LlmSrtProjector(config)
        self.language_model = (
            language_model if language_model is not None else AutoModelForCausalLM.from_config(config.text_config)
        )
        use_few_rows_linear(self.language_model)  # decoding's few-row bf16 products on the CPU's fast kernels
        if config.lora_config is not None:
            self._inject_lora(config.lora_config)
        if config.language_detector_languages:  # Whisper's decoder saved with the model, for src_lang="auto"
            self.language_detector = LlmSrtLanguageDetector(config.audio_config, config.language_detector_languages)
            self.language_detector.requires_grad_(False)
        self.post_init()
        self.generation_config = self.default_generation_config(config)
        self.set_trainable()

    # ----------------------------------------------------------------------------------------------- construction
    @staticmethod
    def default_generation_config(config: LlmSrtConfig) -> GenerationConfig:
        """The original's decoding settings with the LLM's special ids (pad falls back to eos, as in Qwen2.5)."""
        text = config.text_config
        eos = text.eos_token_id
        pad = getattr(text, "pad_token_id", None)
        return GenerationConfig(
            **ORIGINAL_GENERATION_KWARGS,
            eos_token_id=eos,
            pad_token_id=pad if pad is not None else (eos[0] if isinstance(eos, list) else eos),
            bos_token_id=getattr(text, "bos_token_id", None),
        )

    @classmethod
    def from_components(
        cls,
        audio_model_name_or_path: str,
        text_model_name_or_path: str,
        config: LlmSrtConfig | None = None,
        dtype: torch.dtype | str | None = None,
        llm_kwargs: dict | None = None,
        **config_kwargs,
    ) -> "LlmSrtForConditionalGeneration":
        """Assemble a model from a Whisper checkpoint and a causal LLM (Hub ids or folders) with a new projector.

        This is what the first curriculum stage starts from. `config_kwargs` go to [`LlmSrtConfig`] (for example
        `num_queries`, `mandarin_tag`, `lora_config`); `llm_kwargs` go to the LLM's `from_pretrained` only (e.g.
        `device_map`, `quantization_config`).
        """
        load_kwargs = {"dtype": dtype} if dtype is not None else {}
        audio_tower = load_whisper_encoder(audio_model_name_or_path, **load_kwargs)
        llm_kwargs = dict(llm_kwargs or {})
        if llm_kwargs.get("quantization_config") is not None:
            llm_kwargs["quantization_config"] = cls.prepare_quantization(llm_kwargs["quantization_config"])
        language_model = AutoModelForCausalLM.from_pretrained(text_model_name_or_path, **load_kwargs, **llm_kwargs)
        if config is None:
            config = LlmSrtConfig(
                audio_config=audio_tower.config.to_dict(),
                text_config=language_model.config.to_dict(),
                audio_model_name_or_path=str(audio_model_name_or_path),
                text_model_name_or_path=str(text_model_name_or_path),
                **config_kwargs,
            )
        else:
            cls._check_component_shapes(config, audio_tower.config, language_model.config)
        model = cls(config, audio_tower=audio_tower, language_model=language_model)
        if config.language_detector_languages:  # an adapter-only save: the detector comes from the Whisper checkpoint
            model.load_language_detector(audio_model_name_or_path, save_with_model=True)
        if dtype is not None:
            model.projector.to(dtype=getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        if llm_kwargs.get("device_map") is not None:  # the LLM is placed; encoder and projector join its first device
            first = language_model.get_input_embeddings().weight.device
            model.audio_tower.to(first)
            model.projector.to(first)
        return model

    @staticmethod
    def _check_component_shapes(config: LlmSrtConfig, audio: WhisperConfig, text) -> None:
        for name, ours, theirs in [
            ("encoder width (audio_config.d_model)", config.audio_config.d_model, audio.d_model),
            ("mel bins (audio_config.num_mel_bins)", config.audio_config.num_mel_bins, audio.num_mel_bins),
            ("LLM width (text_config.hidden_size)", config.text_config.hidden_size, text.hidden_size),
            ("LLM vocabulary (text_config.vocab_size)", config.text_config.vocab_size, text.vocab_size),
        ]:
            if ours != theirs:
                raise ValueError(f"The saved config's {name} is {ours} but the loaded component has {theirs}.")

    @staticmethod
    def prepare_quantization(quantization_config):
        """The quantization to load with: "int8"/"int4" (or an `LlmSrtQuantizationConfig`) quantize the LLM's weights
        for the CPU's kernels; a bitsandbytes config is checked to run here (a CUDA GPU) and kept off the encoder
        and projector (they stay bf16).

        Raises a clear error on a machine without a CUDA GPU or without bitsandbytes, instead of failing deep
        inside the loader.
        """
        quantization_config = as_quantization_config(quantization_config)
        if getattr(quantization_config, "quant_method", None) != "bitsandbytes":
            return quantization_config
        import importlib.util

        if not torch.cuda.is_available():
            raise ValueError(
                "8-bit/4-bit loading (bitsandbytes) needs a CUDA GPU and this machine has none; on CPU load with "
                "quantization_config=\"int8\" or \"int4\" (llm_srt's CPU kernels), or dtype=torch.bfloat16."
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError("8-bit/4-bit loading needs bitsandbytes: pip install bitsandbytes")
        skip = list(quantization_config.llm_int8_skip_modules or [])
        quantization_config.llm_int8_skip_modules = skip + [m for m in ("audio_tower", "projector", "lm_head")
                                                            if m not in skip]
        return quantization_config

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Load a saved model; an adapter-only save loads its encoder and LLM from the references in its config.

        Quantized LLM weights: on a CPU `quantization_config="int8"` or `"int4"` (an `LlmSrtQuantizationConfig`;
        a folder saved so loads quantized again); on small GPUs `device_map="auto"`, `dtype=torch.bfloat16`, and
        `quantization_config=BitsAndBytesConfig(load_in_8bit=True)` (or 4-bit). Both quantize the LLM only.
        """
        check_model_location(pretrained_model_name_or_path)
        if kwargs.get("quantization_config") is not None:
            kwargs["quantization_config"] = cls.prepare_quantization(kwargs["quantization_config"])
        config = kwargs.pop("config", None)
        if not isinstance(config, LlmSrtConfig):
            config_kwargs = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
            config = LlmSrtConfig.from_pretrained(pretrained_model_name_or_path, **config_kwargs)
        check_requested_quantization(config, kwargs.get("quantization_config"), pretrained_model_name_or_path)
        if config.adapter_only:
            return cls._from_adapter_checkpoint(pretrained_model_name_or_path, config, **kwargs)
        from safetensors import SafetensorError

        try:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, config=config, **kwargs)
        except SafetensorError as error:
            path = os.fspath(pretrained_model_name_or_path)
            bad = unreadable_safetensors(path) if os.path.isdir(path) else []
            raise corrupt_weights_error(", ".join(bad) or f"the weights of {path}", error) from error

    @classmethod
    def _from_adapter_checkpoint(cls, path, config: LlmSrtConfig, **kwargs) -> "LlmSrtForConditionalGeneration":
        from safetensors.torch import load_file

        hub_kwargs = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
        missing_refs = [
            name for name in ("audio_model_name_or_path", "text_model_name_or_path") if not getattr(config, name)
        ]
        if missing_refs:
            raise ValueError(f"{path} is an adapter-only checkpoint but its config lacks {', '.join(missing_refs)}.")
        refs = {}
        for name in ("audio_model_name_or_path", "text_model_name_or_path"):
            ref = getattr(config, name)
            # A relative folder is taken relative to the checkpoint folder, so a folder and its parts can move together.
            local = os.path.join(path, ref) if os.path.isdir(str(path)) else None
            refs[name] = local if local is not None and os.path.isdir(local) else ref
        lora_config, config.lora_config = config.lora_config, None
        llm_kwargs = {k: kwargs[k] for k in ("device_map", "quantization_config") if kwargs.get(k) is not None}
        model = cls.from_components(
            refs["audio_model_name_or_path"], refs["text_model_name_or_path"], config=config, dtype=kwargs.get("dtype"),
            llm_kwargs=llm_kwargs,
        )
        if lora_config is not None:
            model.enable_lora(**lora_config)
        from safetensors import SafetensorError

        weights_file = cached_file(path, ADAPTER_WEIGHTS_NAME, **hub_kwargs)
        try:
            state_dict = load_file(weights_file)
        except SafetensorError as error:
            raise corrupt_weights_error(weights_file, error) from error
        model.load_adapter_state_dict(state_dict, source=weights_file)
        try:
            model.generation_config = GenerationConfig.from_pretrained(path, **hub_kwargs)
        except OSError:
            pass  # no generation_config.json: keep the original decoding defaults
        model.config.adapter_only = True
        model.eval()
        return model

    def load_adapter_state_dict(self, state_dict: dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Load projector (and LoRA) weights strictly: every adapter parameter must be filled, nothing else given."""
        own = {k: v for k, v in self.state_dict().items() if is_adapter_key(k)}
        problems = state_dict_mismatches(own, state_dict, required=set(own))
        if problems:
            raise ValueError(f"Cannot load adapter weights from {source}: " + "; ".join(problems))
        self.load_state_dict(state_dict, strict=False)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, adapter_only: bool | None = None, **kwargs):
        """Save the model; with `adapter_only=True` only the projector (and LoRA) weights are written, and the
        encoder and LLM are referenced by `config.audio_model_name_or_path` / `config.text_model_name_or_path`."""
        adapter_only = self.config.adapter_only if adapter_only is None else adapter_only
        # Besides AutoModel (registered below), the closest fitting task class loads it too.
        self.config.auto_map = {
            **(getattr(self.config, "auto_map", None) or {}),
            "AutoModelForSpeechSeq2Seq": f"{type(self).__module__.split('.')[-1]}.{type(self).__name__}",
        }
        # `pipeline("speech-translation", model=folder, trust_remote_code=True)` finds its class here; the pipeline's
        # code is copied beside the model's (`_save_pipeline_code`): this module does not import it.
        self.config.custom_pipelines = {
            PIPELINE_TASK: {
                "impl": f"{PIPELINE_MODULE}.SpeechTranslationPipeline",
                "pt": ["AutoModelForSpeechSeq2Seq"],
                "type": "multimodal",
            }
        }
        if adapter_only:
            missing = [n for n in ("audio_model_name_or_path", "text_model_name_or_path")
                       if not getattr(self.config, n)]
            if missing:
                raise ValueError("An adapter-only save needs the encoder and LLM references; set "
                                 f"config.{' and config.'.join(missing)}.")
            kwargs["state_dict"] = {k: v for k, v in self.state_dict().items() if is_adapter_key(k)}
        previous, self.config.adapter_only = self.config.adapter_only, adapter_only
        try:
            result = super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.config.adapter_only = previous
        if kwargs.get("is_main_process", True):
            _save_pipeline_code(save_directory)
        return result

    # ------------------------------------------------------------------------------------------ training controls
    def _inject_lora(self, lora_kwargs: dict) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        inject_adapter_in_model(LoraConfig(bias="none", **lora_kwargs), self.language_model)

    def enable_lora(self, **lora_kwargs) -> None:
        """Add LoRA to the LLM (defaults: the paper's r=8, alpha=32, dropout 0.05 on q_proj, v_proj)."""
        if self.config.lora_config is not None:
            raise ValueError(f"LoRA is already enabled on this model: {self.config.lora_config}.")
        self.config.lora_config = {**DEFAULT_LORA_CONFIG, **lora_kwargs}
        self._inject_lora(self.config.lora_config)
        self.language_model.to(self.projector.norm.weight.device)
        self.set_trainable()

    def set_trainable(
        self,
        projector: bool = True,
        audio_tower: bool = False,
        language_model: bool = False,
        lora: bool = True,
    ) -> None:
        """Choose which parts train. The default (projector, plus LoRA when present) is every curriculum stage's;
        the paper trains LoRA only in the SRT stage (`lora=False` before it)."""
        for part, flag in ((self.audio_tower, audio_tower), (self.projector, projector)):
            part.requires_grad_(flag)
        for name, param in self.language_model.named_parameters():
            param.requires_grad_(lora if ".lora_" in name else language_model)

    # ------------------------------------------------------------------------------------------------- embeddings
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def get_audio_features(
        self, input_features: torch.FloatTensor, return_encoder_states: bool = False
    ) -> torch.FloatTensor | tuple[torch.FloatTensor, torch.FloatTensor]:
        """Log-mel features `(batch, mel_bins, frames)` -> audio embeddings `(batch, num_queries, llm_hidden)`.

        With `return_encoder_states`, returns `(audio_embeds, encoder_hidden_states)`: the encoder output serves
        [`detect_language`] too, so the encoder runs once."""
        expected = (self.config.audio_config.num_mel_bins, self.config.audio_config.max_source_positions * 2)
        if input_features.dim() != 3 or tuple(input_features.shape[1:]) != expected:
            raise ValueError(
                f"input_features must have shape (batch, {expected[0]}, {expected[1]}) (audio padded to "
                f"{self.config.chunk_length_s:g} s), got {tuple(input_features.shape)}."
            )
        input_features = input_features.to(dtype=self.audio_tower.conv1.weight.dtype)
        encoder_states = self.audio_tower(input_features).last_hidden_state
        audio_embeds = self.projector(encoder_states.to(self.projector.query.dtype))
        return (audio_embeds, encoder_states) if return_encoder_states else audio_embeds

    def embed_inputs(
        self,
        input_ids: torch.LongTensor,
        input_features: torch.FloatTensor | None = None,
        audio_embeds: torch.FloatTensor | None = None,
    ) -> tuple[torch.FloatTensor, torch.FloatTensor | None]:
        """Token embeddings with the audio embeddings placed at the audio slots (`config.audio_token_id`).

        The audio comes as `input_features` (encoded here) or as `audio_embeds` from [`get_audio_features`], which
        lets one encoding serve several prompts (e.g. one audio translated into several languages).
        """
        if input_features is not None and audio_embeds is not None:
            raise ValueError("Pass input_features or audio_embeds, not both.")
        audio_mask = input_ids == self.config.audio_token_id
        # As the original: the placeholder is looked up as id 0, then its embedding is replaced by the audio.
        inputs_embeds = self.get_input_embeddings()(input_ids.masked_fill(audio_mask, 0))
        if input_features is None and audio_embeds is None:
            if audio_mask.any():
                raise ValueError("input_ids contain audio slots but no input_features were given.")
            return inputs_embeds, None
        audio_rows = (input_features if input_features is not None else audio_embeds).shape[0]
        if audio_rows != input_ids.shape[0]:
            raise ValueError(
                f"Batch sizes differ: {'input_features' if input_features is not None else 'audio_embeds'} has "
                f"{audio_rows} rows, input_ids {input_ids.shape[0]}."
            )
        slots_per_row = audio_mask.sum(dim=-1)
        if (slots_per_row != self.config.num_queries).any():
            raise ValueError(
                f"Every row of input_ids must hold exactly {self.config.num_queries} audio slots "
                f"(id {self.config.audio_token_id}), got {slots_per_row.tolist()}."
            )
        if audio_embeds is None:
            audio_embeds = self.get_audio_features(input_features)
        audio_embeds = audio_embeds.to(inputs_embeds.dtype)
        inputs_embeds = inputs_embeds.masked_scatter(audio_mask.unsqueeze(-1), audio_embeds)
        return inputs_embeds, audio_embeds

    # ---------------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        input_features: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.FloatTensor | None = None,
        audio_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> LlmSrtCausalLMOutput:
        r"""
        input_features (`torch.FloatTensor` of shape `(batch, mel_bins, frames)`, *optional*):
            Log-mel features of the audio, padded to the encoder window; absent for SMT from text alone (outside what the models learn; the processor warns).
        audio_embeds (`torch.FloatTensor` of shape `(batch, num_queries, llm_hidden)`, *optional*):
            Precomputed [`get_audio_features`] output, instead of `input_features`.
        labels (`torch.LongTensor` of shape `(batch, sequence_length)`, *optional*):
            Targets aligned with `input_ids`; -100 over audio slots, prompt and padding. The loss is the LLM's
            shifted cross-entropy over the other positions (answer tokens and eos).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids and inputs_embeds.")
        continuing = cache is not None and cache.get_seq_length() > 0
        if inputs_embeds is None and continuing:
            # Tokens after a cached prefix (generate's decode steps) are ordinary tokens, as in the original: audio
            # slots exist only in the prompt, so a generated id equal to the placeholder is never taken for one.
            if input_features is not None or audio_embeds is not None:
                raise ValueError("Audio goes with the prompt, not with tokens that continue a cached sequence.")
            inputs_embeds = self.get_input_embeddings()(input_ids)
        elif inputs_embeds is None:
            inputs_embeds, audio_embeds = self.embed_inputs(input_ids, input_features, audio_embeds)
        elif input_features is not None or audio_embeds is not None:
            raise ValueError("inputs_embeds already hold the audio: do not pass input_features or audio_embeds too.")
        if labels is not None and labels.shape != inputs_embeds.shape[:2]:
            raise ValueError(f"labels shape {tuple(labels.shape)} differs from the input's {tuple(inputs_embeds.shape[:2])}.")
        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
        return LlmSrtCausalLMOutput(
            loss=outputs.loss,
            logits=outputs.logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            audio_embeds=audio_embeds,
        )


LlmSrtForConditionalGeneration.register_for_auto_class("AutoModel")

__all__ = ["LlmSrtPreTrainedModel", "LlmSrtForConditionalGeneration", "LlmSrtProjector", "is_adapter_key",
           "state_dict_mismatches"]
