"""`llm-srt languages`: the 15 languages, or those a model was trained on and its directions."""

from __future__ import annotations

import argparse
import sys

from ..languages_llm_srt import LANGUAGE_TABLE, MANDARIN_TAGS
from .common import WorkError, check_model
from .safe_io import one_line


def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser("languages", help="list the supported languages, or those a model was trained on")
    parser.add_argument("--model", default=None,
                        help="model folder or Hub id: list the languages and directions it was trained on")
    return parser


def run(args: argparse.Namespace) -> int:
    list_languages(model=args.model)
    return 0


def list_languages(out=None, model: str | None = None) -> None:
    """The 15 languages (`LANGUAGE_TABLE`), or with `model` the languages and directions its config records it was
    trained on (all 15 when it records none); to `out` (default: stdout)."""
    out = sys.stdout if out is None else out
    mandarin = " or ".join(MANDARIN_TAGS)
    codes, directions = list(LANGUAGE_TABLE), None
    if model is not None:
        config = model_config(model)
        mandarin = config.mandarin_tag
        if config.trained_languages is None:
            print(f"{model} does not record the languages it was trained on (not recorded in its config.json): "
                  f"all {len(LANGUAGE_TABLE)} are assumed.\n", file=out)
        else:
            codes, directions = config.trained_languages, config.trained_directions
            print(f"{model} was trained on {len(codes)} language(s):\n", file=out)
    print(f"{'code':<6}{'language':<22}also accepted", file=out)
    for code in codes:
        row = LANGUAGE_TABLE[code]
        print(f"{code:<6}{row.name:<22}{', '.join(row.aliases)}", file=out)
    if directions is not None:
        count = f"{len(directions)} direction{'' if len(directions) == 1 else 's'}"
        print(f"\nTrained translation directions ({count}): {', '.join(directions) or 'none (recognition only)'}",
              file=out)
    print(f"\nMandarin's tag is {mandarin}" + (", whichever the model was trained with." if model is None else "."),
          file=out)


def model_config(model: str):
    """The LLM-SRT config of `--model` (UsageError for a path that is no model folder, WorkError when it does not
    load)."""
    from ..configuration_llm_srt import LlmSrtConfig

    check_model(model)
    try:
        return LlmSrtConfig.from_pretrained(model)
    except Exception as error:  # noqa: BLE001 - whatever the loader raises, name the model and stop
        raise WorkError(f"could not read the config of {model}: {one_line(error)}") from None


__all__ = ["add_parser", "list_languages", "run"]
