"""`%%llm eval`: perplexity, accuracy, F1, BLEU and ROUGE on a data file, with the field's libraries
(scikit-learn, sacrebleu, rouge-score); perplexity is exp of the model's own mean token loss.

A stop (interrupt, Stop button, `Session.stop()`) ends the whole evaluation between examples: the result
is marked partial, its value is nan (a score over part of the data is not the score)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .base.errors import LLMError, no_model
from .base.interrupts import StopFlag
from .data import Corpus, Preparation, classification_examples, data_cache, packed_tokens
from .generation import SamplingSettings, generate_ids
from .loading import CLASSIFIER, LoadedModel, context_length, require_causal

METRICS = ("perplexity", "accuracy", "f1", "bleu", "rouge")


@dataclass
class EvalResult:
    metric: str
    value: float
    details: dict = field(default_factory=dict)
    examples: int = 0
    partial: bool = False  # stopped before the end: `value` is nan, `details["so_far"]` what was reached
    total: int = 0  # examples (windows for perplexity) there were to score

    def summary(self) -> str:
        if self.partial:
            return (
                f"{self.metric}: partial: {self.examples} of {self.total} "
                f"{'windows' if self.metric == 'perplexity' else 'examples'}, stopped (not a score)"
            )
        extra = ", ".join(f"{k} {v:.4f}" for k, v in self.details.items() if isinstance(v, float))
        return f"{self.metric}: {self.value:.4f} on {self.examples} examples" + (f" ({extra})" if extra else "")


def evaluate(
    loaded: LoadedModel | None,
    metric: str,
    corpus: Corpus,
    *,
    max_new_tokens: int,
    seq_len: int,
    stop: StopFlag,
    max_tokens: int | None,
    prep: Preparation,
) -> EvalResult:
    if loaded is None:
        raise no_model("eval")
    if metric not in METRICS:
        raise LLMError(f"unknown --metric {metric!r}: use {', '.join(METRICS)}")
    if metric == "perplexity":
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
            raise LLMError(
                f"--seq-len must be at least 2 for perplexity (a window predicts its next tokens); got {seq_len!r}"
            )
        return _perplexity(loaded, corpus, seq_len, stop, max_tokens, prep)
    if metric in ("accuracy", "f1"):
        return _classification(loaded, metric, corpus, stop)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise LLMError(f"--max-new-tokens must be at least 1; got {max_new_tokens!r}")
    return _generation(loaded, metric, corpus, max_new_tokens, stop)


def _stopped(metric: str, done: int, total: int, so_far: float | None) -> EvalResult:
    return EvalResult(
        metric, math.nan, {} if so_far is None else {"so_far": so_far}, examples=done, partial=True, total=total
    )


@torch.no_grad()
def _perplexity(
    loaded: LoadedModel, corpus: Corpus, seq_len: int, stop: StopFlag, max_tokens: int | None, prep: Preparation
) -> EvalResult:
    require_causal(loaded, "eval", "perplexity scores next tokens")
    seq_len = min(seq_len, context_length(loaded.model) or seq_len)
    stream = packed_tokens(corpus, loaded.tokenizer, prep, max_tokens, data_cache())  # tokenized once, cached
    prep.close()
    if stream is None:  # stopped while tokenizing
        return _stopped("perplexity", 0, 0, None)
    starts = [s for s in range(0, max(len(stream) - 1, 1), seq_len) if min(seq_len, len(stream) - s) >= 2]
    if not starts or _own_tokens(stream, loaded.tokenizer) < 2:  # one token + the EOS we append scores only EOS
        raise LLMError("the text is too short for perplexity: it needs at least 2 tokens")
    total, count = 0.0, 0
    loaded.model.eval()
    for done, start in enumerate(starts):  # non-overlapping windows
        if stop.requested:
            return _stopped("perplexity", done, len(starts), math.exp(total / count) if count else None)
        window = torch.from_numpy(stream.read(start, seq_len)).unsqueeze(0).to(loaded.device)
        loss = loaded.model(input_ids=window, labels=window).loss
        total += float(loss) * (window.shape[1] - 1)
        count += window.shape[1] - 1
    mean = total / max(count, 1)
    return EvalResult("perplexity", math.exp(mean), {"loss": mean}, examples=len(corpus), total=len(starts))


def _own_tokens(stream, tokenizer) -> int:
    """The text's own tokens: the stream less the EOS appended after each document."""
    if tokenizer.eos_token_id is None:
        return len(stream)
    documents = sum(len(shard) for shard in stream.shards)
    return min(len(stream), int(stream.starts[-1]) - documents)


def _classification(loaded: LoadedModel, metric: str, corpus: Corpus, stop: StopFlag) -> EvalResult:
    from .training.scoring import label_scores, predict_labels

    if loaded.kind != CLASSIFIER:
        raise LLMError(f"{metric} needs a classifier: run `%%llm finetune --task classify --labels ...` first")
    config = loaded.model.config
    labels = [config.id2label[i] for i in range(config.num_labels)]  # type: ignore[index, arg-type]  # transformers: id2label may be None or str-keyed; a classifier's is int-keyed
    examples = classification_examples(
        loaded.tokenizer,
        corpus.dataset.to_list(),
        labels,
        512,
        corpus.text_field,
        lambda row: lambda: corpus.where(row),
    )
    predicted = predict_labels(loaded, examples, stop=stop)
    if len(predicted) < len(examples):
        return _stopped(metric, len(predicted), len(examples), None)
    scores = label_scores([e["labels"] for e in examples], predicted)
    other = "f1" if metric == "accuracy" else "accuracy"
    return EvalResult(metric, scores[metric], {other: scores[other]}, examples=len(examples), total=len(examples))


def _generation(loaded: LoadedModel, metric: str, corpus: Corpus, max_new_tokens: int, stop: StopFlag) -> EvalResult:
    require_causal(loaded, "eval", f"{metric} compares generated text")
    pairs = []
    for row, record in enumerate(corpus.dataset):
        if record.get("prompt") is None or record.get("response") is None:
            raise LLMError(f"{corpus.where(row)}: {metric} needs 'prompt' and 'response' fields")
        pairs.append((str(record["prompt"]), str(record["response"])))
    settings = SamplingSettings(max_new_tokens=max_new_tokens, do_sample=False)
    predictions = []
    for prompt, _ in pairs:
        if stop.requested:
            break
        if getattr(loaded.tokenizer, "chat_template", None):
            inputs = loaded.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=True, return_tensors="pt"
            )
        else:
            inputs = loaded.tokenizer(prompt, return_tensors="pt")
        answer = generate_ids(loaded, dict(inputs), prompt, settings, stop=stop, compile=False)  # type: ignore[arg-type]  # return_dict=True: a BatchEncoding
        if answer.interrupted:
            break  # an answer cut short is not the model's answer
        predictions.append(answer.text.strip())
    if len(predictions) < len(pairs):
        return _stopped(metric, len(predictions), len(pairs), None)
    references = [response for _, response in pairs]
    if metric == "bleu":
        import sacrebleu

        bleu = sacrebleu.corpus_bleu(predictions, [references])
        return EvalResult("bleu", bleu.score, {"brevity_penalty": bleu.bp}, len(pairs), total=len(pairs))
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(reference, prediction) for reference, prediction in zip(references, predictions)]
    means = {name: sum(s[name].fmeasure for s in scores) / len(scores) for name in ("rouge1", "rouge2", "rougeL")}
    return EvalResult("rouge", means["rougeL"], means, len(pairs), total=len(pairs))
