"""Scoring and inference: Dice/ASSD, whole-volume prediction, reports, NIfTI output, figures."""
from __future__ import annotations

from .errors import EvaluateError
from .figures import collect_features, dice_bars, feature_tsne, overlay_figure, training_curves
from .inference import predict_volume, resolve_device
from .label_free import label_free_indicators
from .metrics import assd, dice, score_case
from .predict import predict_files
from .report import evaluate_checkpoint, summarise, write_reports

__all__ = [
    "dice", "assd", "score_case", "predict_volume", "resolve_device", "evaluate_checkpoint",
    "summarise", "write_reports", "predict_files", "overlay_figure", "dice_bars",
    "training_curves", "feature_tsne", "collect_features", "EvaluateError", "label_free_indicators",
]
