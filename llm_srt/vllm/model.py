"""LLM-SRT as a vLLM model: vLLM's Whisper encoder, BLIP-2 Q-Former and Qwen2, fed by this package's folders.

Imported by vLLM (through `llm_srt.vllm.plugin.register`, entry point group `vllm.general_plugins`) when a folder's
config names `LlmSrtForConditionalGeneration`; it needs vLLM installed (see docs/vllm.md). Loads every
folder this project saves: full, adapter-only (encoder and LLM read from the config's references, relative to the
folder when they are folders there), and converted original checkpoints; LoRA weights are merged into the LLM on
load. The 80 audio slots are inserted in front of the prompt, as the processor does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn as nn
from transformers import BatchFeature, WhisperFeatureExtractor
from vllm.config import ModelConfig, SpeechToTextConfig, VllmConfig
from vllm.config.speech_to_text import SpeechToTextParams
from vllm.inputs import PromptType, TokensPrompt
from vllm.model_executor.model_loader import DefaultModelLoader
from vllm.model_executor.models.blip2 import Blip2QFormerModel
from vllm.model_executor.models.interfaces import (
    MultiModalEmbeddings,
    StreamingTranscriptionPostProcessor,
    SupportsMultiModal,
    SupportsTranscription,
)
from vllm.model_executor.models.utils import AutoWeightsLoader, WeightsMapper, init_vllm_registered_model, maybe_prefix
from vllm.model_executor.models.whisper import WhisperEncoder
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import MultiModalDataItems, MultiModalDataParser
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseProcessingInfo,
    PromptIndexTargets,
    PromptInsertion,
    PromptUpdate,
)
from vllm.multimodal.processing.processor import BaseMultiModalProcessor
from vllm.sequence import IntermediateTensors
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor
from vllm.tokenizers.registry import cached_tokenizer_from_config

from ..audio_llm_srt import as_float_mono
from ..speech_llm_srt import has_speech
from ..languages_llm_srt import (
    LANGUAGES, UNSPACED_LANGUAGES, WHISPER_CODES, TAG_END, language_tag, normalize_language, supported_languages_text, text_after_last_tag,
)
from ..configuration_llm_srt import LlmSrtConfig, reference_near
from ..serving.protocol import target_on_transcription_message
from .silence import silent_prompt_token_ids


# vLLM's API validates languages against Whisper's (ISO 639-1) codes: the language table's `whisper` column.
ISO639_1 = WHISPER_CODES
LORA_KEY = re.compile(r"^(?P<module>.+)\.(?:lora_(?P<ab>[AB])\.default\.weight|base_layer\.(?P<kind>weight|bias))$")


def _feature_extractor(model_config: ModelConfig) -> WhisperFeatureExtractor:
    return WhisperFeatureExtractor.from_pretrained(model_config.model, revision=model_config.revision)


class LlmSrtProcessingInfo(BaseProcessingInfo):
    def get_hf_config(self) -> LlmSrtConfig:
        return self.ctx.get_hf_config(LlmSrtConfig)

    def get_feature_extractor(self, **kwargs: object) -> WhisperFeatureExtractor:
        return _feature_extractor(self.ctx.model_config)

    def get_data_parser(self) -> MultiModalDataParser:
        return MultiModalDataParser(
            target_sr=self.get_feature_extractor().sampling_rate,
            expected_hidden_size=self._get_expected_hidden_size(),
        )

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"audio": 1}  # one window per prompt, as the model was trained

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        return {"audio": self.get_hf_config().num_queries}


class LlmSrtDummyInputsBuilder(BaseDummyInputsBuilder[LlmSrtProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return ""

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int], mm_options=None) -> dict[str, Any]:
        extractor = self.info.get_feature_extractor()
        return {
            "audio": self._get_dummy_audios(
                length=extractor.chunk_length * extractor.sampling_rate, num_audios=mm_counts.get("audio", 0)
            )
        }


class LlmSrtMultiModalProcessor(BaseMultiModalProcessor[LlmSrtProcessingInfo]):
    """Log-mel features of each clip (as `LlmSrtProcessor.extract_features`), and the audio slots at the start."""

    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        extractor = self.info.get_feature_extractor()
        clips = [clip[0] if isinstance(clip, tuple) else clip for clip in hf_data.get("audio", [])]
        limit = extractor.chunk_length * extractor.sampling_rate
        for index, clip in enumerate(clips):
            # the checks every audio input gets (empty, NaN/inf, unscaled integer PCM...): NaN/inf samples gave an
            # answer of garbage on vLLM's server and a wrong answer to the next clean request too
            clips[index] = clip = as_float_mono(clip, f"audio[{index}]")
            if len(clip) > limit:
                raise ValueError(
                    f"audio[{index}] lasts {len(clip) / extractor.sampling_rate:.1f} s, longer than the model's "
                    f"{extractor.chunk_length} s window; split it (vLLM's transcription API does)."
                )
        features = extractor(
            [np.asarray(clip, dtype=np.float32) for clip in clips], sampling_rate=extractor.sampling_rate,
            padding="max_length", return_attention_mask=False, return_tensors="pt",
        )
        return BatchFeature({"input_features": features["input_features"]})

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        return {"input_features": MultiModalFieldConfig.batched("audio")}

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        config = self.info.get_hf_config()
        return [
            PromptInsertion(
                modality="audio",
                target=PromptIndexTargets.start(),
                insertion=[config.audio_token_id] * config.num_queries,
            )
        ]


class LlmSrtVllmProjector(nn.Module):
    """`LlmSrtProjector` on vLLM's Q-Former: queries -> Q-Former over the encoder frames -> MLP -> LayerNorm."""

    def __init__(self, config: LlmSrtConfig, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        qformer_config = config.projector_config
        llm_dim = config.text_config.hidden_size
        self.query = nn.Parameter(torch.zeros(1, config.num_queries, qformer_config.hidden_size))
        self.qformer = Blip2QFormerModel(
            qformer_config, quant_config=None, cache_config=vllm_config.cache_config, prefix=f"{prefix}.qformer"
        )
        if config.projector_intermediate_size == 0:
            self.linear = nn.Linear(qformer_config.hidden_size, llm_dim)
        else:
            self.linear1 = nn.Linear(qformer_config.hidden_size, config.projector_intermediate_size)
            self.relu = nn.ReLU()
            self.linear2 = nn.Linear(config.projector_intermediate_size, llm_dim)
        self.norm = nn.LayerNorm(llm_dim, eps=config.projector_layer_norm_eps)

    def forward(self, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        query = self.query.expand(encoder_hidden_states.shape[0], -1, -1)
        hidden = self.qformer(query_embeds=query, encoder_hidden_states=encoder_hidden_states)
        hidden = self.linear(hidden) if hasattr(self, "linear") else self.linear2(self.relu(self.linear1(hidden)))
        return self.norm(hidden)


@MULTIMODAL_REGISTRY.register_processor(
    LlmSrtMultiModalProcessor, info=LlmSrtProcessingInfo, dummy_inputs=LlmSrtDummyInputsBuilder
)
class LlmSrtVllmForConditionalGeneration(nn.Module, SupportsMultiModal, SupportsTranscription):
    """LLM-SRT for vLLM: ASR, SMT and SRT prompts as the processor writes them (without the audio slots, which
    vLLM inserts), and OpenAI's `/v1/audio/transcriptions` and `/v1/audio/translations` (`to_language` = target)."""

    supported_languages: ClassVar[Mapping[str, str]] = {ISO639_1[code]: name for code, (name, _) in LANGUAGES.items()}
    supports_transcription: ClassVar[Literal[True]] = True
    no_space_languages: ClassVar[set[str]] = {WHISPER_CODES[code] for code in UNSPACED_LANGUAGES}

    # Our module names -> vLLM's: Whisper's fused attention projections and its MLP module.
    hf_to_vllm_mapper = WeightsMapper(
        orig_to_new_substr={".fc1.": ".mlp.fc1.", ".fc2.": ".mlp.fc2."},
        orig_to_new_prefix={"language_detector.": None},  # Whisper's decoder (language detection): transformers side
    )

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("audio"):
            return None  # the audio slots are inserted at the start of the prompt
        raise ValueError("LLM-SRT takes audio only.")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        config: LlmSrtConfig = vllm_config.model_config.hf_config
        self.config = config
        self.folder = vllm_config.model_config.model
        # vLLM copies the top-level tie_word_embeddings (ours is False) onto the LLM's config; keep the LLM's own.
        config.tie_word_embeddings = config.text_config.tie_word_embeddings
        if config.adapter_only:
            self.secondary_weights = [
                DefaultModelLoader.Source(self._reference(name), revision=None, prefix=prefix_)
                for name, prefix_ in (("audio_model_name_or_path", "audio_ref."), ("text_model_name_or_path", "text_ref."))
            ]
        with self._mark_tower_model(vllm_config, "audio"):
            self.audio_tower = WhisperEncoder(
                vllm_config=vllm_config.with_hf_config(config.audio_config), prefix=maybe_prefix(prefix, "audio_tower")
            )
            self.projector = LlmSrtVllmProjector(config, vllm_config, prefix=maybe_prefix(prefix, "projector"))
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config.with_hf_config(config.text_config, architectures=["Qwen2ForCausalLM"]),
                prefix=maybe_prefix(prefix, "language_model"),
            )
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    def _reference(self, name: str) -> str:
        ref = getattr(self.config, name)
        if not ref:
            raise ValueError(f"{self.folder} is an adapter-only checkpoint but its config lacks {name}.")
        return reference_near(self.folder, ref)

    # ------------------------------------------------------------------------------------------------ audio
    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        features = kwargs.get("input_features")
        if features is None:
            return []
        if isinstance(features, (list, tuple)):
            features = torch.stack(list(features))
        features = features.to(self.audio_tower.conv1.weight.dtype)
        encoder_states = self.audio_tower(features)
        audio_embeds = self.projector(encoder_states.to(self.projector.query.dtype))
        return list(audio_embeds.unbind(0))

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor | IntermediateTensors:
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    # ---------------------------------------------------------------------------------------------- weights
    def _our_names(self, weights: Iterable[tuple[str, torch.Tensor]]) -> Iterable[tuple[str, torch.Tensor]]:
        """Rename the referenced encoder's and LLM's keys (adapter-only folders) to ours; Whisper's q/k/v to the
        fused projection (Whisper's k has no bias: zeros)."""
        for name, tensor in weights:
            if name.startswith("audio_ref."):
                rest = name.removeprefix("audio_ref.")
                for head in ("model.encoder.", "encoder."):
                    if rest.startswith(head):
                        rest = rest.removeprefix(head)
                        break
                else:
                    if rest.startswith(("model.decoder.", "decoder.", "proj_out.")):
                        continue  # the Whisper decoder is not part of the vLLM model
                name = "audio_tower." + rest
            elif name.startswith("text_ref."):
                name = "language_model." + name.removeprefix("text_ref.")
            yield name, tensor

    def _merge_lora(self, weights: Iterable[tuple[str, torch.Tensor]]) -> Iterable[tuple[str, torch.Tensor]]:
        """Fold LoRA into the LLM's weights: W + (alpha / r) * B @ A, per adapted module (peft's merge)."""
        lora = self.config.lora_config
        if not lora:
            for name, tensor in weights:
                if ".lora_" in name:
                    raise ValueError(f"{self.folder}: weight {name} is LoRA but the config has no lora_config.")
                yield name, tensor
            return
        targets = tuple(f".{module}." for module in lora["target_modules"])
        held: dict[str, dict[str, torch.Tensor]] = {}
        for name, tensor in weights:
            match = LORA_KEY.match(name)
            if match:
                parts = held.setdefault(match["module"], {})
                parts[match["ab"] or match["kind"]] = tensor
            elif name.startswith("language_model.") and any(t in name for t in targets) and name.endswith(".weight"):
                held.setdefault(name.removesuffix(".weight"), {})["weight"] = tensor  # base from a referenced LLM
            else:
                yield name, tensor
        scale = lora["lora_alpha"] / lora["r"]
        for module, parts in held.items():
            missing = [part for part in ("weight", "A", "B") if part not in parts]
            if missing:
                raise ValueError(f"{self.folder}: LoRA module {module} lacks {', '.join(missing)}; cannot merge it.")
            base = parts["weight"]
            merged = base.float() + scale * (parts["B"].float() @ parts["A"].float())
            yield f"{module}.weight", merged.to(base.dtype)
            if "bias" in parts:
                yield f"{module}.bias", parts["bias"]

    def _fuse_whisper_qkv(self, weights: Iterable[tuple[str, torch.Tensor]]) -> Iterable[tuple[str, torch.Tensor]]:
        held: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
        for name, tensor in weights:
            match = re.match(r"^(audio_tower\.layers\.\d+\.self_attn)\.([qkv])_proj\.(weight|bias)$", name)
            if match:
                layer, which, kind = match.groups()
                held.setdefault((layer, kind), {})[which] = tensor
            else:
                yield name, tensor
        for (layer, kind), parts in held.items():
            if kind == "bias" and "k" not in parts and "q" in parts:  # Whisper's k projection has no bias
                parts["k"] = torch.zeros_like(parts["q"])
            if set(parts) != {"q", "k", "v"}:
                raise ValueError(f"{self.folder}: incomplete Whisper attention weights in {layer} ({kind}).")
            yield f"{layer}.qkv_proj.{kind}", torch.cat([parts["q"], parts["k"], parts["v"]])

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        weights = self._fuse_whisper_qkv(self._merge_lora(self._our_names(weights)))
        loader = AutoWeightsLoader(self)
        loaded = loader.load_weights(weights, mapper=self.hf_to_vllm_mapper)
        return loaded

    # ---------------------------------------------------------------------------------------- transcription
    @classmethod
    def validate_language(cls, language: str | None) -> str | None:
        """Our codes, ISO 639-1 codes and names (`deu`, `de`, `German`) -> vLLM's ISO 639-1 code; others refused."""
        if language is None or not language.strip():
            return None  # an empty form field is a missing language: get_generation_prompt asks for it
        try:
            return ISO639_1[normalize_language(language)]
        except ValueError:
            raise ValueError(
                f"Unsupported language {language!r}. Supported languages: {supported_languages_text()}."
            ) from None

    @classmethod
    def get_speech_to_text_config(cls, model_config: ModelConfig, task_type: str) -> SpeechToTextConfig:
        """The model's window, and where vLLM's server may cut longer audio. vLLM cuts each chunk at the quietest
        0.1 s of its last `overlap_chunk_second` seconds (`vllm.multimodal.audio.split_audio`); its default, 1 s, is
        nearly always inside speech, so words were cut (the demo's 3 s window heard "red fish" for "red cats" in a
        three-sentence recording). Searching the last two thirds of the window finds the pause between sentences, as
        `llm-srt serve` cuts at pauses; LLM-SRT decodes every window on its own, so shorter chunks lose no context."""
        extractor = _feature_extractor(model_config)
        window = int(extractor.chunk_length)
        return SpeechToTextConfig(max_audio_clip_s=window, sample_rate=extractor.sampling_rate,
                                  overlap_chunk_second=max(1, 2 * window // 3))

    @classmethod
    def get_generation_prompt(cls, stt_params: SpeechToTextParams) -> PromptType:
        """ASR (`transcribe`, or `translate` into the spoken language, as `llm-srt serve` answers it): `<|src|>`;
        SRT (`translate`): `<|src|><|tgt|>`, the target `to_language` (English by default, as OpenAI's
        translations). The source language must be given: vLLM cannot detect it here. A chunk the speech detector
        hears no speech in (`speech_llm_srt.has_speech`, as every path) is not sent to the LLM: its prompt is
        `silent_prompt_token_ids`, answered with an empty text by `LlmSrtSilenceLogitsProcessor`."""
        if stt_params.language is None:
            raise ValueError(
                "LLM-SRT needs the spoken language: pass language=... (one of "
                f"{supported_languages_text()}); `llm-srt serve` can detect it."
            )
        if stt_params.task_type not in ("transcribe", "translate"):
            raise ValueError(f"Unsupported task_type {stt_params.task_type!r}: 'transcribe' or 'translate'.")
        if stt_params.task_type == "transcribe" and (stt_params.to_language or "").strip():
            raise ValueError(target_on_transcription_message("to_language"))
        tokenizer = cached_tokenizer_from_config(stt_params.model_config)
        # the checks every input gets first (NaN/inf refused by name: the detector cannot judge them); 16 kHz chunks
        if not has_speech(as_float_mono(stt_params.audio, "audio")):
            return TokensPrompt(prompt_token_ids=silent_prompt_token_ids(tokenizer.eos_token_id))
        config = stt_params.model_config.hf_config
        src_lang = normalize_language(stt_params.language)
        tgt_lang = normalize_language(stt_params.to_language or "eng")
        prompt = language_tag(src_lang, config.mandarin_tag)
        if stt_params.task_type == "translate" and tgt_lang != src_lang:
            prompt += language_tag(tgt_lang, config.mandarin_tag)
        return TokensPrompt(
            prompt_token_ids=tokenizer.encode(prompt, add_special_tokens=False),
            multi_modal_data={"audio": (stt_params.audio, stt_params.stt_config.sample_rate)},
        )

    @classmethod
    def post_process_output(cls, text: str) -> str:
        """The answer's last part: the translation of an SRT answer `transcript<|src|><|tgt|>translation`, the
        transcript of an ASR one."""
        return text_after_last_tag(text)

    @classmethod
    def get_streaming_post_processor_cls(cls) -> type[StreamingTranscriptionPostProcessor]:
        return LlmSrtStreamingPostProcessor


PARTIAL_TAG = re.compile(r"(<(\|[a-z]*\|?)?)?$")  # the start of a tag at the end of the text (or the empty end)


class LlmSrtStreamingPostProcessor(StreamingTranscriptionPostProcessor):
    """`text_after_last_tag` (what `post_process_output` answers) over a stream of deltas (`stream=true` on vLLM's
    transcription and translation endpoints): the deltas sent, joined, are the non-streamed text. vLLM's default sends
    the raw answer, so a streamed translation gave the transcript and its tags, `transcript<|eng|><|deu|>translation`.
    An SRT answer starts with the transcript and nothing tells it from an ASR answer while it grows, so nothing is
    sent until the answer's tags have passed (then the translation streams as it is generated) or until it ends (an
    ASR answer arrives whole). What could still become a tag (a trailing `<`, `<|`, `<|de`...) and trailing
    whitespace are held until the text after them comes. If the model writes a tag inside its translation, what was
    sent cannot be taken back: the stream ends there."""

    def __init__(self) -> None:
        self.raw_text = ""
        self.sent_text = ""

    def process_delta(self, text_delta: str, finished: bool) -> str:
        self.raw_text += text_delta
        if finished:
            ready = text_after_last_tag(self.raw_text)
        elif TAG_END not in self.raw_text:
            return ""
        else:
            ready = self.raw_text.split(TAG_END)[-1].lstrip()
            ready = ready[:PARTIAL_TAG.search(ready).start()].rstrip()
        if not ready.startswith(self.sent_text):
            return ""  # a later tag began a new answer part; the client already holds the earlier one
        delta, self.sent_text = ready[len(self.sent_text):], ready
        return delta


# ------------------------------------------------------------------------------------------ decoding rules of generate
HISTORY_ARGS = ("llm_srt_history", "llm_srt_no_repeat_ngram_size", "llm_srt_repetition_penalty")


def banned_ngram_tokens(seen: Sequence[int], ngram_size: int) -> list[int]:
    """The tokens that would repeat an n-gram of `seen` (transformers' `NoRepeatNGramLogitsProcessor` rule)."""
    if ngram_size <= 0 or len(seen) + 1 < ngram_size:
        return []
    tail = tuple(seen[len(seen) - ngram_size + 1:])
    return [seen[i + ngram_size - 1] for i in range(len(seen) - ngram_size + 1)
            if tuple(seen[i:i + ngram_size - 1]) == tail]


class LlmSrtHistoryLogitsProcessor(AdapterLogitsProcessor):
    """`no_repeat_ngram_size` and `repetition_penalty` as transformers' `generate` applies them for LLM-SRT: over the
    generated tokens only (never the prompt, as the original: its LLM sees only embeddings), plus a forced answer
    prefix counted as generated (the shared-transcript step). vLLM has no n-gram ban of its own, and its repetition
    penalty also counts the prompt. Per request through `SamplingParams.extra_args` (`HISTORY_ARGS`)."""

    def is_argmax_invariant(self) -> bool:
        return False  # bans and penalties change the greedy choice

    def new_req_logits_processor(self, params):
        extra = params.extra_args or {}
        ngram = int(extra.get("llm_srt_no_repeat_ngram_size") or 0)
        penalty = float(extra.get("llm_srt_repetition_penalty") or 1.0)
        if ngram <= 0 and penalty == 1.0:
            return None
        history = [int(token) for token in extra.get("llm_srt_history") or ()]

        def process(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            seen = history + list(output_ids)
            if penalty != 1.0 and seen:  # transformers' order: the penalty, then the n-gram ban
                index = torch.tensor(sorted(set(seen)), device=logits.device)
                scores = logits[index]
                logits[index] = torch.where(scores < 0, scores * penalty, scores / penalty)
            banned = banned_ngram_tokens(seen, ngram)
            if banned:
                logits[torch.tensor(banned, device=logits.device)] = float("-inf")
            return logits

        return process
