"""Loading a saved model for the CLI and the server: the installed llm-srt classes by default, a folder's own code
only on an explicit `--trust-remote-code` (transformers' rule: remote code is opt-in)."""

from __future__ import annotations

import json
import os

from .configuration_llm_srt import LlmSrtConfig, read_config_json
from .safe_io import UsageError


def model_code_to_trust(model: str | os.PathLike, trust_remote_code: bool = False) -> bool:
    """The `trust_remote_code` to load `model` with: a local llm-srt folder whose `*.py` files equal the installed
    package's modules (or that has none) loads with the installed classes (False); a folder whose code differs, or a
    folder of another architecture carrying code, is refused (UsageError naming `--trust-remote-code`) unless
    `trust_remote_code`. A Hub id loads with the installed classes unless `trust_remote_code`."""
    if trust_remote_code:
        return True
    folder = os.fspath(model)
    if not os.path.isdir(folder):
        return False
    package = os.path.dirname(os.path.abspath(__file__))
    code = sorted(name for name in os.listdir(folder) if name.endswith(".py"))
    config = read_config_json(folder) or {}  # not JSON: an OSError naming the file, the error, line and column
    model_type = config.get("model_type")
    if model_type not in (None, "llm_srt"):
        if code or config.get("auto_map"):
            raise UsageError(
                f"{folder} holds a {model_type!r} model with its own code, not an llm-srt model: pass "
                "--trust-remote-code (trust_remote_code=True) to run that code."
            )
        return False
    differing = []
    for name in code:
        installed = os.path.join(package, name)
        with open(os.path.join(folder, name), "rb") as f:
            theirs = f.read()
        mine = None
        if os.path.isfile(installed):
            with open(installed, "rb") as f:
                mine = f.read()
        if theirs != mine:
            differing.append(name)
    if differing:
        raise UsageError(
            f"{folder}: its code ({', '.join(differing)}) differs from the installed llm-srt's; pass "
            "--trust-remote-code (trust_remote_code=True) to run the folder's code, or delete those files to load "
            "it with the installed classes."
        )
    return False


def load_model_and_processor(model: str | os.PathLike, trust_remote_code: bool = False, dtype=None):
    """`(model, processor)` of a saved model folder or Hub id, with the classes `model_code_to_trust` allows: with
    `trust_remote_code`, a local folder's own `modeling_llm_srt.py` (transformers would otherwise prefer the
    installed, registered class)."""
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    trust = model_code_to_trust(model, trust_remote_code)
    model_class = AutoModelForSpeechSeq2Seq
    kwargs = {}
    if not trust and (read_config_json(model) or {}).get("model_type") == "llm_srt":
        # Our config class reads it: an edited value is named with the file (AutoConfig's errors do not name it).
        kwargs["config"] = LlmSrtConfig.from_pretrained(model)
    if trust and os.path.isdir(os.fspath(model)):
        with open(os.path.join(os.fspath(model), "config.json"), encoding="utf-8") as f:
            auto_map = json.load(f).get("auto_map") or {}
        reference = auto_map.get("AutoModelForSpeechSeq2Seq") or auto_map.get("AutoModel")
        if reference:
            model_class = get_class_from_dynamic_module(reference, os.fspath(model))
    loaded = model_class.from_pretrained(model, trust_remote_code=trust, dtype=dtype, **kwargs)
    return loaded, AutoProcessor.from_pretrained(model, trust_remote_code=trust)
