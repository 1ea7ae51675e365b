"""The `llm-srt` command: translate or transcribe audio files, list the languages."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .configuration_llm_srt import LANGUAGES, MANDARIN_TAGS


def _parse_targets(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-srt", description="LLM-SRT speech translation and recognition.")
    commands = parser.add_subparsers(dest="command", required=True)
    translate = commands.add_parser(
        "translate", help="translate (or transcribe) audio files; one JSON line per (file, target)"
    )
    translate.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3, ...)")
    translate.add_argument("--model", required=True, help="model folder or Hub id")
    translate.add_argument(
        "--src", default="auto", help="spoken language, e.g. eng (default: auto, detected from the audio)"
    )
    translate.add_argument("--tgt", type=_parse_targets, default=None, help="target language(s), comma-separated: deu,fra")
    translate.add_argument("--task", choices=["translate", "transcribe"], default="translate")
    translate.add_argument("--beams", type=int, default=None, help="beam size (default: the model's, 5)")
    translate.add_argument("--max-new-tokens", type=int, default=None)
    translate.add_argument("--batch-size", type=int, default=8, help="audio windows per forward pass")
    translate.add_argument("--chunk-length", type=float, default=None, help="longest window in seconds (default 30)")
    translate.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")
    translate.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    translate.add_argument("--output", default="-", help="JSON-lines output file (default: stdout)")
    commands.add_parser("languages", help="list the supported languages")
    return parser


def list_languages(out=sys.stdout) -> None:
    print(f"{'code':<6}{'language':<22}also accepted", file=out)
    for code, (name, aliases) in LANGUAGES.items():
        print(f"{code:<6}{name:<22}{', '.join(aliases)}", file=out)
    print(f"\nMandarin's tag is {' or '.join(MANDARIN_TAGS)}, whichever the model was trained with.", file=out)


def translate(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm
    from transformers import pipeline

    from .configuration_llm_srt import normalize_language

    if args.src.strip().lower() != "auto":
        normalize_language(args.src)  # fail before loading the model
    for target in args.tgt or []:
        normalize_language(target)
    if args.task == "translate" and not args.tgt:
        raise ValueError("--tgt is required for --task translate (e.g. --tgt deu,fra).")
    pipe = pipeline(
        "speech-translation", model=args.model, trust_remote_code=True, device=args.device,
        dtype=getattr(torch, args.dtype) if args.dtype else None,
    )
    call_kwargs = {"src_lang": args.src, "task": args.task, "batch_size": args.batch_size}
    if args.task == "translate":
        call_kwargs["tgt_lang"] = args.tgt
    if args.chunk_length:
        call_kwargs["chunk_length_s"] = args.chunk_length
    generate_kwargs = {k: v for k, v in (("num_beams", args.beams), ("max_new_tokens", args.max_new_tokens)) if v}
    if generate_kwargs:
        call_kwargs["generate_kwargs"] = generate_kwargs

    failures = 0
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    try:
        for path in tqdm(args.audio, desc="translating", unit="file", file=sys.stderr, disable=len(args.audio) < 2):
            try:
                result = pipe(path, **call_kwargs)
            except Exception as error:  # one bad file must not lose the others: report it and go on
                failures += 1
                print(f"llm-srt: error: {path}: {error}", file=sys.stderr)
                continue
            for row in result if isinstance(result, list) else [result]:
                out.write(json.dumps({"file": path, **row}, ensure_ascii=False) + "\n")
            out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    if failures:
        print(f"llm-srt: {failures} of {len(args.audio)} files failed; the others were written.", file=sys.stderr)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "languages":
        list_languages()
        return 0
    try:
        return translate(args)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"llm-srt: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
