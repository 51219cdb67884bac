"""Training from scratch, continued pre-training, (LoRA) fine-tuning and classifier tuning.

run.py (one run, from its RunSpec to its record), loop.py (the one optimizer loop), models.py (what it
trains), batches.py (what it sees), checkpoints.py (resumable state), scoring.py (losses and metrics),
options.py (what a run reports; what it is asked is llm_magics/options.py's RunSpec).
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
from .options import RunSpec, TrainOptions, TrainResult
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
    "RunSpec",
    "TrainOptions",
    "TrainResult",
    "classification_metrics",
    "predict_labels",
]
