"""Training: fine-tune a loaded model in place on corrected images, or train from scratch.

    from napari_temdefect.training import TrainingSet, TrainingEntry, TrainConfig, finetune
    ts = TrainingSet([TrainingEntry(image, labels, ignore=ignore_mask, name="img1")])
    result = finetune(model, ts, TrainConfig(depth="deep", minutes=5))

See docs/training.md for the recipe and the options.
"""

from .dataset import TrainingEntry, TrainingSet
from .freeze import apply_freeze, trainable_parameter_count
from .trainer import DEFAULT_STEPS, TrainConfig, TrainResult, finetune, train

__all__ = [
    "DEFAULT_STEPS", "TrainConfig", "TrainResult", "TrainingEntry", "TrainingSet",
    "apply_freeze", "finetune", "train", "trainable_parameter_count",
]
