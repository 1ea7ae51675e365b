#!/usr/bin/env python
"""Train one curriculum stage (ASR, SMT or SRT) with Seq2SeqTrainer: `llm_srt.training.train` (`--help` lists the flags)."""

from llm_srt.training.train import main


if __name__ == "__main__":
    main()
