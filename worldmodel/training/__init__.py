"""Training and evaluation of world models: a model-agnostic trainer, metrics, DDP glue."""

from worldmodel.training.evaluate import EvalResult, evaluate, score_predictions
from worldmodel.training.metrics import psnr, ssim
from worldmodel.training.trainer import TrainConfig, Trainer, TrainingDivergedError, TrainResult

__all__ = [
    "EvalResult",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDivergedError",
    "evaluate",
    "psnr",
    "score_predictions",
    "ssim",
]
