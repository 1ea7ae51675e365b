#!/usr/bin/env python
"""Speak the offline demo's corpus with espeak-ng: `llm_srt.training.demo_corpus` (`--help` lists the flags)."""

from llm_srt.training.demo_corpus import main


if __name__ == "__main__":
    main()
