"""Low-rank activation compression: HOSVD with an energy threshold, LANCE calibration
(specs/hosvd.md), weight gradients in compressed space and the layers that use them
(specs/compressed.md)."""

from .calibration import MODE_SETS, Calibrator, compressed_modes
from .hosvd import check_eps, energy_rank, hosvd
from .gradients import conv2d_flops, conv2d_weight_grad, linear_flops, linear_weight_grad
from .layers import METHODS, CompressedConv2d, CompressedLinear, Lance, PatchCompressedConv2d
from .transform import CompressedFinetune, CompressionOptions, calibrate, prepare_finetune
