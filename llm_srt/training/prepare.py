"""Build LLM-SRT training/evaluation manifests from FLEURS, CoVoST-2 and Common Voice.

    # FLEURS, many-to-many across the 15 languages (pairs share the FLEURS sentence id):
    python trainer_scripts/prepare_data.py --corpus fleurs --source /data/fleurs --split train --output data/fleurs_train.jsonl
    python trainer_scripts/prepare_data.py --corpus fleurs --source google/fleurs --streaming --split test --output data/fleurs_test.jsonl
    # CoVoST-2 (its TSVs, with the Common Voice clips they point to), En->X and X->En:
    python trainer_scripts/prepare_data.py --corpus covost2 --source /data/covost2 --clips /data/cv/en/clips --split train --output data/covost_train.jsonl
    # Common Voice, for the ASR stage:
    python trainer_scripts/prepare_data.py --corpus commonvoice --source /data/cv --split train --output data/cv_train.jsonl

Layouts read from a local folder:
- FLEURS (as the Hub repo `google/fleurs`, archives extracted): `data/<config>/<split>.tsv` (id, file name, raw
  transcription, transcription, phonemes, samples, gender) and `data/<config>/audio/<split>/<file name>`;
  configs `en_us`, `de_de`, ..., `cmn_hans_cn` (see FLEURS_CONFIGS). A Hub id loads with `datasets` instead.
- CoVoST-2: `covost_v2.<src>_<tgt>.tsv` (path, sentence, translation, client_id, split) in `--source`; clips in
  `--clips` (default `<source>/clips`).
- Common Voice: `<source>/<locale>/<split>.tsv` (path, sentence, ...) and `<source>/<locale>/clips/`.

Rows are written in the manifest format of `train.py` (`audio`, `src_lang`, `tgt_lang`, `transcript`,
`translation`, `key`, `duration`); clips longer than `--max_seconds`, empty texts, undecodable audio, lines cut
short and languages outside the 15 are dropped and counted. The counts are printed and written to
`<output>.stats.json`. A Hub dataset's audio (`--streaming` too) is decoded as it streams and written under
`<output>.audio/`, a folder of this manifest's own (refused when it holds files, unless `--overwrite`), so two
manifests never overwrite each other's clips.

Bad input: an existing output is refused without `--overwrite` and an input is never overwritten; the manifest and
its stats are written to temporary files renamed into place at the end, so a failed or killed run leaves the old
ones as they were; a run that keeps no row fails with the drop counts; a TSV without a needed column, or not UTF-8,
is named. Errors are one line `prepare_data: error: ...` (exit 2 for bad usage, 1 for data that cannot be used).
"""

from __future__ import annotations

import argparse
import csv
import glob
import itertools
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from transformers import HfArgumentParser



from ..languages_llm_srt import FLEURS_CONFIGS, LANGUAGES, normalize_language
from ..cli.safe_io import (
    UsageError, atomic_dir, atomic_write, check_output_dir, check_output_file, positive_float, positive_int, run_reporting_errors, set_argument_types,
)


PROG = "prepare_data"
TASKS = ("srt", "asr")
# The rows each corpus can give: FLEURS either or both, CoVoST-2 translation pairs, Common Voice transcripts.
CORPUS_TASKS = {"fleurs": {"srt", "asr"}, "covost2": {"srt"}, "commonvoice": {"asr"}}
TSV_COLUMNS = {"covost2": ("path", "sentence", "translation"), "commonvoice": ("path", "sentence")}


# Common Voice / CoVoST-2 locale codes -> ours.
CV_LOCALES = {"de": "deu", "en": "eng", "fr": "fra", "id": "ind", "it": "ita", "ja": "jpn", "ko": "kor", "nl": "nld",
              "pt": "por", "ru": "rus", "es": "spa", "th": "tha", "vi": "vie", "yue": "yue", "zh-CN": "zho",
              "zh-HK": "yue"}
SPLIT_ALIASES = {"validation": "dev", "valid": "dev", "dev": "dev", "train": "train", "test": "test"}


