"""The zoo: names, parameter counts, layer shapes from the seeds, torchvision key compatibility."""

from __future__ import annotations

import pytest
import torch

from exporter.errors import UserError
from exporter.zoo import count_params, get_model, get_spec, list_models

# The table (and torchvision's published figures for the other depths).
STATED_PARAMS = {
    "alexnet": 61_100_840,
    "alexnet_original": 62_378_344,
    "vgg16": 138_357_544,
    "googlenet": 6_624_904,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "lenet5": 62_006,
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
    "resnet34": 21_797_672,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}

REQUIRED = [
    "lenet5",
    "alexnet",
    "alexnet_original",
    "alexnet_half",
    "alexnet_cifar",
    "alexnet_fashionmnist",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "vgg11_bn",
    "vgg13_bn",
    "vgg16_bn",
    "vgg19_bn",
    "vgg16_cifar",
    "googlenet",
    "googlenet_cifar",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnet_cifar",
]

# Intermediate shapes (batch excluded) as the seeds' comments state them: (module path, shape).
SEED_SHAPES = {
    "lenet5": [
        ("conv_layer.0", (6, 28, 28)),
        ("conv_layer.1", (6, 14, 14)),
        ("conv_layer.2", (16, 10, 10)),
        ("conv_layer.3", (16, 5, 5)),
    ],
    "alexnet_half": [
        ("features.0", (48, 55, 55)),
        ("features.2", (48, 27, 27)),
        ("features.3", (128, 27, 27)),
        ("features.5", (128, 13, 13)),
        ("features.6", (192, 13, 13)),
        ("features.10", (128, 13, 13)),
        ("features.12", (128, 6, 6)),
    ],
    "alexnet_cifar": [
        ("conv_layer.0", (48, 32, 32)),
        ("conv_layer.1", (48, 16, 16)),
        ("conv_layer.4", (128, 16, 16)),
        ("conv_layer.5", (128, 8, 8)),
        ("conv_layer.8", (192, 8, 8)),
        ("conv_layer.12", (128, 8, 8)),
        ("conv_layer.14", (128, 4, 4)),
    ],
    "alexnet_fashionmnist": [
        ("conv.0", (96, 55, 55)),
        ("conv.2", (96, 27, 27)),
        ("conv.3", (256, 27, 27)),
        ("conv.5", (256, 13, 13)),
        ("conv.6", (384, 13, 13)),
        ("conv.10", (256, 13, 13)),
        ("conv.12", (256, 6, 6)),
    ],
    "alexnet_original": [
        ("features.0", (96, 55, 55)),
        ("features.3", (96, 27, 27)),
        ("features.4", (256, 27, 27)),
        ("features.7", (256, 13, 13)),
        ("features.8", (384, 13, 13)),
        ("features.10", (384, 13, 13)),
        ("features.12", (256, 13, 13)),
        ("features.14", (256, 6, 6)),
    ],
    "alexnet": [
        ("features.0", (64, 55, 55)),
        ("features.2", (64, 27, 27)),
        ("features.3", (192, 27, 27)),
        ("features.5", (192, 13, 13)),
        ("features.6", (384, 13, 13)),
        ("features.8", (256, 13, 13)),
        ("features.12", (256, 6, 6)),
        ("avgpool", (256, 6, 6)),
        ("classifier.1", (4096,)),
    ],
    "vgg16_cifar": [
        ("conv_layer.0", (64, 32, 32)),
        ("conv_layer.4", (64, 16, 16)),
        ("conv_layer.9", (128, 8, 8)),
        ("conv_layer.16", (256, 4, 4)),
        ("conv_layer.23", (512, 2, 2)),
        ("conv_layer.30", (512, 1, 1)),
    ],
    "googlenet_cifar": [
        ("conv_layer.0", (64, 16, 16)),
        ("conv_layer.1", (64, 7, 7)),
        ("conv_layer.3", (192, 7, 7)),
        ("conv_layer.4", (192, 4, 4)),
        ("conv_layer.5", (256, 4, 4)),
        ("conv_layer.6", (480, 4, 4)),
        ("conv_layer.7", (480, 2, 2)),
        ("conv_layer.8", (512, 2, 2)),
        ("conv_layer.11", (528, 2, 2)),
        ("conv_layer.12", (832, 2, 2)),
        ("conv_layer.13", (832, 1, 1)),
        ("conv_layer.15", (1024, 1, 1)),
        ("conv_layer.16", (1024, 1, 1)),
    ],
    "googlenet": [
        ("conv1", (64, 112, 112)),
        ("maxpool1", (64, 56, 56)),
        ("conv3", (192, 56, 56)),
        ("maxpool2", (192, 28, 28)),
        ("inception3a", (256, 28, 28)),
        ("inception3b", (480, 28, 28)),
        ("maxpool3", (480, 14, 14)),
        ("inception4a", (512, 14, 14)),
        ("inception4d", (528, 14, 14)),
        ("inception4e", (832, 14, 14)),
        ("maxpool4", (832, 7, 7)),
        ("inception5b", (1024, 7, 7)),
        ("avgpool", (1024, 1, 1)),
    ],
    "resnet_cifar": [
        ("model.1", (64, 16, 16)),
        ("model.2", (128, 8, 8)),
        ("model.3", (256, 4, 4)),
        ("model.4", (512, 2, 2)),
        ("model.5", (512, 1, 1)),
        ("model.6", (512, 1, 1)),
    ],
    "resnet50": [
        ("conv1", (64, 112, 112)),
        ("maxpool", (64, 56, 56)),
        ("layer1", (256, 56, 56)),
        ("layer2", (512, 28, 28)),
        ("layer3", (1024, 14, 14)),
        ("layer4", (2048, 7, 7)),
    ],
    "resnet18": [("layer1", (64, 56, 56)), ("layer4", (512, 7, 7))],
}

