"""`python -m llm_srt.cli ...` runs the `llm-srt` command."""

import sys

from .main import main


sys.exit(main())
