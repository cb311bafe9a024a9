"""Built-in mtbench plugin: the five encoders of the paper and their decoders."""

from __future__ import annotations

from functools import partial

import torchvision
from torch import nn

from mtbench import EncoderSpec, hookimpl
from mtbench_encoders.decoders import ResNetDecoder
from mtbench_encoders.unet import BASIC, BOTTLENECK, ResNetPyramid, UNetDecoder, packed_channels
from mtbench_encoders.xception import XceptionDecoder, XceptionTaskonomySmall


def resnet_trunk(name: str) -> nn.Module:
    """A torchvision ResNet without its pooling and classifier (random init: no downloads)."""
    net = getattr(torchvision.models, name)(weights=None)
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)


def _resnet(name: str, channels: int, description: str) -> EncoderSpec:
    """A torchvision ResNet trunk (stride 32) with MTRobust's decoder."""
    return EncoderSpec(
        name=name, out_channels=channels, stride=32, build=partial(resnet_trunk, name),
        build_decoder=partial(ResNetDecoder, channels, stride=32), description=description,
        revision="mtrobust-decoder",
    )


def _resnet_unet(name: str, stages: tuple[int, ...], description: str) -> EncoderSpec:
    """The same trunk with a U-Net decoder (skip connections from every stage): ``<name>_unet``, not the
    paper's model (:mod:`mtbench_encoders.unet`)."""
    return EncoderSpec(
        name=f"{name}_unet", out_channels=packed_channels(stages), stride=32, build=partial(ResNetPyramid, name),
        build_decoder=partial(UNetDecoder, stages), description=description, revision="unet-1",
    )


ENCODERS = (
    _resnet("resnet18", 512, "ResNet-18 (He et al. 2016), no pretraining"),
    _resnet("resnet50", 2048, "ResNet-50, no pretraining"),
    _resnet("resnet152", 2048, "ResNet-152, no pretraining"),
    _resnet("wide_resnet50_2", 2048, "Wide ResNet-50-2, no pretraining"),
    _resnet_unet("resnet18", BASIC, "ResNet-18 with a U-Net decoder (skips from every stage); not the paper's"),
    _resnet_unet("resnet50", BOTTLENECK, "ResNet-50 with a U-Net decoder; not the paper's"),
    _resnet_unet("resnet152", BOTTLENECK, "ResNet-152 with a U-Net decoder; not the paper's"),
    _resnet_unet("wide_resnet50_2", BOTTLENECK, "Wide ResNet-50-2 with a U-Net decoder; not the paper's"),
    EncoderSpec(
        name="xception", out_channels=XceptionTaskonomySmall.out_channels, stride=XceptionTaskonomySmall.stride,
        build=XceptionTaskonomySmall, build_decoder=XceptionDecoder,
        description="Standley et al.'s small Taskonomy Xception with its own decoder (stride 16)",
        revision="taskgrouping-small",
    ),
)


@hookimpl
def mtbench_register_encoders():
    return list(ENCODERS)