# Keys a torchvision checkpoint of the same model contains, with their shapes.
TORCHVISION_KEYS = {
    "alexnet": {
        "features.0.weight": (64, 3, 11, 11),
        "features.10.bias": (256,),
        "classifier.1.weight": (4096, 9216),
        "classifier.4.weight": (4096, 4096),
        "classifier.6.bias": (1000,),
    },
    "vgg16": {
        "features.0.weight": (64, 3, 3, 3),
        "features.28.weight": (512, 512, 3, 3),
        "classifier.0.weight": (4096, 25088),
        "classifier.6.weight": (1000, 4096),
    },
    "vgg16_bn": {"features.1.running_var": (64,), "features.41.weight": (512,), "classifier.3.bias": (4096,)},
    "googlenet": {
        "conv1.conv.weight": (64, 3, 7, 7),
        "conv1.bn.running_mean": (64,),
        "inception3a.branch3.1.conv.weight": (32, 16, 3, 3),
        "inception5b.branch4.1.bn.weight": (128,),
        "aux1.conv.conv.weight": (128, 512, 1, 1),
        "aux2.fc1.weight": (1024, 2048),
        "fc.weight": (1000, 1024),
    },
    "resnet18": {
        "conv1.weight": (64, 3, 7, 7),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "layer4.1.bn2.num_batches_tracked": (),
        "fc.weight": (1000, 512),
    },
    "resnet50": {
        "layer1.0.conv3.weight": (256, 64, 1, 1),
        "layer4.2.bn3.running_var": (2048,),
        "fc.weight": (1000, 2048),
    },
}


def test_registry_has_every_seed_model() -> None:
    names = list_models()
    assert [n for n in REQUIRED if n not in names] == []
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", sorted(STATED_PARAMS))
def test_parameter_counts_match_stated(name: str) -> None:
    """The registry's count (which test_zoo_catalog.py holds to a build) is the published one."""
    spec = get_spec(name)
    assert spec.num_params == STATED_PARAMS[name]
    assert spec.stated_params in (None, STATED_PARAMS[name])


def test_googlenet_counts_aux_heads_separately() -> None:
    model = get_model("googlenet")
    assert count_params(model, ("aux1", "aux2")) == 6_624_904
    assert count_params(model) == 13_004_888


@pytest.mark.parametrize("name", REQUIRED)
def test_output_shape_and_metadata(name: str) -> None:
    spec = get_spec(name)
    with torch.device("meta"):
        model = spec.build().eval()
        y = model(torch.empty(3, *spec.input_shape))
    assert tuple(y.shape) == (3, spec.num_classes)
    assert spec.description and spec.source


@pytest.mark.parametrize("name", sorted(SEED_SHAPES))
def test_layer_shapes_match_seed_comments(name: str) -> None:
    spec = get_spec(name)
    with torch.device("meta"):
        model = spec.build().eval()
    seen: dict[str, tuple[int, ...]] = {}
    modules = dict(model.named_modules())
    for path, _ in SEED_SHAPES[name]:
        modules[path].register_forward_hook(lambda m, i, o, p=path: seen.__setitem__(p, tuple(o.shape[1:])))
    with torch.device("meta"):
        model(torch.empty(2, *spec.input_shape))
    assert {p: seen[p] for p, _ in SEED_SHAPES[name]} == dict(SEED_SHAPES[name])


@pytest.mark.parametrize("name", sorted(TORCHVISION_KEYS))
def test_state_dict_keys_match_torchvision(name: str) -> None:
    with torch.device("meta"):
        state = get_model(name).state_dict()
    assert {k: tuple(state[k].shape) for k in TORCHVISION_KEYS[name] if k in state} == TORCHVISION_KEYS[name]
    assert get_spec(name).torchvision_name == name


def test_googlenet_eval_has_one_output_and_training_has_aux() -> None:
    model = get_model("googlenet")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        train_out = model.train()(x)
        eval_out = model.eval()(x)
    assert isinstance(train_out, tuple) and len(train_out) == 3
    assert isinstance(eval_out, torch.Tensor) and eval_out.shape == (2, 1000)


def test_alexnet_original_has_lrn_after_conv1_and_conv2() -> None:
    feats = get_model("alexnet_original").features
    kinds = [type(m).__name__ for m in feats]
    assert kinds[:4] == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"]
    assert kinds[4:8] == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"]
    assert kinds.count("LocalResponseNorm") == 2


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(UserError, match="resnet18"):
        get_spec("resnet19")
    with pytest.raises(UserError, match="--list"):
        get_spec("transformer")


def test_listing_follows_history_not_import_order() -> None:
    families = [get_spec(n).family for n in list_models()]
    assert families == sorted(families, key=["lenet", "alexnet", "vgg", "googlenet", "resnet"].index)
    assert list_models()[0] == "lenet5" and list_models()[-1] == "resnet_cifar"