@dataclass
class PrepareArguments:
    corpus: str = field(metadata={"help": "fleurs, covost2 or commonvoice", "choices": ["fleurs", "covost2", "commonvoice"]})
    source: str = field(metadata={"help": "Local folder in the corpus's layout, or (fleurs) a Hub dataset id."})
    output: str = field(metadata={"help": "Output manifest (.jsonl) or, with --save_to_disk, a datasets folder."})
    split: str = field(default="train", metadata={"help": "train, dev (validation) or test."})
    languages: str = field(default=",".join(LANGUAGES), metadata={"help": "Comma-separated codes (default: all 15)."})
    tasks: str | None = field(default=None, metadata={"help": "fleurs: 'srt' pairs (many-to-many) and/or 'asr' rows, "
                                                             "comma-separated (default srt; covost2 gives srt, "
                                                             "commonvoice asr)."})
    clips: str | None = field(default=None, metadata={"help": "covost2: folder of the Common Voice clips."})
    max_seconds: float = field(default=30.0, metadata={"help": "Drop clips longer than this (the encoder window)."})
    check_audio: bool = field(default=True, metadata={"help": "Open every clip to measure it and drop undecodable ones."})
    streaming: bool = field(default=False, metadata={"help": "Stream a Hub dataset instead of downloading it."})
    save_to_disk: bool = field(default=False, metadata={"help": "Write a datasets folder instead of a .jsonl."})
    max_rows: int | None = field(default=None, metadata={"help": "Stop after this many rows (tries, subsets)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing output (and its stats file)."})


class DataError(ValueError):
    """An input file that cannot be read as the corpus's layout; the message names the file."""


def task_list(text: str) -> str:
    """argparse type: comma-separated tasks out of TASKS."""
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise argparse.ArgumentTypeError(f"unknown task(s) {', '.join(map(repr, unknown)) or repr(text)}; "
                                         f"choose from {', '.join(TASKS)} (comma-separated)")
    return ",".join(tasks)


def language_list(text: str) -> str:
    """argparse type: comma-separated supported languages, at least one."""
    codes = [code.strip() for code in text.split(",") if code.strip()]
    if not codes:
        raise argparse.ArgumentTypeError("no language given")
    try:
        return ",".join(normalize_language(code) for code in codes)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args(argv: list[str] | None = None) -> PrepareArguments:
    """The command line as `PrepareArguments`; bad values are refused by the parser (exit 2)."""
    parser = set_argument_types(HfArgumentParser(PrepareArguments, prog=PROG), tasks=task_list,
                                languages=language_list, max_seconds=positive_float, max_rows=positive_int)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    return args


class Report:
    """Counts kept rows and each reason for a drop, so nothing is skipped silently."""

    def __init__(self):
        self.kept = 0
        self.dropped: Counter = Counter()
        self.examples: dict[str, str] = {}

    def drop(self, reason: str, what: str) -> None:
        self.dropped[reason] += 1
        self.examples.setdefault(reason, what)

    def as_dict(self) -> dict:
        return {"kept": self.kept, "dropped": dict(self.dropped), "first_dropped": self.examples}


def clip_duration(path: str) -> float:
    """Seconds of audio in a file (header only); raises for an unreadable file."""
    from ..audio_llm_srt import audio_file_info

    info = audio_file_info(path)  # a header without the length (a streamed FLAC) is counted
    if info.frames <= 0 or info.samplerate <= 0:
        raise ValueError("no samples")
    return info.frames / info.samplerate


def checked(
    path: str, args: PrepareArguments, report: Report, known_seconds: float | None = None
) -> tuple[bool, float | None]:
    """(usable, duration): unusable (and counted) when missing, undecodable or too long."""
    if not os.path.isfile(path):
        report.drop("missing audio file", path)
        return False, None
    seconds = known_seconds
    if args.check_audio:
        try:
            seconds = clip_duration(path)
        except Exception:  # noqa: BLE001 - any decoder failure means the clip is unusable
            report.drop("undecodable audio", path)
            return False, None
    if seconds is not None and seconds > args.max_seconds:
        report.drop(f"longer than {args.max_seconds:g} s", path)
        return False, None
    return True, seconds


def wanted_languages(args: PrepareArguments) -> list[str]:
    return [normalize_language(code) for code in args.languages.split(",") if code.strip()]


# -------------------------------------------------------------------------------------------------------- FLEURS
def read_fleurs_local(args: PrepareArguments, report: Report) -> dict[str, list[dict]]:
    """Per language, the utterances of one split of a local FLEURS copy."""
    split = SPLIT_ALIASES.get(args.split, args.split)
    by_language = {}
    for lang in wanted_languages(args):
        config = FLEURS_CONFIGS[lang]
        tsv = os.path.join(args.source, "data", config, f"{split}.tsv")
        if not os.path.isfile(tsv):
            raise FileNotFoundError(f"FLEURS {lang}: {tsv} not found (expected the google/fleurs layout).")
        utterances = []
        with open(tsv, encoding="utf-8-sig", errors="strict") as handle:  # -sig: a BOM is no part of the text
            for line_no, line in _lines(handle, tsv):
                fields = line.rstrip("\n").split("\t")
                if len(fields) < 6:
                    report.drop("malformed TSV line", f"{tsv}:{line_no}")
                    continue
                sentence_id, file_name, raw_text, _, _, num_samples = fields[:6]
                text = raw_text.strip()
                if not text:
                    report.drop("empty text", f"{tsv}:{line_no}")
                    continue
                path = os.path.join(args.source, "data", config, "audio", split, file_name)
                known = int(num_samples) / 16000 if num_samples.isdigit() else None
                usable, seconds = checked(path, args, report, known)
                if not usable:
                    continue
                utterances.append({"id": sentence_id, "audio": os.path.abspath(path), "text": text, "duration": seconds,
                                   "key": f"{config}/{file_name}"})
        by_language[lang] = utterances
    return by_language


