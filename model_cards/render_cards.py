#!/usr/bin/env python
"""Render the cards of the released sizes from template.md: `python model_cards/render_cards.py`."""

import os
import sys


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from trainer_scripts.push_to_hub import PAPER_RESULTS, render_card  # noqa: E402


def release_cards() -> dict[str, str]:
    """{file name: card} for the 3B, 7B and 32B models (LoRA for 3B, the paper's V2)."""
    return {
        f"llm-srt-{size}.md": render_card(f"llm-srt-{size}", f"llm-srt/llm-srt-{size}", facts["base_llm"],
                                          "openai/whisper-large-v3", lora=size == "3b")
        for size, facts in PAPER_RESULTS.items()
    }


if __name__ == "__main__":
    for name, card in release_cards().items():
        with open(os.path.join(HERE, name), "w", encoding="utf-8") as handle:
            handle.write(card)
        print(f"wrote model_cards/{name}")
