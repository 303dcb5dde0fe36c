"""Registry: names, building every seed architecture at small sizes, rebuild kwargs, size checks, pretrained."""

import os
import subprocess
import sys
from fnmatch import fnmatchcase
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import torch
from torch import nn

from clf.errors import ModelError
from clf.models import registry
from clf.models.cnn import CNN_DESIGN, SimpleCNN
from clf.models.registry import (
    check_img_size,
    create_model,
    is_known_arch,
    list_models,
    model_kwargs_for,
    takes_img_size,
)

SEED_ARCHS = ["cnn", "alexnet", "resnet18", "rexnet_100", "coatnet_0_rw_224"]
NO_WEIGHTS = (
    "pretrained weights for '{arch}' are not available locally (no network); "
    "train without --pretrained or place the weights in the Hugging Face cache"
)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)  # conftest already pins torch to one thread


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Point the Hugging Face and torch hub caches at empty folders."""
    hub = tmp_path / "hf-hub"
    hub.mkdir()
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return hub


# ---------------------------------------------------------------- names


def test_list_models_starts_with_own_then_timm():
    names = list_models()
    assert names[:2] == ["cnn", "alexnet"]
    for arch in SEED_ARCHS:
        assert arch in names
    assert len(names) == len(set(names))
    assert len(names) > 1000


def test_list_models_pattern_applies_to_all_names():
    assert list_models("cnn") == ["cnn"]
    assert list_models("alex*") == ["alexnet"]
    assert list_models("no_such_model_*") == []
    resnets = list_models("resnet1*")
    assert "resnet18" in resnets and "cnn" not in resnets and "alexnet" not in resnets
    assert all(fnmatchcase(n, "resnet1*") for n in resnets)
    coat = list_models("coatnet_0*")
    assert "coatnet_0_rw_224" in coat and all(n.startswith("coatnet_0") for n in coat)
    assert coat == sorted(coat)


def test_is_known_arch():
    assert is_known_arch("cnn") and is_known_arch("alexnet") and is_known_arch("resnet18")
    assert is_known_arch("resnet18.a1_in1k")  # timm names may carry a pretrained tag
    assert not is_known_arch("nope") and not is_known_arch("")


@pytest.mark.parametrize("call", [lambda: create_model("nope", 3), lambda: model_kwargs_for("nope", 3, 32)])
def test_unknown_arch(call):
    with pytest.raises(ModelError) as info:
        call()
    assert str(info.value) == "unknown architecture 'nope'; see `clf models`"


# ---------------------------------------------------------------- building and rebuilding


@pytest.mark.parametrize(
    ("arch", "size", "kwargs"),
    [
        ("cnn", 32, {"num_classes": 3, **CNN_DESIGN}),
        ("alexnet", 64, {"num_classes": 3}),
        ("resnet18", 32, {"num_classes": 3}),
        ("rexnet_100", 32, {"num_classes": 3}),
        ("coatnet_0_rw_224", 32, {"num_classes": 3, "img_size": 32}),
    ],
)
def test_seed_arch_builds_runs_and_rebuilds(arch, size, kwargs):
    assert model_kwargs_for(arch, 3, size) == kwargs
    model = create_model(arch, num_classes=3, img_size=size).eval()
    assert model.training is False
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()
    check_img_size(arch, size, model)  # the smallest size we use for it works

    rebuilt = create_model(arch, **kwargs).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.allclose(rebuilt(torch.ones(1, 3, size, size)), model(torch.ones(1, 3, size, size)), atol=1e-6)


def test_create_model_types_and_training_mode():
    assert isinstance(create_model("cnn", 2), SimpleCNN)
    assert create_model("cnn", 2).training is True
    assert type(create_model("resnet18", 2)).__name__ == "ResNet"


def test_extra_kwargs_are_forwarded_and_recorded():
    kwargs = model_kwargs_for("cnn", 3, 32, width=8, dropout=0.1)
    assert kwargs == {"num_classes": 3, **CNN_DESIGN, "width": 8, "dropout": 0.1}
    model = create_model("cnn", 3, img_size=32, width=8, dropout=0.1)
    assert model.features[0][0].out_channels == 8
    assert model_kwargs_for("resnet18", 3, 32, drop_rate=0.2) == {"num_classes": 3, "drop_rate": 0.2}
    assert create_model("resnet18", 3, drop_rate=0.2).drop_rate == 0.2


def test_takes_img_size():
    assert takes_img_size("coatnet_0_rw_224") and takes_img_size("vit_tiny_patch16_224")
    assert not any(takes_img_size(a) for a in ["cnn", "alexnet", "resnet18", "rexnet_100"])
    # At 224 too: recorded, so a rebuild never depends on timm's default size.
    assert model_kwargs_for("coatnet_0_rw_224", 10, 224) == {"num_classes": 10, "img_size": 224}


@pytest.mark.parametrize(("num_classes", "img_size"), [(0, 32), (2.0, 32), (True, 32), (2, 0), (2, "32")])
def test_model_kwargs_for_bad_values(num_classes, img_size):
    with pytest.raises(ValueError):
        model_kwargs_for("cnn", num_classes, img_size)


def test_fixed_size_model_without_img_size_argument(monkeypatch):
    """A fixed-size timm model whose class takes no img_size: fine at its own size, refused elsewhere."""
    import timm

    def fake_create_model(arch, pretrained=False, **kwargs):
        if "img_size" in kwargs:
            raise TypeError("Fake.__init__() got an unexpected keyword argument 'img_size'")
        return nn.Linear(1, kwargs["num_classes"])

    monkeypatch.setattr(timm, "create_model", fake_create_model)
    assert isinstance(create_model("coatnet_0_rw_224", 3, img_size=224), nn.Linear)
    with pytest.raises(ModelError) as info:
        create_model("coatnet_0_rw_224", 3, img_size=64)
    assert str(info.value) == "'coatnet_0_rw_224' only runs at 224 px (it takes no img_size); use --img-size 224"


# ---------------------------------------------------------------- input sizes


@pytest.mark.parametrize(
    ("arch", "size", "reason"),
    [
        ("cnn", 15, "it needs at least 16 px"),
        ("alexnet", 62, "it needs at least 63 px"),
        ("coatnet_0_rw_224", 48, "it needs a multiple of 32 px"),
        ("coatnet_0_rw_224", 100, "it needs a multiple of 32 px"),
    ],
)
def test_check_img_size_known_rules(arch, size, reason):
    with pytest.raises(ModelError) as info:
        check_img_size(arch, size)
    assert str(info.value) == f"img_size {size} does not work with arch '{arch}' ({reason}); choose another --img-size"


def test_known_rules_match_reality():
    """The rules' edges: alexnet 62 fails and 63 works; cnn 16 works."""
    alex = create_model("alexnet", 2).eval()
    with torch.no_grad(), pytest.raises(RuntimeError):
        alex(torch.zeros(1, 3, 62, 62))
    check_img_size("alexnet", 63, alex)
    check_img_size("cnn", 16, create_model("cnn", 2, width=4))
    check_img_size("resnet18", 16)  # no rule, no model: nothing to check


