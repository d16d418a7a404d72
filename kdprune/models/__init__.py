"""Model zoo: each builder takes (num_classes, in_channels, image_size, **options) -> nn.Module.

Configs in `conf/model/` build them with `hydra.utils.instantiate`. The module path of each
model's classifier (the final nn.Linear) is listed in its module docstring and returned by
`classifier_path`.

Hydra 1.4 checks instantiated targets against an execution whitelist, including the class of the
returned object (an nn.Module is callable); `EXECUTION_WHITELIST` lists what model configs need.
"""

from kdprune.models.build import build, model_name
from kdprune.models.cnn import CNN5, cnn5
from kdprune.models.common import classifier_path
from kdprune.models.lenet import LeNet5, lenet5
from kdprune.models.resnet_cifar import BasicBlock, CifarResNet, resnet20, resnet56
from kdprune.models.torchvision_nets import VGG, mobilenet_v2, resnet18, resnet34, vgg16_bn

# torchvision_nets returns torchvision's own ResNet and MobileNetV2 classes.
EXECUTION_WHITELIST: tuple[str, ...] = ("kdprune.models.*", "torchvision.models.*")

__all__ = [
    "EXECUTION_WHITELIST",
    "CNN5",
    "VGG",
    "BasicBlock",
    "CifarResNet",
    "LeNet5",
    "build",
    "classifier_path",
    "cnn5",
    "lenet5",
    "mobilenet_v2",
    "model_name",
    "resnet18",
    "resnet20",
    "resnet34",
    "resnet56",
    "vgg16_bn",
]
