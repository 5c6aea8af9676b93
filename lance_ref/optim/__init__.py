"""Optimisers, schedulers and gradient clipping with torch.optim's update rules (specs/optim.md)."""

from .adam import Adam, AdamW
from .clip import clip_grad_norm_
from .lr_scheduler import CosineAnnealingLR, LRScheduler, ReduceLROnPlateau, StepLR
from .optimizer import Optimizer
from .sgd import SGD
