"""clf.train.build: the image cache's auto rule (`--cache-images` unset); --pretrained-path read and recorded."""

from __future__ import annotations

import pytest
import torch

from clf.config import Preprocess
from clf import system
from clf.train import build
from clf.train.runtime import Runtime

PRE_64 = Preprocess(size=(64, 64))
IMAGE_BYTES = 64 * 64 * 3  # one resized uint8 RGB image


def runtime(world_size: int = 1) -> Runtime:
    return Runtime(torch.device("cpu"), None, 0, world_size, 0)


@pytest.fixture
def plenty_of_memory(monkeypatch):
    monkeypatch.setattr(build, "_free_memory_bytes", lambda: 64 * 1024**3)


@pytest.mark.parametrize("requested", [True, False])
def test_a_given_choice_is_kept_whatever_the_size(requested, monkeypatch):
    monkeypatch.setattr(build, "_free_memory_bytes", lambda: 0)
    assert build.resolve_cache(requested, 10**9, PRE_64, runtime()) is requested


def test_auto_caches_up_to_the_cap_and_not_beyond(plenty_of_memory, monkeypatch):
    monkeypatch.setattr(build, "AUTO_CACHE_MAX_BYTES", 1000 * IMAGE_BYTES)
    assert build.resolve_cache(None, 1000, PRE_64, runtime()) is True
    assert build.resolve_cache(None, 1001, PRE_64, runtime()) is False


def test_auto_counts_every_process_on_the_machine(plenty_of_memory, monkeypatch):
    monkeypatch.setattr(build, "AUTO_CACHE_MAX_BYTES", 1000 * IMAGE_BYTES)
    assert build.resolve_cache(None, 500, PRE_64, runtime(world_size=2)) is True
    assert build.resolve_cache(None, 501, PRE_64, runtime(world_size=2)) is False


def test_auto_takes_at_most_a_quarter_of_the_free_memory(monkeypatch):
    monkeypatch.setattr(build, "_free_memory_bytes", lambda: 4 * 100 * IMAGE_BYTES)
    assert build.resolve_cache(None, 100, PRE_64, runtime()) is True
    assert build.resolve_cache(None, 101, PRE_64, runtime()) is False


def test_auto_at_224_px_caches_a_competition_not_imagenet(plenty_of_memory):
    pre = Preprocess(size=(224, 224))
    assert build.resolve_cache(None, 10_000, pre, runtime()) is True  # 1.4 GiB
    assert build.resolve_cache(None, 1_281_167, pre, runtime()) is False  # 180 GiB


def test_free_memory_is_read_from_this_machine():
    free = build._free_memory_bytes()
    assert 0 < free < 2**50


def write(path, text: str):
    path.write_text(text)
    return path


def test_a_container_limit_nearer_than_the_machine_s_free_memory_wins(tmp_path, monkeypatch):
    monkeypatch.setattr(system, "MEMINFO", write(tmp_path / "meminfo", "MemTotal: 100 kB\nMemAvailable: 8000000 kB\n"))
    monkeypatch.setattr(system, "CGROUP_LIMITS", ((write(tmp_path / "max", "3000000000\n"),
                                                  write(tmp_path / "current", "1000000000\n")),))
    assert build._free_memory_bytes() == 2_000_000_000
    write(tmp_path / "max", "max\n")  # cgroup v2 without a limit
    assert build._free_memory_bytes() == 8_000_000 * 1024


def test_cgroup_v1_without_a_limit_and_unreadable_files(tmp_path, monkeypatch):
    monkeypatch.setattr(system, "MEMINFO", tmp_path / "absent")
    v1 = (write(tmp_path / "limit", f"{2**63 - 4096}\n"), write(tmp_path / "usage", "5\n"))
    monkeypatch.setattr(system, "CGROUP_LIMITS", ((tmp_path / "no-v2", tmp_path / "no-v2-usage"), v1))
    assert build._free_memory_bytes() == build.AUTO_CACHE_MAX_BYTES * 4  # neither says anything: the fallback
    write(tmp_path / "limit", "1000\n")
    assert build._free_memory_bytes() == 995


# ---------------------------------------------------------------- --pretrained-path


def _weights_file(tmp_path):
    from clf.models.registry import create_model

    torch.save(create_model("cnn", 3, img_size=32).state_dict(), tmp_path / "w.pt")
    return tmp_path / "w.pt"


def test_the_config_records_the_weights_file_and_its_sha256(tmp_path):
    import hashlib

    from clf.config import TrainConfig

    path = _weights_file(tmp_path)
    cfg, weights = build.pretrained_weights(TrainConfig(arch="cnn", pretrained_path=str(path)))
    assert (cfg.pretrained_path, cfg.pretrained_sha256) == (str(path), hashlib.sha256(path.read_bytes()).hexdigest())
    model, _ = build.build_model(cfg, 3, runtime(), weights=weights)
    assert all(torch.equal(v, weights.state[k]) for k, v in model.state_dict().items())
    assert build.pretrained_weights(cfg, resume_ckpt={"epoch": 1}) == (cfg, None)  # resume: never read again


def test_a_replayed_config_refuses_a_changed_weights_file(tmp_path):
    from clf.config import TrainConfig
    from clf.errors import ModelError

    path = _weights_file(tmp_path)
    with pytest.raises(ModelError) as error:
        build.pretrained_weights(TrainConfig(arch="cnn", pretrained_path=str(path), pretrained_sha256="ab" * 32))
    digest = build.read_pretrained(path).sha256
    assert str(error.value) == (f"{path}: sha256 {digest[:12]}... differs from the abababababab... this configuration "
                                "recorded; pass the file it was made with, or leave pretrained_sha256 out")