def test_coatnet_needs_img_size_and_multiples_of_32():
    at_224 = create_model("coatnet_0_rw_224", 2, img_size=224).eval()
    at_64 = create_model("coatnet_0_rw_224", 2, img_size=64).eval()
    with torch.no_grad():
        assert at_64(torch.zeros(1, 3, 64, 64)).shape == (1, 2)
        with pytest.raises(RuntimeError):  # built for 224: 64 px does not fit its relative-position tables
            at_224(torch.zeros(1, 3, 64, 64))
    at_48 = create_model("coatnet_0_rw_224", 2, img_size=48).eval()
    with torch.no_grad(), pytest.raises(RuntimeError):  # not a multiple of 32
        at_48(torch.zeros(1, 3, 48, 48))


def test_check_img_size_probe_restores_mode():
    model = create_model("coatnet_0_rw_224", 2, img_size=32)
    model.train()
    with pytest.raises(ModelError) as info:
        check_img_size("coatnet_0_rw_224", 64, model)  # a multiple of 32, but the model was built for 32
    text = str(info.value)
    assert text.startswith("img_size 64 does not work with arch 'coatnet_0_rw_224' (")
    assert text.endswith("); choose another --img-size")
    assert "\n" not in text
    assert model.training is True


# ---------------------------------------------------------------- pretrained weights (local caches only)


