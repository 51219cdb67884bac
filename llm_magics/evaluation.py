"""`%%llm eval`: perplexity, accuracy, F1, BLEU and ROUGE on a data file, with the field's libraries
(scikit-learn, sacrebleu, rouge-score); perplexity is exp of the model's own mean token loss."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .data import Corpus, Preparation, classification_examples, data_cache, packed_tokens
from .errors import LLMError, no_model
from .generation import SamplingSettings, context_length, generate_ids
from .loading import CAUSAL, CLASSIFIER, LoadedModel

METRICS = ("perplexity", "accuracy", "f1", "bleu", "rouge")


@dataclass
class EvalResult:
    metric: str
    value: float
    details: dict = field(default_factory=dict)
    examples: int = 0

    def summary(self) -> str:
        extra = ", ".join(f"{k} {v:.4f}" for k, v in self.details.items() if isinstance(v, float))
        return f"{self.metric}: {self.value:.4f} on {self.examples} examples" + (f" ({extra})" if extra else "")


def evaluate(loaded: LoadedModel | None, metric: str, corpus: Corpus, max_new_tokens: int = 64,
             seq_len: int = 512, max_tokens: int | None = None, prep: Preparation | None = None) -> EvalResult:
    if loaded is None:
        raise no_model("eval")
    if metric not in METRICS:
        raise LLMError(f"unknown --metric {metric!r}: use {', '.join(METRICS)}")
    if metric == "perplexity":
        return _perplexity(loaded, corpus, seq_len, max_tokens, prep or Preparation(progress=False))
    if metric in ("accuracy", "f1"):
        return _classification(loaded, metric, corpus)
    return _generation(loaded, metric, corpus, max_new_tokens)


@torch.no_grad()
def _perplexity(loaded: LoadedModel, corpus: Corpus, seq_len: int, max_tokens: int | None,
                prep: Preparation) -> EvalResult:
    if loaded.kind != CAUSAL:
        raise LLMError("perplexity needs a causal language model")
    seq_len = min(seq_len, context_length(loaded.model) or seq_len)
    stream = packed_tokens(corpus, loaded.tokenizer, prep, max_tokens, data_cache())  # tokenized once, cached
    prep.close()
    total, count = 0.0, 0
    loaded.model.eval()
    for start in range(0, max(len(stream) - 1, 1), seq_len):  # non-overlapping windows
        window = torch.from_numpy(stream.read(start, seq_len)).unsqueeze(0).to(loaded.device)
        if window.shape[1] < 2:
            break
        loss = loaded.model(input_ids=window, labels=window).loss
        total += float(loss) * (window.shape[1] - 1)
        count += window.shape[1] - 1
    mean = total / max(count, 1)
    return EvalResult("perplexity", math.exp(mean), {"loss": mean}, examples=len(corpus))


def _classification(loaded: LoadedModel, metric: str, corpus: Corpus) -> EvalResult:
    from .training import classification_metrics

    if loaded.kind != CLASSIFIER:
        raise LLMError(f"{metric} needs a classifier: run `%%llm finetune --task classify --labels ...` first")
    config = loaded.model.config
    labels = [config.id2label[i] for i in range(config.num_labels)]
    examples = classification_examples(loaded.tokenizer, corpus.dataset.to_list(), labels, 512, corpus.text_field,
                                       lambda row: lambda: corpus.where(row))
    scores = classification_metrics(loaded, examples)
    other = "f1" if metric == "accuracy" else "accuracy"
    return EvalResult(metric, scores[metric], {other: scores[other]}, examples=len(examples))


def _generation(loaded: LoadedModel, metric: str, corpus: Corpus, max_new_tokens: int) -> EvalResult:
    if loaded.kind != CAUSAL:
        raise LLMError(f"{metric} compares generated text: it needs a causal language model")
    pairs = []
    for row, record in enumerate(corpus.dataset):
        if record.get("prompt") is None or record.get("response") is None:
            raise LLMError(f"{corpus.where(row)}: {metric} needs 'prompt' and 'response' fields")
        pairs.append((str(record["prompt"]), str(record["response"])))
    settings = SamplingSettings(max_new_tokens=max_new_tokens, do_sample=False)
    predictions = []
    for prompt, _ in pairs:
        if getattr(loaded.tokenizer, "chat_template", None):
            inputs = loaded.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                          add_generation_prompt=True, return_dict=True,
                                                          return_tensors="pt")
        else:
            inputs = loaded.tokenizer(prompt, return_tensors="pt")
        predictions.append(generate_ids(loaded, dict(inputs), prompt, settings).text.strip())
    references = [response for _, response in pairs]
    if metric == "bleu":
        import sacrebleu

        bleu = sacrebleu.corpus_bleu(predictions, [references])
        return EvalResult("bleu", bleu.score, {"brevity_penalty": bleu.bp}, len(pairs))
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(reference, prediction) for reference, prediction in zip(references, predictions)]
    means = {name: sum(s[name].fmeasure for s in scores) / len(scores) for name in ("rouge1", "rouge2", "rougeL")}
    return EvalResult("rouge", means["rougeL"], means, len(pairs))
