"""--amp auto|on|off on the CPU: bf16 autocast and channels_last only where the CPU has bf16 and a probe shows a gain;
the decision recorded in config.json and replayed on resume; checkpoints and export stay fp32."""

import json

import pytest
import torch
from cli_helpers import clf
from torch import nn
from train_helpers import make_data, resume, train

from clf.config import TrainConfig
from clf.train import precision as pr
from clf.train.config_file import read_config_file

AMX_CPUINFO = "processor : 0\nflags : fpu sse avx512f avx512_bf16 amx_bf16 amx_tile\n"
AVX512_BF16_CPUINFO = "flags : fpu avx512f avx512_bf16\n"
AMD_CPUINFO = "flags : fpu sse avx2 avx512f\n"
CONV = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
MLP = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
NATIVE_BF16 = pr.cpu_bf16_support() is not None


def timer(fp32: float, bf16: float, bf16_channels_last: float, calls: list | None = None):
    def seconds(precision: pr.Precision) -> float:
        if calls is not None:
            calls.append(precision.label)
        if precision.amp_dtype is None:
            return fp32
        return bf16_channels_last if precision.channels_last else bf16
    return seconds


def test_the_cpu_flags_name_native_bf16():
    assert pr.cpu_bf16_support(AMX_CPUINFO) == "AMX"
    assert pr.cpu_bf16_support(AVX512_BF16_CPUINFO) == "AVX512-BF16"
    assert pr.cpu_bf16_support(AMD_CPUINFO) is None


def test_auto_takes_bf16_only_when_the_cpu_has_it_and_the_probe_agrees():
    chosen = pr.choose_cpu_precision("auto", "AMX", CONV, timer(1.0, 0.5, 0.4))
    assert chosen.label == "bf16+channels_last"
    assert chosen.reason == "cpu bf16 autocast, channels_last (AMX; probe 2.5x)"
    assert pr.choose_cpu_precision("auto", "AMX", CONV, timer(1.0, 0.5, 0.6)).label == "bf16"
    assert pr.choose_cpu_precision("auto", "AMX", MLP, timer(1.0, 0.5, 0.1)).label == "bf16"  # no convolutions
    slower = pr.choose_cpu_precision("auto", "AMX", CONV, timer(1.0, 1.2, 1.1))
    assert slower.label == "fp32" and "not faster" in slower.reason
    assert pr.choose_cpu_precision("auto", "AMX", CONV, timer(1.0, 0.95, 0.95)).label == "fp32"  # within noise


def test_auto_without_bf16_off_and_cuda_do_not_probe():
    calls: list[str] = []
    none = pr.choose_cpu_precision("auto", None, CONV, timer(1.0, 0.1, 0.1, calls))
    assert (none.label, none.reason) == ("fp32", "fp32 (no bf16 on this CPU)")
    off = pr.choose_cpu_precision("off", "AMX", CONV, timer(1.0, 0.1, 0.1, calls))
    assert (off.label, off.reason) == ("fp32", "fp32 (--amp off)")
    cuda = pr.choose_cpu_precision("cuda", "AMX", CONV, timer(1.0, 0.1, 0.1, calls))
    assert cuda.label == "fp32" and cuda.reason.startswith("fp32 (--amp cuda")  # mixed precision on CUDA only
    assert calls == []


def test_the_default_is_auto_and_takes_bf16_where_the_cpu_has_it_and_the_probe_shows_it_faster():
    assert TrainConfig(data="d").amp == "auto"
    calls: list[str] = []
    chosen = pr.choose_cpu_precision(TrainConfig(data="d").amp, "AMX", CONV, timer(1.0, 0.5, 0.4, calls))
    assert chosen.label == "bf16+channels_last" and chosen.reason.startswith("cpu bf16 autocast, channels_last")
    assert len(calls) == 3  # fp32, bf16, bf16 + channels_last
    slower = pr.choose_cpu_precision(TrainConfig(data="d").amp, "AMX", CONV, timer(1.0, 0.95, 0.95))
    assert slower.label == "fp32"  # within MIN_GAIN of fp32: the noise of a busy machine does not flip it


