"""Modules, layers and the model zoo with torch.nn's semantics and names (specs/nn.md)."""

from . import init
from .layers import (
    AdaptiveAvgPool2d,
    AdaptiveMaxPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    Identity,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ModuleList,
    ReLU,
    ReLU6,
    Sequential,
    Sigmoid,
    Tanh,
    pin_batchnorm,
)
from .module import IncompatibleKeys, Module, Parameter, eval_mode
from .recording import layer_activations, recording
from .surgery import FinetuneMethod, fine_tune_last, last_layers
from .zoo import MODELS, AlexNetGPM, MobileNetV2, ResNet18Reduced, SmallCNN, build_model
