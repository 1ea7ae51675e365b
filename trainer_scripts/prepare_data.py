#!/usr/bin/env python
"""Write training/test manifests (JSON lines) from FLEURS, CoVoST 2 or Common Voice: `llm_srt.training.prepare` (`--help` lists the flags)."""

import sys

from llm_srt.training.prepare import main


if __name__ == "__main__":
    sys.exit(main())
