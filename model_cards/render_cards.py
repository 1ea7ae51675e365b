#!/usr/bin/env python
"""Render the cards of the released sizes (`llm_srt.hub.cards.release_cards`): `python model_cards/render_cards.py`."""

import os

from llm_srt.hub.cards import release_cards


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    for name, card in release_cards().items():
        with open(os.path.join(here, name), "w", encoding="utf-8") as handle:
            handle.write(card)
        print(f"wrote model_cards/{name}")
