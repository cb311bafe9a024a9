"""Built-in mtbench plugin: the five encoders of the paper and their decoders."""

from __future__ import annotations

from functools import partial

import torchvision
from torch import nn

from mtbench import EncoderSpec, hookimpl
from mtbench_encoders.decoders import UpsamplingDecoder
from mtbench_encoders.xception import XceptionTaskonomySmall


def resnet_trunk(name: str) -> nn.Module:
    """A torchvision ResNet without its pooling and classifier (random init: no downloads)."""
    net = getattr(torchvision.models, name)(weights=None)
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)


def _spec(name: str, channels: int, stride: int, build, description: str) -> EncoderSpec:
    return EncoderSpec(
        name=name, out_channels=channels, stride=stride, build=build,
        build_decoder=partial(UpsamplingDecoder, channels, stride=stride), description=description,
    )


ENCODERS = (
    _spec("resnet18", 512, 32, partial(resnet_trunk, "resnet18"), "ResNet-18 (He et al. 2016), no pretraining"),
    _spec("resnet50", 2048, 32, partial(resnet_trunk, "resnet50"), "ResNet-50, no pretraining"),
    _spec("resnet152", 2048, 32, partial(resnet_trunk, "resnet152"), "ResNet-152, no pretraining"),
    _spec("wide_resnet50_2", 2048, 32, partial(resnet_trunk, "wide_resnet50_2"), "Wide ResNet-50-2, no pretraining"),
    _spec("xception", 512, 16, XceptionTaskonomySmall, "small Taskonomy Xception (stride 16)"),
)


@hookimpl
def mtbench_register_encoders():
    return list(ENCODERS)
