"""Make the offline demo corpus: template sentences spoken by espeak-ng, with their translations.

"I see <number> <colour> <animal>" in several of the 15 languages (9 x 6 x 6 = 324 sentences per language), each
spoken once at a random rate and pitch, resampled to 16 kHz. 60 sentences are held out of training. The output
folder holds `audio/<lang>/<id>.wav`, `train.jsonl` and `test.jsonl` in the manifest format of
`trainer_scripts/train.py` (rows in SRT form: one row per ordered language pair, plus the text of every language in
`texts.json`).

    python trainer_scripts/make_demo_corpus.py --output_dir demo_data --languages eng,deu,fra

espeak-ng comes from Debian's package (`apt-get install espeak-ng`); the script installs it when it is missing and
it can (root).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import subprocess
from dataclasses import dataclass, field

import numpy as np
from transformers import HfArgumentParser



from .stages import write_jsonl


NUMBERS = {
    "eng": ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"],
    "deu": ["zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun", "zehn"],
    "fra": ["deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf", "dix"],
    "spa": ["dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve", "diez"],
}
# colour: English, German (plural, no article), French (masculine, feminine plural), Spanish (masculine, feminine plural)
COLOURS = [
    ("red", "rote", ("rouges", "rouges"), ("rojos", "rojas")),
    ("blue", "blaue", ("bleus", "bleues"), ("azules", "azules")),
    ("green", "grüne", ("verts", "vertes"), ("verdes", "verdes")),
    ("yellow", "gelbe", ("jaunes", "jaunes"), ("amarillos", "amarillas")),
    ("black", "schwarze", ("noirs", "noires"), ("negros", "negras")),
    ("white", "weiße", ("blancs", "blanches"), ("blancos", "blancas")),
]
# animal plural: English, German, French (word, feminine?), Spanish (word, feminine?)
ANIMALS = [
    ("cats", "Katzen", ("chats", False), ("gatos", False)),
    ("dogs", "Hunde", ("chiens", False), ("perros", False)),
    ("birds", "Vögel", ("oiseaux", False), ("pájaros", False)),
    ("horses", "Pferde", ("chevaux", False), ("caballos", False)),
    ("fish", "Fische", ("poissons", False), ("peces", False)),
    ("cows", "Kühe", ("vaches", True), ("vacas", True)),
]
VOICES = {"eng": "en-us", "deu": "de", "fra": "fr-fr", "spa": "es"}
DEMO_LANGUAGES = tuple(VOICES)


def sentence(lang: str, number: int, colour: int, animal: int) -> str:
    """The template sentence in `lang` (grammatical agreement included)."""
    if lang not in VOICES:
        raise ValueError(f"The demo lexicon has no {lang!r}; choose from {DEMO_LANGUAGES}.")
    num = NUMBERS[lang][number]
    col, ani = COLOURS[colour], ANIMALS[animal]
    if lang == "eng":
        return f"I see {num} {col[0]} {ani[0]}."
    if lang == "deu":
        return f"Ich sehe {num} {col[1]} {ani[1]}."
    if lang == "fra":
        word, feminine = ani[2]
        return f"Je vois {num} {word} {col[2][feminine]}."
    if lang == "spa":
        word, feminine = ani[3]
        return f"Veo {num} {word} {col[3][feminine]}."


@dataclass
class CorpusArguments:
    output_dir: str = field(default="demo_data", metadata={"help": "Where to write audio and manifests."})
    languages: str = field(default="eng,deu,fra", metadata={"help": f"Comma-separated, from {','.join(DEMO_LANGUAGES)}."})
    held_out: int = field(default=60, metadata={"help": "Sentences kept out of training (the test set)."})
    seed: int = field(default=0)


def ensure_espeak() -> str:
    """Path of espeak-ng, installing Debian's package when missing and possible."""
    path = shutil.which("espeak-ng")
    if path:
        return path
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "espeak-ng"], check=False, capture_output=True)
        path = shutil.which("espeak-ng")
        if path:
            return path
    raise RuntimeError("espeak-ng is needed for the demo corpus: install it with `apt-get install espeak-ng`.")


def speak(espeak: str, text: str, voice: str, rate: int, pitch: int, path: str) -> None:
    """Synthesize `text` to a 16 kHz mono wav at `path`."""
    import librosa
    import soundfile

    tmp = path + ".22k.wav"
    result = subprocess.run([espeak, "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", tmp, text],
                            capture_output=True, text=True)
    if result.returncode != 0 or not os.path.exists(tmp):
        raise RuntimeError(f"espeak-ng failed for {voice!r} {text!r}: {result.stderr.strip()}")
    audio, sr = soundfile.read(tmp, dtype="float32")
    os.remove(tmp)
    audio = librosa.resample(audio, orig_sr=sr, target_sr=16000)
    soundfile.write(path, audio.astype(np.float32), 16000)


def make_corpus(args: CorpusArguments) -> dict:
    """Write the corpus; returns counts. Existing wavs are kept (re-running only adds what is missing)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    languages = [lang.strip() for lang in args.languages.split(",") if lang.strip()]
    unknown = [lang for lang in languages if lang not in VOICES]
    if unknown or len(languages) < 2:
        raise ValueError(f"--languages needs at least two of {DEMO_LANGUAGES}; got {args.languages!r}.")
    espeak = ensure_espeak()
    combos = list(itertools.product(range(9), range(6), range(6)))
    rng = random.Random(args.seed)
    test_ids = set(rng.sample(range(len(combos)), args.held_out))
    jobs = []
    for lang in languages:
        os.makedirs(os.path.join(args.output_dir, "audio", lang), exist_ok=True)
        for index, combo in enumerate(combos):
            path = os.path.join(args.output_dir, "audio", lang, f"{index:03d}.wav")
            if not os.path.exists(path):
                jobs.append((sentence(lang, *combo), VOICES[lang], rng.randint(140, 200), rng.randint(30, 70), path))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(tqdm(pool.map(lambda job: speak(espeak, *job), jobs), total=len(jobs), desc="espeak-ng", unit="clip"))

    texts = {str(i): {lang: sentence(lang, *combo) for lang in languages} for i, combo in enumerate(combos)}
    splits = {"train": [], "test": []}
    for index in range(len(combos)):
        split = "test" if index in test_ids else "train"
        for src, tgt in itertools.permutations(languages, 2):
            splits[split].append({
                "audio": f"audio/{src}/{index:03d}.wav", "src_lang": src, "tgt_lang": tgt,
                "transcript": texts[str(index)][src], "translation": texts[str(index)][tgt],
                "key": f"{index:03d}_{src}_{tgt}", "sentence_id": index,
            })
    for split, rows in splits.items():
        write_jsonl(os.path.join(args.output_dir, f"{split}.jsonl"), rows)
    with open(os.path.join(args.output_dir, "texts.json"), "w", encoding="utf-8") as handle:
        json.dump({"languages": languages, "test_ids": sorted(test_ids), "texts": texts}, handle, ensure_ascii=False)
    return {"clips": len(combos) * len(languages), "synthesized": len(jobs),
            "train_rows": len(splits["train"]), "test_rows": len(splits["test"])}


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(CorpusArguments).parse_args_into_dataclasses(args=argv)
    counts = make_corpus(args)
    print(json.dumps(counts))
    return counts

