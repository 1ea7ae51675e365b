"""LLM-SRT BLEU as an `evaluate` module: sacreBLEU corpus BLEU, tokenized by target language as the paper does.

    import evaluate
    from llm_srt.evaluation.metrics import evaluate_module_path
    bleu = evaluate.load(evaluate_module_path("bleu"))          # offline: a local module
    bleu.compute(predictions=["Ich sehe Katzen."], references=["Ich sehe Katzen."], tgt_lang="deu")
    bleu.compute(predictions=["Ich sehe Katzen."], references=[["Ich sehe Katzen.", "Ich sehe die Katzen."]],
                 tgt_lang="deu")                            # several references per row, as sacrebleu takes them
"""

import datasets
import evaluate

from llm_srt.evaluation.metrics import corpus_bleu


class LlmSrtBleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="sacreBLEU corpus BLEU with `char` tokenization for tha jpn kor zho/cmn yue, `13a` otherwise.",
            citation="Du et al., Making LLMs Better Many-to-Many Speech-to-Text Translators with Curriculum "
            "Learning, ACL 2025; Post, A Call for Clarity in Reporting BLEU Scores, WMT 2018.",
            inputs_description="predictions: list of str; references: list of str, or a list of lists of str (several "
            "references per row, as sacrebleu takes them); tgt_lang: target language code.",
            features=[
                datasets.Features({"predictions": datasets.Value("string"),
                                   "references": datasets.Sequence(datasets.Value("string"))}),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            reference_urls=["https://github.com/mjpost/sacrebleu"],
        )

    def _compute(self, predictions, references, tgt_lang="eng"):
        result = corpus_bleu(predictions, references, tgt_lang)
        return {"score": result["score"], "signature": result["signature"], "count": result["count"]}
