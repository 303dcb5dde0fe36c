"""The CLI shell: help answers fast without heavy imports, sample-data, models, error lines and exit codes."""

import subprocess
import sys

import pytest

from cli_helpers import error_line
from typer.testing import CliRunner

from clf.cli import app

runner = CliRunner()


def test_help_lists_every_promised_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("sample-data", "models", "check", "train", "runs", "export", "infer", "eval", "score", "serve",
                    "augment-preview"):
        assert command in result.output


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys; from typer.testing import CliRunner; from clf.cli import app\n"
        "for args in (['--help'], ['train', '--help'], ['export', '--help'], ['infer', '--help'],\n"
        "             ['check', '--help']):\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
        "heavy = [m for m in ('torch', 'timm', 'onnx', 'onnxruntime', 'cv2', 'matplotlib') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_sample_data_writes_a_competition(tmp_path):
    out = tmp_path / "comp"
    result = runner.invoke(app, ["sample-data", str(out), "--per-class", "3", "--test", "5", "--size", "32"])
    assert result.exit_code == 0, result.output
    assert "wrote 12 training images in 4 classes (circle, square, triangle, star)" in result.output
    assert sorted(p.name for p in (out / "train").iterdir()) == ["circle", "square", "star", "triangle"]
    assert len(list((out / "test").iterdir())) == 5
    assert (out / "sample_submission.csv").read_text().splitlines()[0] == "id,label"


def test_sample_data_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "x.txt").write_text("mine")
    result = runner.invoke(app, ["sample-data", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.startswith("error: ")
    assert "Traceback" not in result.output
    assert (tmp_path / "x.txt").read_text() == "mine"


def test_models_lists_seed_architectures():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    for name in ("cnn", "alexnet", "resnet18", "rexnet_100", "coatnet_0_rw_224"):
        assert name in result.output


def test_models_pattern_and_params():
    result = runner.invoke(app, ["models", "cnn", "--params", "--img-size", "64", "--num-classes", "4"])
    assert result.exit_code == 0, result.output
    assert "cnn" in result.output and "resnet18" not in result.output
    assert "GFLOPs @64" in result.output
    assert "0.29M" in result.output  # SimpleCNN(num_classes=4): 294,516 parameters


def test_models_unknown_pattern_is_an_error():
    result = runner.invoke(app, ["models", "no-such-net*"])
    assert result.exit_code == 2
    assert error_line(result) == "error: no architecture matches 'no-such-net*'; try `clf models` without a pattern"


def test_train_rejects_impossible_values(tmp_path):
    result = runner.invoke(app, ["train", str(tmp_path), "--arch", "cnn", "--val-split", "1.5"])
    assert result.exit_code == 2
    assert error_line(result) == "error: --val-split must be >= 0 and < 1 (0 = no validation)"
    result = runner.invoke(app, ["train", str(tmp_path), "--arch", "cnn", "--translate", "0.75"])
    assert result.exit_code == 2
    assert error_line(result) == "error: --translate must be >= 0 and <= 0.5, got 0.75"


def test_sample_data_under_a_file_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(app, ["sample-data", str(blocker / "comp")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.output.startswith(f"error: {blocker / 'comp'}")


def test_imports_run_one_way():
    """DESIGN: export and eval never import train; serve and the preprocessing never import torch."""
    code = (
        "import sys\n"
        "import clf.export.onnx_export, clf.export.parity\n"
        "assert not [m for m in sys.modules if m.startswith('clf.train')], 'export imported clf.train'\n"
        "sys.modules['torch'] = None  # any later `import torch` fails\n"
        "for name in list(sys.modules):\n"
        "    if name.startswith(('clf.serve', 'clf.data.preprocess', 'clf.data.duplicates', 'clf.data.check')):\n"
        "        del sys.modules[name]\n"
        "import clf.serve.infer, clf.serve.evaluate, clf.serve.score, clf.serve.loading, clf.serve.predictor\n"
        "import clf.serve.session, clf.serve.submission, clf.data.preprocess, clf.data.csv_table\n"
        "import clf.data.duplicates, clf.data.check  # clf check runs where the data is\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


LATE_SIGNAL = """
import atexit, os, signal, sys, weakref
from clf.cli import app

LATE = getattr(signal, sys.argv[1])

class Key:
    pass

def on_death(ref):  # a weakref callback in the teardown, as torch's WeakKeyDictionary callbacks run
    os.kill(os.getpid(), LATE)
    sum(range(1000))

key = Key()
sys.late_refs = [weakref.ref(key, on_death)]

@atexit.register
def teardown():  # the interpreter's teardown drops the last reference
    global key
    del key

sys.argv = ["clf", *sys.argv[2:]]
app()
"""


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_signal_in_the_teardown_after_the_command_prints_nothing(signal_name, tmp_path):
    """Issue 24: Ctrl-C as a command finished printed "Exception ignored in: <function WeakKeyDictionary...>
    KeyboardInterrupt" (and SIGTERM then killed the process). Once the command has ended, its exit code stands."""
    import signal

    script = tmp_path / "late.py"
    script.write_text(LATE_SIGNAL)
    done = subprocess.run([sys.executable, str(script), signal_name, "sample-data", str(tmp_path / "comp"),
                           "--per-class", "2", "--test", "2", "--size", "16"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal
    assert done.returncode == 0, done.stderr
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert (tmp_path / "comp" / "train").is_dir()


def test_a_stop_signal_during_a_c_extensions_import_exits_as_the_stop_not_a_traceback():
    """onnxruntime's import turns a SIGTERM raised inside it into ImportError("initialization failed") whose context
    is the stop: the command exits 143 with the stop's line, and a real ImportError still propagates."""
    import typer

    from clf.cli.app import Terminated, user_errors
    from clf.errors import EXIT_TERMINATED

    def import_stopped() -> None:
        try:
            raise Terminated()
        except Terminated:
            raise ImportError("initialization failed")

    with pytest.raises(typer.Exit) as stopped:
        user_errors(import_stopped)()
    assert stopped.value.exit_code == EXIT_TERMINATED

    def import_broken() -> None:
        raise ImportError("no module named x")

    with pytest.raises(ImportError, match="no module named x"):
        user_errors(import_broken)()
