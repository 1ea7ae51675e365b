"""The `llm-srt` command (`main.py`: translate, languages, serve, live) and what every command-line entry point shares
(`safe_io.py`: outputs never destroyed, argument types, one-line errors). Importing this package imports neither."""