def test_cnn_has_no_pretrained_weights():
    with pytest.raises(ModelError) as info:
        create_model("cnn", 3, pretrained=True)
    assert str(info.value) == "'cnn' has no pretrained weights (it trains from scratch); train without --pretrained"


@pytest.mark.parametrize("arch", ["resnet18", "rexnet_100", "coatnet_0_rw_224"])
def test_pretrained_not_in_cache(empty_caches, arch):
    with pytest.raises(ModelError) as info:
        create_model(arch, 3, img_size=32, pretrained=True)
    assert str(info.value) == NO_WEIGHTS.format(arch=arch)
    assert "HF_HUB_OFFLINE" not in os.environ


def test_alexnet_pretrained_not_in_cache(empty_caches, tmp_path):
    path = tmp_path / "torch-home" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    with pytest.raises(ModelError) as info:
        create_model("alexnet", 3, pretrained=True)
    assert str(info.value) == (
        "pretrained weights for 'alexnet' are not available locally (no network); "
        f"train without --pretrained or place the weights in the torch hub cache ({path})"
    )


def test_alexnet_pretrained_from_torch_hub_cache(empty_caches, tmp_path, monkeypatch):
    """The ImageNet body is loaded, the 1000-class head replaced (the real file is 233 MB: stand in for it)."""
    from torchvision.models import alexnet

    imagenet = alexnet(num_classes=1000).state_dict()
    path = tmp_path / "torch-home" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"stand-in")
    loads = []

    def fake_load(f, **kwargs):
        loads.append((Path(f), kwargs))
        return imagenet

    monkeypatch.setattr(torch, "load", fake_load)
    model = create_model("alexnet", 3, pretrained=True)
    assert loads == [(path, {"map_location": "cpu", "weights_only": True})]
    state = model.state_dict()
    assert torch.equal(state["features.0.weight"], imagenet["features.0.weight"])
    assert torch.equal(state["classifier.4.weight"], imagenet["classifier.4.weight"])
    assert state["classifier.6.weight"].shape == (3, 4096)


