#!/usr/bin/env python
"""Push a model folder to the Hub with its model card: `llm_srt.hub.push` (`--help` lists the flags)."""

import sys

from llm_srt.hub.push import main


if __name__ == "__main__":
    sys.exit(main())
