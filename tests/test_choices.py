"""clf.choices: the names users choose from, in step with the code that gives each its meaning, light to import."""

from __future__ import annotations

import subprocess
import sys

import clf.config
from clf import choices
from clf.export import graph, targets
from clf.serve import session


def test_every_export_target_name_has_its_function_in_the_registry():
    assert tuple(targets.TARGETS) == choices.EXPORT_TARGETS


def test_every_device_name_has_its_onnxruntime_providers():
    assert tuple(session._PREFERENCE) == choices.DEVICES
    assert set(session._REQUESTED) <= set(choices.DEVICES)


def test_every_exporter_name_but_auto_has_its_exporter_and_opsets():
    assert ("auto", *graph._EXPORTERS) == choices.EXPORTERS
    assert set(graph._EXPORTERS) == set(choices.OPSETS)


def test_the_old_homes_still_give_the_same_objects():
    """Code and tests that read the choices from config, export.graph or serve.session keep working."""
    assert session.DEVICES is choices.DEVICES and graph.OPSETS is choices.OPSETS and graph.MAX_BATCH == 4096
    assert graph.check_exporter_opset is choices.check_exporter_opset
    for name in ("TTA_VIEWS", "RESIZE_MODES", "INTERPOLATIONS", "OPTIMIZERS", "SCHEDULERS", "TRAIN_DEVICES",
                 "AUGMENT_PRESETS", "AUTO_AUGMENTS", "AVERAGES", "CALIBRATION_METHODS", "ID_FORMATS", "TOPK_FORMATS",
                 "MIN_INT8_OPSET"):
        assert getattr(clf.config, name) is getattr(choices, name), name


def test_config_and_choices_import_nothing_above_the_ground():
    code = ("import sys\nimport clf.config, clf.choices\n"
            "from clf.config import ExportConfig, ServeConfig, InferConfig\n"
            "ExportConfig(checkpoint='x'); ServeConfig(model='m.onnx'); InferConfig(images='i', model='m.onnx')\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('clf.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    config_modules = ["clf.config", "clf.config.base", "clf.config.checking", "clf.config.distilling",
                      "clf.config.exporting", "clf.config.preprocess", "clf.config.reporting", "clf.config.serving",
                      "clf.config.tracking", "clf.config.training", "clf.config.tuning"]
    assert out.split() == ["clf.choices", *config_modules, "clf.errors"]
