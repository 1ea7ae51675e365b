"""LLM-SRT WER as an `evaluate` module: Whisper's BasicTextNormalizer, then jiwer WER (CER for unspaced scripts).

    import evaluate
    from llm_srt.evaluation.metrics import evaluate_module_path
    wer = evaluate.load(evaluate_module_path("wer"))
    wer.compute(predictions=["i see cats"], references=["I see cats."], language="eng")
"""

import datasets
import evaluate

from llm_srt.evaluation.metrics import error_rate


class LlmSrtWer(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="WER (CER for jpn kor tha zho/cmn yue) after Whisper's BasicTextNormalizer, with jiwer.",
            citation="Du et al., ACL 2025; Radford et al., Whisper, 2022.",
            inputs_description="predictions: list of str; references: list of str; language: the speech's language; "
            "english_normalizer: Whisper's English normalizer for English.",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            reference_urls=["https://github.com/jitsi/jiwer"],
        )

    def _compute(self, predictions, references, language="eng", english_normalizer=False):
        result = error_rate(predictions, references, language, english_normalizer=english_normalizer)
        return {"score": result["score"], "metric": result["metric"], "count": result["count"]}
