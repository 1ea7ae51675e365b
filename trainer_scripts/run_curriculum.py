#!/usr/bin/env python
"""Run the whole curriculum ASR -> SMT -> SRT; `--recipe demo` is the offline demo: `llm_srt.training.curriculum` (`--help` lists the flags)."""

from llm_srt.training.curriculum import main


if __name__ == "__main__":
    main()
