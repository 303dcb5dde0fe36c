"""Frozen, JSON-serialisable configurations, one per stage.

Everything here is plain data (no torch), so that checkpoints stay ``weights_only``-loadable and the ONNX metadata can
carry the preprocessing to hosts that only have onnxruntime. One module per stage: preprocess (the contract every
stage shares), training, checking (the data report), exporting, serving (infer, eval, serve); base holds what they
share, including `setting`, which declares a field that is also a command-line option.
"""

# The choices live on the ground floor beside this package (clf/choices.py), re-exported here for their old users.
from clf.choices import (AMP_MODES, AUGMENT_PRESETS, AUTO_AUGMENTS, AVERAGES, CALIBRATION_METHODS, DEVICES,
                         EXPORT_TARGETS, ID_FORMATS, INTERPOLATIONS, MAX_BATCH, MIN_INT8_OPSET, OPTIMIZERS,
                         RESIZE_MODES, SCHEDULERS, TOPK_FORMATS, TRAIN_DEVICES, TTA_VIEWS, check_exporter_opset)
from clf.config.base import RESUMABLE, JsonMixin, check_columns, column_checks, field_types, option_flag, setting
from clf.config.distilling import DEFAULT_KD_VIEWS, DISTILL, DistillFields
from clf.config.checking import NEAR_DUPLICATE_DISTANCE, CheckConfig
from clf.config.exporting import (DEFAULT_ATOL, DEFAULT_ATOL_FP16, DEFAULT_CALIBRATION_IMAGES, DEFAULT_MAX_DROP,
                                  DEFAULT_MIN_AGREEMENT, DEFAULT_TRITON_MAX_BATCH, MAX_CALIBRATION_IMAGES,
                                  MODEL_NAME_RULE, ExportConfig, is_safe_model_name)
from clf.config.preprocess import IMAGENET_MEAN, IMAGENET_STD, MAX_INPUT_SIZE, Preprocess
from clf.config.reporting import DEFAULT_GALLERY_IMAGES, MAX_GALLERY_IMAGES, ReportConfig
from clf.config.serving import MAX_BATCH_WAIT_MS, MAX_SERVE_BATCH, EvalConfig, InferConfig, ScoreConfig, ServeConfig
from clf.config.tuning import TuneConfig, parse_duration
from clf.config.training import (AUGMENT_KNOB_RANGES, AUGMENT_KNOBS, AUTO_BATCH_SIZES, DEFAULT_IMG_SIZE,
                                 DEFAULT_IMG_SIZES, LEGACY_VALUES, MAX_SEED, MIN_STEPS_PER_EPOCH, TrainConfig,
                                 auto_batch_size, check_augment_knobs)

__all__ = [
    "AMP_MODES", "AUGMENT_KNOB_RANGES", "AUGMENT_KNOBS", "AUGMENT_PRESETS", "AUTO_AUGMENTS", "AUTO_BATCH_SIZES",
    "AVERAGES",
    "CALIBRATION_METHODS", "DEFAULT_KD_VIEWS", "DISTILL", "DistillFields",
    "DEFAULT_ATOL", "DEFAULT_ATOL_FP16", "DEFAULT_CALIBRATION_IMAGES", "DEFAULT_IMG_SIZE",
    "DEFAULT_IMG_SIZES",
    "DEFAULT_GALLERY_IMAGES", "MAX_GALLERY_IMAGES", "ReportConfig", "DEFAULT_MAX_DROP",
    "DEFAULT_MIN_AGREEMENT", "DEFAULT_TRITON_MAX_BATCH", "DEVICES",
    "EXPORT_TARGETS", "ID_FORMATS", "IMAGENET_MEAN", "IMAGENET_STD", "INTERPOLATIONS", "LEGACY_VALUES", "MAX_BATCH",
    "MAX_BATCH_WAIT_MS", "MAX_CALIBRATION_IMAGES", "MAX_INPUT_SIZE", "MAX_SEED", "MAX_SERVE_BATCH",
    "MIN_INT8_OPSET", "MIN_STEPS_PER_EPOCH", "MODEL_NAME_RULE", "OPTIMIZERS", "RESIZE_MODES", "RESUMABLE",
    "NEAR_DUPLICATE_DISTANCE", "SCHEDULERS", "TOPK_FORMATS", "TRAIN_DEVICES", "TTA_VIEWS", "CheckConfig",
    "EvalConfig", "ExportConfig", "InferConfig", "JsonMixin", "Preprocess", "ScoreConfig", "ServeConfig", "TrainConfig",
    "TuneConfig", "parse_duration",
    "auto_batch_size", "check_augment_knobs", "check_columns", "check_exporter_opset", "column_checks",
    "field_types", "is_safe_model_name", "option_flag", "setting",
]