def _fake_hf_snapshot(hub: Path, repo_id: str) -> Path:
    """The Hugging Face cache layout: models--org--name/{refs/main, snapshots/<commit>/}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot


def test_pretrained_from_local_hf_cache(empty_caches):
    import safetensors.torch
    import timm

    source = timm.create_model("test_vit")  # 1000 classes, like a published checkpoint
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    snapshot = _fake_hf_snapshot(empty_caches, "timm/test_vit.r160_in1k")
    safetensors.torch.save_file(state, str(snapshot / "model.safetensors"))

    model = create_model("test_vit", 3, img_size=160, pretrained=True)
    loaded = model.state_dict()
    assert torch.equal(loaded["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])
    assert torch.equal(loaded["patch_embed.proj.weight"], state["patch_embed.proj.weight"])
    assert loaded["head.weight"].shape == (3, state["head.weight"].shape[1])  # new head for 3 classes
    assert "HF_HUB_OFFLINE" not in os.environ
    assert hf_constants.HF_HUB_OFFLINE is False


def test_pretrained_corrupt_cached_file(empty_caches):
    snapshot = _fake_hf_snapshot(empty_caches, "timm/test_vit.r160_in1k")
    (snapshot / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelError) as info:
        create_model("test_vit", 3, img_size=160, pretrained=True)
    text = str(info.value)
    assert text.startswith("pretrained weights for 'test_vit' could not be loaded from the local cache (")
    assert text.endswith("); train without --pretrained or replace the cached weights")
    assert "\n" not in text


def test_cached_timm_weights_lookup(empty_caches, tmp_path):
    assert registry._cached_timm_weights("resnet18") is None
    snapshot = _fake_hf_snapshot(empty_caches, "timm/resnet18.a1_in1k")
    (snapshot / "pytorch_model.bin").write_bytes(b"x")
    assert registry._cached_timm_weights("resnet18") == str(snapshot / "pytorch_model.bin")
    (snapshot / "model.safetensors").write_bytes(b"x")  # timm prefers the safetensors twin
    assert registry._cached_timm_weights("resnet18") == str(snapshot / "model.safetensors")


# ---------------------------------------------------------------- import cost


def test_timm_and_torchvision_are_imported_lazily():
    code = (
        "import sys, clf.models\n"
        "print('timm' in sys.modules, 'torchvision' in sys.modules)\n"
        "clf.models.create_model('cnn', 2)\n"
        "print('timm' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["False", "False", "False"]


# --- --drop-path and --dropout -------------------------------------------------------------------------------------


def test_dropout_and_drop_path_become_each_constructors_own_arguments():
    assert model_kwargs_for("cnn", 3, 32, dropout=0.2) == {"num_classes": 3, **CNN_DESIGN, "dropout": 0.2}
    assert model_kwargs_for("alexnet", 3, 64, dropout=0.1) == {"num_classes": 3, "dropout": 0.1}
    assert model_kwargs_for("resnet18", 3, 32, drop_path=0.1, dropout=0.2) == {
        "num_classes": 3, "drop_path_rate": 0.1, "drop_rate": 0.2}
    assert model_kwargs_for("resnet18", 3, 32, drop_path=0.0, dropout=None) == {"num_classes": 3}  # defaults: nothing


def test_the_kwargs_reach_the_modules():
    from timm.layers import DropPath

    cnn = create_model("cnn", img_size=32, **model_kwargs_for("cnn", 3, 32, dropout=0.2))
    assert [m.p for m in cnn.modules() if isinstance(m, nn.Dropout)] == [0.2]
    resnet = create_model("resnet18", img_size=32, **model_kwargs_for("resnet18", 3, 32, drop_path=0.1, dropout=0.2))
    rates = [m.drop_prob for m in resnet.modules() if isinstance(m, DropPath)]
    assert rates and max(rates) == pytest.approx(0.1) and resnet.drop_rate == 0.2  # timm ramps the rate with depth
    with torch.no_grad():  # eval mode ignores both: a rebuild without them computes the same
        plain = create_model("resnet18", 3, img_size=32)
        plain.load_state_dict(resnet.state_dict())
        x = torch.randn(2, 3, 32, 32)
        assert torch.equal(plain.eval()(x), resnet.eval()(x))


@pytest.mark.parametrize("arch", ["cnn", "alexnet"])
def test_drop_path_is_refused_for_our_own_archs(arch):
    with pytest.raises(ModelError) as info:
        model_kwargs_for(arch, 3, 64, drop_path=0.1)
    assert str(info.value) == f"--drop-path: '{arch}' has no stochastic depth; leave --drop-path out"


def test_drop_path_is_refused_for_a_timm_model_without_it():
    with pytest.raises(ModelError) as info:
        create_model("ghostnet_050", **model_kwargs_for("ghostnet_050", 3, 32, drop_path=0.1))
    assert str(info.value) == "--drop-path: 'ghostnet_050' has no stochastic depth; leave --drop-path out"


def test_drop_path_swallowed_by_a_constructor_is_refused(monkeypatch):
    """A timm class taking **kwargs would accept drop_path_rate and build no DropPath: refused, not ignored."""
    import timm

    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda arch, pretrained=False, drop_path_rate=0.0, **kw:
                        real(arch, pretrained=pretrained, **kw))
    with pytest.raises(ModelError, match=r"^--drop-path: 'resnet18' has no stochastic depth; leave --drop-path out$"):
        create_model("resnet18", 3, drop_path_rate=0.1)
