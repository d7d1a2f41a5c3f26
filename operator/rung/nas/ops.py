"""The candidate operations of the DARTS cell space, each mapping C channels to C channels.

Every op takes `stride` (2 on the edges that leave a reduction cell's inputs) and `affine`
(False while searching, as in DARTS, so batch norm cannot rescale an op the softmax weight
is meant to rescale; True in a derived network trained from scratch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rung.api.nas import CANDIDATE_OPS, SKIP, ZERO  # noqa: F401 (the names live where torch is not needed)


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
                         nn.BatchNorm2d(c_out, affine=affine))


class DilatedConv(nn.Sequential):
    """ReLU, depthwise dilated conv, pointwise conv, BN."""

    def __init__(self, c: int, kernel: int, stride: int, dilation: int, affine: bool):
        padding = dilation * (kernel - 1) // 2
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c, c, kernel, stride, padding, dilation=dilation, groups=c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False),
                         nn.BatchNorm2d(c, affine=affine))


class SeparableConv(nn.Sequential):
    """Two depthwise-separable convs in a row (the second at stride 1), as in DARTS."""

    def __init__(self, c: int, kernel: int, stride: int, affine: bool):
        super().__init__(DilatedConv(c, kernel, stride, 1, affine), DilatedConv(c, kernel, 1, 1, affine))


class FactorizedReduce(nn.Module):
    """Halves the spatial size with two 1x1 convs at stride 2, the second shifted by one pixel."""

    def __init__(self, c_in: int, c_out: int, affine: bool):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_a = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_b = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        # Pad after the shift so both halves have ceil(H/2) rows, odd sizes included.
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv_a(x), self.conv_b(shifted)], dim=1))


class Zero(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, ::self.stride, ::self.stride] * 0.0


def make_op(name: str, c: int, stride: int, affine: bool) -> nn.Module:
    if name == "sep_conv_3x3":
        return SeparableConv(c, 3, stride, affine)
    if name == "sep_conv_5x5":
        return SeparableConv(c, 5, stride, affine)
    if name == "dil_conv_3x3":
        return DilatedConv(c, 3, stride, 2, affine)
    if name == "dil_conv_5x5":
        return DilatedConv(c, 5, stride, 2, affine)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if name == SKIP:
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    if name == ZERO:
        return Zero(stride)
    raise ValueError(f"unknown op {name!r}; candidates: {', '.join(CANDIDATE_OPS)}")