def _lines(handle, path: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file; a decoding error names the file and the line."""
    line_no = 0
    try:
        for line_no, line in enumerate(handle, 1):
            yield line_no, line
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text near line {line_no + 1} ({error.reason}).") from None


def read_fleurs_hub(args: PrepareArguments, report: Report) -> dict[str, list[dict]]:
    """Per language, the utterances of a Hub FLEURS dataset (audio written to wav files next to the output)."""
    import datasets
    import soundfile

    from ..audio_llm_srt import load_audio

    split = {"dev": "validation"}.get(SPLIT_ALIASES.get(args.split, args.split), args.split)
    audio_dir = hub_audio_dir(args)
    by_language = {}
    for lang in wanted_languages(args):
        config = FLEURS_CONFIGS[lang]
        stream = datasets.load_dataset(args.source, config, split=split, streaming=args.streaming)
        utterances = []
        for index, row in enumerate(stream):
            text = (row.get("raw_transcription") or "").strip()
            if not text:
                report.drop("empty text", f"{config}/{index}")
                continue
            try:
                audio = load_audio(row["audio"])
            except Exception:  # noqa: BLE001
                report.drop("undecodable audio", f"{config}/{index}")
                continue
            seconds = len(audio) / 16000
            if seconds > args.max_seconds:
                report.drop(f"longer than {args.max_seconds:g} s", f"{config}/{index}")
                continue
            path = os.path.join(audio_dir, config, f"{split}_{index:06d}.wav")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            soundfile.write(path, audio, 16000)
            utterances.append({"id": str(row["id"]), "audio": path, "text": text, "duration": seconds,
                               "key": f"{config}/{index}"})
            if args.max_rows and len(utterances) >= args.max_rows:
                break
        by_language[lang] = utterances
    return by_language


def fleurs_rows(args: PrepareArguments, report: Report) -> Iterator[dict]:
    local = os.path.isdir(args.source)
    by_language = (read_fleurs_local if local else read_fleurs_hub)(args, report)
    tasks = set((args.tasks or "srt").split(","))
    text_by_id = {lang: {} for lang in by_language}
    for lang, utterances in by_language.items():
        for u in utterances:
            text_by_id[lang].setdefault(u["id"], u["text"])
    for lang, utterances in by_language.items():
        for u in utterances:
            base = {"audio": u["audio"], "src_lang": lang, "transcript": u["text"], "duration": u["duration"],
                    "sentence_id": u["id"]}
            if "asr" in tasks:
                yield {**base, "tgt_lang": None, "translation": None, "key": u["key"]}
            if "srt" in tasks:
                for tgt in by_language:
                    if tgt != lang and u["id"] in text_by_id[tgt]:
                        yield {**base, "tgt_lang": tgt, "translation": text_by_id[tgt][u["id"]],
                               "key": f"{u['key']}:{tgt}"}


# ------------------------------------------------------------------------------------------ CoVoST-2, Common Voice
def read_tsv(path: str, required: tuple[str, ...], report: Report) -> Iterator[dict]:
    """The rows of a TSV with a header; a missing column is an error naming the file, a short line is counted."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:  # -sig: a BOM is no part of the header
            reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            columns = reader.fieldnames or []
            missing = [c for c in required if c not in columns]
            if missing:
                raise DataError(f"{path}: no {', '.join(map(repr, missing))} column (its columns: "
                                f"{', '.join(columns) or 'none, the file is empty'}).")
            for row in reader:
                if any(row.get(c) is None for c in required):  # the line ends before these columns
                    report.drop("malformed TSV line", f"{path}:{reader.line_num}")
                    continue
                yield row
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}).") from None


