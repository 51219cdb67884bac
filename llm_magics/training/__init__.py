"""Training from scratch, continued pre-training, (LoRA) fine-tuning and classifier tuning.

options.py (what a run is asked and reports), models.py (what it trains), batches.py (what it sees),
loop.py (the one optimizer loop), checkpoints.py (resumable state), scoring.py (losses and metrics).
"""

from .batches import EpochBatches
from .checkpoints import STATE_FILE, check_checkpoint, save_checkpoint
from .loop import finetune, train_causal_lm
from .models import (
    CONFIG_SIZES,
    byte_tokenizer,
    check_lora_rank,
    classifier_from,
    head_labels,
    new_model,
    resolve_tokenizer,
    scratch_config,
)
from .options import TrainOptions, TrainResult
from .scoring import classification_metrics, predict_labels

__all__ = [
    "EpochBatches",
    "STATE_FILE",
    "check_checkpoint",
    "save_checkpoint",
    "finetune",
    "train_causal_lm",
    "CONFIG_SIZES",
    "byte_tokenizer",
    "check_lora_rank",
    "classifier_from",
    "head_labels",
    "new_model",
    "resolve_tokenizer",
    "scratch_config",
    "TrainOptions",
    "TrainResult",
    "classification_metrics",
    "predict_labels",
]
