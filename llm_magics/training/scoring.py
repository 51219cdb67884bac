"""Scores computed during and after training: mean token loss, classifier predictions, accuracy and F1."""

from __future__ import annotations

import torch

from ..base.interrupts import StopFlag
from ..data import IGNORE_INDEX
from ..loading import LoadedModel
from .batches import padded_batches


@torch.no_grad()
def mean_loss(loaded: LoadedModel, batches: list[dict]) -> float:
    was_training = loaded.model.training
    loaded.model.eval()
    total, count = 0.0, 0
    for batch in batches:
        batch = {k: v.to(loaded.device) for k, v in batch.items()}
        tokens = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += float(loaded.model(**batch).loss) * tokens
        count += tokens
    loaded.model.train(was_training)
    return total / max(count, 1)


@torch.no_grad()
def predict_labels(
    loaded: LoadedModel, examples: list[dict], batch_size: int = 16, stop: StopFlag | None = None
) -> list[int]:
    """The predicted label of each example; a stop ends it between batches (fewer predictions come back)."""
    was_training = loaded.model.training
    loaded.model.eval()
    predictions = []
    for batch in padded_batches(loaded, examples, batch_size):
        if stop is not None and stop.requested:
            break
        batch = {k: v.to(loaded.device) for k, v in batch.items() if k != "labels"}
        predictions += loaded.model(**batch).logits.argmax(-1).tolist()
    loaded.model.train(was_training)
    return predictions


def label_scores(truth: list[int], predicted: list[int]) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
    }


def classification_metrics(loaded: LoadedModel, examples: list[dict], batch_size: int = 16) -> dict:
    return label_scores([e["labels"] for e in examples], predict_labels(loaded, examples, batch_size))