def covost_rows(args: PrepareArguments, report: Report) -> Iterator[dict]:
    clips = args.clips or os.path.join(args.source, "clips")
    split = SPLIT_ALIASES.get(args.split, args.split)
    wanted = set(wanted_languages(args))
    files = sorted(f for f in os.listdir(args.source) if f.startswith("covost_v2.") and f.endswith(".tsv"))
    if not files:
        raise FileNotFoundError(f"No covost_v2.<src>_<tgt>.tsv in {args.source}.")
    for name in files:
        pair = name[len("covost_v2."):-len(".tsv")]
        src_locale, tgt_locale = pair.split("_", 1)
        src, tgt = CV_LOCALES.get(src_locale), CV_LOCALES.get(tgt_locale)
        if src is None or tgt is None or src not in wanted or tgt not in wanted:
            report.drop("language outside the selection", name)
            continue
        for row in read_tsv(os.path.join(args.source, name), TSV_COLUMNS["covost2"], report):
            if row.get("split", split) != split:
                continue
            transcript, translation = (row.get("sentence") or "").strip(), (row.get("translation") or "").strip()
            if not transcript or not translation:
                report.drop("empty text", f"{name}:{row.get('path')}")
                continue
            path = os.path.join(clips, row["path"])
            usable, seconds = checked(path, args, report)
            if not usable:
                continue
            yield {"audio": os.path.abspath(path), "src_lang": src, "tgt_lang": tgt, "transcript": transcript,
                   "translation": translation, "duration": seconds, "key": f"covost/{pair}/{row['path']}"}


def commonvoice_rows(args: PrepareArguments, report: Report) -> Iterator[dict]:
    split = SPLIT_ALIASES.get(args.split, args.split)
    wanted = set(wanted_languages(args))
    locales = sorted(d for d in os.listdir(args.source) if os.path.isdir(os.path.join(args.source, d)))
    if not locales:
        raise FileNotFoundError(f"No Common Voice locale folders in {args.source}.")
    for locale in locales:
        lang = CV_LOCALES.get(locale)
        if lang is None or lang not in wanted:
            report.drop("language outside the selection", locale)
            continue
        tsv = os.path.join(args.source, locale, f"{split}.tsv")
        if not os.path.isfile(tsv):
            report.drop(f"no {split}.tsv", locale)
            continue
        for row in read_tsv(tsv, TSV_COLUMNS["commonvoice"], report):
            text = (row.get("sentence") or "").strip()
            if not text:
                report.drop("empty text", f"{locale}:{row.get('path')}")
                continue
            path = os.path.join(args.source, locale, "clips", row["path"])
            usable, seconds = checked(path, args, report)
            if not usable:
                continue
            yield {"audio": os.path.abspath(path), "src_lang": lang, "tgt_lang": None, "transcript": text,
                   "translation": None, "duration": seconds, "key": f"cv/{locale}/{row['path']}"}


READERS = {"fleurs": fleurs_rows, "covost2": covost_rows, "commonvoice": commonvoice_rows}


def prepare(args: PrepareArguments) -> dict:
    """Write the manifest; returns the report (kept and dropped counts by reason)."""
    from tqdm.auto import tqdm

    check_arguments(args)
    report = Report()
    rows = READERS[args.corpus](args, report)
    if args.max_rows:
        rows = itertools.islice(rows, args.max_rows)
    directions: Counter = Counter()
    stats_path = stats_file(args)
    if args.save_to_disk:
        import datasets

        collected = list(tqdm(rows, desc=f"{args.corpus} rows", unit="row"))
        report.kept = len(collected)
        check_kept(args, report)
        with atomic_dir(args.output) as folder:
            datasets.Dataset.from_list(collected).save_to_disk(folder)
        directions.update(f"{r['src_lang']}-{r['tgt_lang'] or 'asr'}" for r in collected)
    else:
        # Written beside the output and renamed at the end: a failed run leaves the old manifest as it was.
        with atomic_write(args.output) as handle:
            for row in tqdm(rows, desc=f"{args.corpus} rows", unit="row"):
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                report.kept += 1
                directions[f"{row['src_lang']}-{row['tgt_lang'] or 'asr'}"] += 1
            check_kept(args, report)  # raising here removes the temporary file; nothing is replaced
    summary = {**report.as_dict(), "directions": dict(sorted(directions.items()))}
    with atomic_write(stats_path) as handle:
        json.dump(summary, handle, indent=2, ensure_ascii=False)
    return summary


def hub_audio_dir(args: PrepareArguments) -> str:
    """Where a Hub dataset's decoded clips go: a folder named after the manifest, so manifests never share clips."""
    return os.path.abspath(args.output).rstrip(os.sep) + ".audio"


def stats_file(args: PrepareArguments) -> str:
    return os.path.abspath(args.output).rstrip(os.sep) + ".stats.json"