def test_on_takes_bf16_even_when_slower_and_warns_without_native_bf16(caplog):
    assert pr.choose_cpu_precision("on", "AMX", MLP, timer(1.0, 2.0, 2.0)).label == "bf16"
    chosen = pr.choose_cpu_precision("on", None, CONV, timer(1.0, 3.0, 2.0))
    assert chosen.label == "bf16+channels_last"
    assert "no AMX or AVX512-BF16" in caplog.text


def test_the_probe_leaves_the_model_and_the_random_stream_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seconds = pr.probe_step_timer(model, batch=4, img_size=16, classes=2)
    assert seconds(pr.Precision(torch.bfloat16, True, "")) > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_an_old_config_with_amp_true_or_false_still_loads_as_fp32_on_the_cpu():
    saved = TrainConfig(data="d").to_dict()
    del saved["precision"]
    old_on, old_off = TrainConfig.from_saved({**saved, "amp": True}), TrainConfig.from_saved({**saved, "amp": False})
    assert (old_on.amp, old_on.precision) == ("cuda", "fp32")  # it trained in fp32 on the CPU: resume keeps that
    assert (old_off.amp, old_off.precision) == ("off", "fp32")


def test_a_bad_amp_is_one_line(tmp_path):
    result = clf("train", tmp_path, "--amp", "maybe")
    assert result.exit_code == 2 and "maybe" in result.output


def test_off_and_the_old_no_amp_train_in_fp32_and_record_it(tmp_path):
    data = make_data(tmp_path / "data", n_per_class=6)
    result = train(data, tmp_path / "runs", "off", amp="off", img_size=16)
    assert json.loads((result.run_dir / "config.json").read_text())["train"]["precision"] == "fp32"
    old = clf("train", data, "--arch", "cnn", "--img-size", "16", "--epochs", "1", "--workers", "0", "--device", "cpu",
              "--quiet", "--out", tmp_path / "runs", "--name", "old", "--no-amp")
    assert old.exit_code == 0, old.output
    recorded = json.loads((tmp_path / "runs" / "old" / "config.json").read_text())["train"]
    assert (recorded["amp"], recorded["precision"]) == ("off", "fp32")


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no AMX or AVX512-BF16: --amp on would be emulated bf16")
def test_on_trains_in_bf16_keeps_fp32_weights_resumes_in_bf16_and_exports_with_parity(tmp_path):
    data = make_data(tmp_path / "data", n_per_class=6)
    first = train(data, tmp_path / "runs", "bf16", amp="on", img_size=16, epochs=1)
    recorded = json.loads((first.run_dir / "config.json").read_text())["train"]["precision"]
    assert recorded.startswith("bf16")
    ckpt = torch.load(first.run_dir / "last.pt", map_location="cpu", weights_only=False)
    floats = [t for t in ckpt["model"].values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float32 for t in floats)  # fp32 master weights
    resumed = resume(first.run_dir, epochs=2, amp="off")  # the recorded precision wins over today's --amp
    assert json.loads((resumed.run_dir / "config.json").read_text())["train"]["precision"] == recorded
    result = clf("export", resumed.run_dir, "--exporter", "torchscript", "--batch-sizes", "1,3")
    assert result.exit_code == 0, result.output


def test_a_recipe_with_a_bool_amp_and_a_replayed_run_leave_the_cpu_decision_to_the_new_run(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("amp: off\nepochs: 2\n")  # YAML 1.1 reads unquoted off as false
    assert read_config_file(recipe).settings["amp"] == "off"
    train_settings = {**TrainConfig(data="/d", precision="bf16+channels_last").to_dict(), "amp": True}
    (tmp_path / "config.json").write_text(json.dumps({"train": train_settings}))
    replayed = read_config_file(tmp_path / "config.json").settings
    assert replayed["amp"] == "cuda" and "precision" not in replayed
