"""The evaluation's reports: the results table (`results.md`), the source x target BLEU heatmap, and the comparison
with another system's per-direction BLEU (the paper's table)."""

from __future__ import annotations

import json
import math

from ..cli.safe_io import atomic_write
from ..languages_llm_srt import normalize_language

def _rate(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def markdown(results: dict) -> str:
    lines = [f"# {results['task'].upper()} results: {results['model']}", ""]
    if results.get("fingerprint", {}).get("shared_transcript"):
        lines += ["Decoded with `--shared_transcript` (each clip's transcript once for all its targets), not the "
                  "paper's independent decoding.", ""]
    lines += ["| direction | count | BLEU | chrF++ | WER/CER | off-target | transcript off-target | empty | too short to "
              "judge | loops |", "|---|---|---|---|---|---|---|---|---|---|"]
    quality = results.get("quality", {})
    for key, d in results["directions"].items():
        bleu = f"{d['bleu']['score']:.1f}" if "bleu" in d else "-"
        wer = f"{d['wer']['score']:.3f} ({d['wer']['metric']})" if "wer" in d else "-"
        q = quality.get("directions", {}).get(key, {})
        chrf = f"{q['chrf']['score']:.1f}" if "chrf" in q else "-"
        lines.append(f"| {key} | {d['count']} | {bleu} | {chrf} | {wer} | {_rate(q.get('off_target_rate'))} | "
                     f"{_rate(q.get('transcript_off_target_rate'))} | {_rate(q.get('empty_rate'))} | "
                     f"{_rate(q.get('unjudged_rate'))} | {_rate(q.get('loop_rate'))} |")
    overall = quality.get("overall")
    if overall:
        chrf = f"{overall['chrf']:.1f}" if "chrf" in overall else "-"
        lines.append(f"| **all** | {overall['count']} | - | {chrf} | - | {_rate(overall.get('off_target_rate'))} | "
                     f"{_rate(overall.get('transcript_off_target_rate'))} | {_rate(overall.get('empty_rate'))} | "
                     f"{_rate(overall.get('unjudged_rate'))} | {_rate(overall.get('loop_rate'))} |")
    avg = results["averages"]
    lines += ["", "| average | value |", "|---|---|"]
    if "bleu" in avg:
        lines.append(f"| BLEU, all directions | {avg['bleu']:.2f} |")
        lines += [f"| BLEU, {src} -> X | {v:.2f} |" for src, v in avg["bleu_by_source"].items()]
        lines += [f"| BLEU, X -> {tgt} | {v:.2f} |" for tgt, v in avg["bleu_by_target"].items()]
    if "wer" in avg:
        lines.append(f"| WER/CER, mean over sources | {avg['wer']:.3f} |")
    speed_report = results.get("speed")
    if speed_report:
        rtfx = f"{speed_report['rtfx']:.2f}" if speed_report.get("rtfx") is not None else "-"
        audio = f"{speed_report['audio_seconds']:.1f}" if speed_report.get("audio_seconds") is not None else "-"
        lines += ["", "| speed | value |", "|---|---|", f"| audio seconds | {audio} |",
                  f"| decoding seconds | {speed_report['decode_seconds']:.1f} |", f"| RTFx | {rtfx} |",
                  f"| utterances/s | {speed_report['utterances_per_second']:.2f} |",
                  f"| device, engine | {speed_report['device']}, {speed_report['engine']} |"]
    signatures = sorted({d["bleu"]["signature"] for d in results["directions"].values() if "bleu" in d})
    signatures += sorted({q["chrf"]["signature"] for q in quality.get("directions", {}).values() if "chrf" in q})
    if signatures:
        lines += ["", "sacreBLEU signatures: " + "; ".join(f"`{s}`" for s in signatures)]
    return "\n".join(lines) + "\n"


def bleu_by_pair(results: dict) -> dict[tuple[str, str], float]:
    """BLEU per (source, target) of a results dict."""
    return {(d["src_lang"], d["tgt_lang"]): d["bleu"]["score"] for d in results["directions"].values() if "bleu" in d}


def readable_text_colour(background) -> str:
    """"black" or "white", whichever contrasts more with an RGB(A) background (WCAG relative luminance): black on
    the yellow of high BLEU, white on the purple of low; either gives at least 4.58:1."""
    def linear(channel: float) -> float:
        return channel / 12.92 if channel <= 0.03928 else ((channel + 0.055) / 1.055) ** 2.4

    red, green, blue = (linear(float(c)) for c in background[:3])
    luminance = 0.2126 * red + 0.7152 * green + 0.0722 * blue
    return "black" if (luminance + 0.05) / 0.05 > 1.05 / (luminance + 0.05) else "white"


def heatmap(results: dict, path: str) -> str | None:
    """Source x target BLEU matrix as a PNG, language codes on both axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    bleu = bleu_by_pair(results)
    if not bleu:
        return None
    sources = sorted({s for s, _ in bleu})
    targets = sorted({t for _, t in bleu})
    matrix = np.full((len(sources), len(targets)), np.nan)
    for (s, t), score in bleu.items():
        matrix[sources.index(s), targets.index(t)] = score
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(targets), 1.0 + 0.5 * len(sources)))
    image = ax.imshow(matrix, cmap="viridis", vmin=0)
    ax.set_xticks(range(len(targets)), targets)
    ax.set_yticks(range(len(sources)), sources)
    ax.set_xlabel("target language")
    ax.set_ylabel("source language")
    for i in range(len(sources)):
        for j in range(len(targets)):
            if not math.isnan(matrix[i, j]):
                colour = readable_text_colour(image.cmap(image.norm(matrix[i, j])))
                ax.text(j, i, f"{matrix[i, j]:.1f}", ha="center", va="center", color=colour, fontsize=7)
    ax.set_title(f"{results['task'].upper()} BLEU")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, dpi=120, format="png")
    plt.close(fig)
    return path


def load_comparison(path: str, system: str) -> dict[tuple[str, str], float]:
    """BLEU per (src, tgt) from one of our results.json or from the paper's table (`{"bleu": {"deu_eng": {...}}}`)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"--compare {path}: not valid JSON ({error}).") from None
    if not isinstance(data, dict):
        raise ValueError(f"--compare {path}: neither a results.json nor a paper table.")
    if "directions" in data:
        return bleu_by_pair(data)
    table = data.get("bleu")
    if not isinstance(table, dict):
        raise ValueError(f"{path}: neither a results.json nor a paper table with a 'bleu' mapping.")
    out = {}
    for pair, systems in table.items():
        src, _, tgt = pair.replace("-", "_").partition("_")
        if system not in systems:
            raise ValueError(f"{path}: no system {system!r} for {pair}; it has {sorted(systems)}.")
        out[(normalize_language(src), normalize_language(tgt))] = systems[system]
    return out


def compare(results: dict, other: dict[tuple[str, str], float], label: str) -> str:
    ours = bleu_by_pair(results)
    common = sorted(set(ours) & set(other))
    lines = [f"| direction | ours | {label} | difference |", "|---|---|---|---|"]
    lines += [f"| {s}-{t} | {ours[(s, t)]:.1f} | {other[(s, t)]:.1f} | {ours[(s, t)] - other[(s, t)]:+.1f} |"
              for s, t in common]
    if common:
        mean = sum(ours[p] - other[p] for p in common) / len(common)
        lines.append(f"| mean over {len(common)} directions | | | {mean:+.2f} |")
    else:
        lines.append("| (no direction in common) | | | |")
    return "\n".join(lines)


def non_speech_markdown(results: dict) -> str:
    """The non-speech check as a table: per clip, what the model wrote with the speech detector off and on."""
    off, on = results["no_vad"], results["vad"]
    lines = [f"# Non-speech check ({results['task']}, {results['src_lang']}"
             f"{'-' + results['tgt_lang'] if results.get('tgt_lang') else ''}): {results['model']}", "",
             "| clip | text written (detector off) | detector on |", "|---|---|---|"]
    for clip in off["text"]:
        lines.append(f"| {clip} | {off['text'][clip][:80] or '-'} | {on['text'][clip][:80] or '-'} |")
    lines += ["", f"Text written where nothing was spoken: {_rate(off['hallucination_rate'])} of clips with the "
              f"speech detector off ({off['windows_decoded']} windows decoded), {_rate(on['hallucination_rate'])} "
              f"with it on ({on['windows_decoded']} windows decoded)."]
    return "\n".join(lines) + "\n"


__all__ = ["bleu_by_pair", "compare", "heatmap", "load_comparison", "markdown", "non_speech_markdown"]