def input_files(args: PrepareArguments) -> list[str]:
    """The TSV files this run reads (an output must never replace one of them)."""
    split = SPLIT_ALIASES.get(args.split, args.split)
    if args.corpus == "fleurs":
        return [os.path.join(args.source, "data", FLEURS_CONFIGS[lang], f"{split}.tsv")
                for lang in wanted_languages(args)]
    if args.corpus == "covost2":
        return glob.glob(os.path.join(glob.escape(args.source), "covost_v2.*.tsv"))
    return glob.glob(os.path.join(glob.escape(args.source), "*", f"{split}.tsv"))


def check_arguments(args: PrepareArguments) -> None:
    """Refuse, before reading anything, what the parser cannot see: tasks the corpus cannot give, a missing
    source folder, an output that exists (without --overwrite) or is one of the inputs."""
    if args.tasks and not set(args.tasks.split(",")) <= CORPUS_TASKS[args.corpus]:
        raise UsageError(f"--tasks {args.tasks}: {args.corpus} gives only {', '.join(sorted(CORPUS_TASKS[args.corpus]))} "
                         "rows.")
    if not os.path.isdir(args.source) and (args.corpus != "fleurs" or os.path.exists(args.source)
                                           or args.source.startswith((".", "/", "~")) or args.source.count("/") > 1):
        raise UsageError(f"--source {args.source}: no such folder"
                         + ("." if args.corpus != "fleurs" else " (nor a Hub dataset id such as google/fleurs)."))
    if args.clips is not None and not os.path.isdir(args.clips):
        raise UsageError(f"--clips {args.clips}: no such folder.")
    inputs = [path for path in input_files(args) if os.path.exists(path)] if os.path.isdir(args.source) else []
    try:
        _check_not_in_corpus(args)
        if args.save_to_disk:
            check_output_dir(args.output, overwrite=args.overwrite, what="--output", inputs=inputs)
        else:
            check_output_file(args.output, inputs=inputs, overwrite=args.overwrite, what="--output")
        check_output_file(stats_file(args), inputs=inputs, overwrite=args.overwrite, what="stats file")
        if args.corpus == "fleurs" and not os.path.isdir(args.source):
            check_output_dir(hub_audio_dir(args), overwrite=args.overwrite, what="audio folder")
    except ValueError as error:  # the output is an input
        raise UsageError(str(error)) from None


AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".webm")


def _check_not_in_corpus(args: PrepareArguments) -> None:
    """The corpus's clips are inputs too (the TSVs name them): an existing --output inside `--source` or `--clips`
    that is a clip, or a --save_to_disk folder there that holds or is part of the corpus, is refused even with
    --overwrite (which would replace it whole, clips included)."""
    from ..cli.safe_io import _is_within

    corpus = [folder for folder in (args.source, args.clips) if folder and os.path.isdir(folder)]
    output = args.output
    for folder in corpus:
        if args.save_to_disk and os.path.isdir(output) and os.listdir(output) \
                and (_is_within(output, folder) or _is_within(folder, output)):
            raise ValueError(f"The --output {output} is a folder of the corpus {folder} (replacing it would delete "
                             "its clips): choose a folder outside it.")
        if not args.save_to_disk and os.path.isfile(output) and _is_within(output, folder) \
                and output.lower().endswith(AUDIO_EXTENSIONS):
            raise ValueError(f"The --output {output} is an audio clip of the corpus {folder}: choose a .jsonl "
                             "outside it.")


def check_kept(args: PrepareArguments, report: Report) -> None:
    """A run that keeps no row is a failure: say why, with the drop counts and a first example of each."""
    if report.kept:
        return
    if report.dropped:
        why = "; ".join(f"{count} {reason} (e.g. {report.examples[reason]})"
                        for reason, count in report.dropped.most_common())
    else:
        why = f"no row of split {args.split!r} in {args.source} for the languages {args.languages}"
    raise DataError(f"kept 0 rows, nothing written: {why}.")


def _prepare_and_print(args: PrepareArguments) -> dict:
    summary = prepare(args)
    print(json.dumps({k: summary[k] for k in ("kept", "dropped")}, ensure_ascii=False))
    return summary


def build(argv: list[str] | None = None) -> dict:
    """Parse the command line and write the manifest; returns the summary, raises what goes wrong."""
    return _prepare_and_print(parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    """The command: exit status 0, 2 for bad usage, 1 for data that cannot be used, 130 interrupted."""
    args = parse_args(argv)
    return run_reporting_errors(PROG, lambda: _prepare_and_print(args) and 0)

