#!/usr/bin/env python
"""Evaluate a model on a test set as the paper does (BLEU/WER per direction, quality columns, reports): `llm_srt.evaluation.run` (`--help` lists the flags)."""

from llm_srt.evaluation.run import main


if __name__ == "__main__":
    main()
