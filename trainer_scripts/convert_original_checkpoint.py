#!/usr/bin/env python
"""Convert an original LLM-SRT checkpoint (SLAM-LLM `.pt`) into a model folder: `llm_srt.hub.convert` (`--help` lists the flags)."""

import sys

from llm_srt.hub.convert import main


if __name__ == "__main__":
    sys.exit(main())
