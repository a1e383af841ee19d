"""ALIKED's forward pass laid out for a CPU: kornia's network and weights, its outputs, half its time.

kornia's `ALIKED.forward` upsamples its four feature levels to full resolution, concatenates them
into one (128, H, W) map, L2-normalises all of it, then its descriptor head reads 9 + 16 positions
per keypoint from it with `grid_sample`. On a CPU the concatenation, the normalisation and the
sampling (each position's channels H*W floats apart) take more time than the convolutions. Here:
- the levels stay four channels-last maps (one contiguous row of channels per pixel), never
  concatenated;
- the score head's first layer, a 1x1 convolution of the concatenated map, runs on each level
  before upsampling (both are linear: the same map, up to rounding);
- only the rows the descriptor head reads are gathered, normalised and interpolated, by
  grid_sample's own rule (bilinear, align_corners=True, zeros outside).
The rounding differs (~1e-6), so keypoints agree with kornia's to 1e-3 px and descriptors to 1e-4
(tests/test_aliked.py; benchmarks/aliked_cpu.py). On a GPU kornia's forward is used as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.feature.aliked.aliked import ALIKED, SDDH, InputPadder, get_patches


@torch.inference_mode()
def detect(model: ALIKED, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(keypoints in pixels (N, 2), descriptors (N, dim), scores (N,)) of one (1, 3, H, W) image."""
    if image.shape[0] != 1:
        raise ValueError(f"one image at a time, got a batch of {image.shape[0]}")
    if image.shape[1] == 1:
        image = image.expand(-1, 3, -1, -1)
    levels, score_map = _levels(model, image)
    keypoints, scores, _ = model.dkd(score_map)
    descriptors = describe(model.desc_head, levels, keypoints[0])
    h, w = image.shape[-2:]
    wh = torch.tensor([w - 1, h - 1], dtype=keypoints[0].dtype, device=image.device)
    return wh * (keypoints[0] + 1) / 2, descriptors, scores[0]


def _levels(model: ALIKED, image: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """kornia's `extract_dense_map` without its concatenated, normalised map: the four levels at full
    resolution, each an (H, W, c) channels-last view, and the (1, 1, H, W) score map."""
    padder = InputPadder(image.shape[-2], image.shape[-1], 32)
    x1 = model.block1(padder.pad(image))
    x2 = model.block2(model.pool2(x1))
    x3 = model.block3(model.pool4(x2))
    x4 = model.block4(model.pool4(x3))
    last = torch.channels_last
    coarse = [model.gate(conv(x)) for conv, x in ((model.conv2, x2), (model.conv3, x3), (model.conv4, x4))]
    ups = (model.upsample2, model.upsample8, model.upsample32)
    levels = [model.gate(model.conv1(x1.contiguous(memory_format=last)))]
    levels += [up(c.contiguous(memory_format=last)) for up, c in zip(ups, coarse)]
    first = model.score_head[0].weight.split([level.shape[1] for level in levels], dim=1)
    score = F.conv2d(levels[0], first[0]) + sum(up(F.conv2d(c, w)) for up, c, w in zip(ups, coarse, first[1:]))
    score_map = torch.sigmoid(model.score_head[1:](score))
    return [padder.unpad(level)[0].permute(1, 2, 0) for level in levels], padder.unpad(score_map)


def describe(head: SDDH, levels: list[torch.Tensor], keypoints: torch.Tensor) -> torch.Tensor:
    """SDDH's descriptors (N, dim) of `keypoints` ((N, 2) in [-1, 1]) on the channel-wise concatenation
    of `levels` ((H, W, c) maps, unnormalised): kornia's `SDDH.forward` for one image, without its
    `mask`/`conv2d` variants."""
    if head.mask or head.conv2d:
        raise NotImplementedError("ALIKED descriptor heads with mask or conv2d are read by kornia's forward")
    h, w, _ = levels[0].shape
    dtype = torch.promote_types(levels[0].dtype, torch.float32)
    at = (keypoints / 2 + 0.5) * torch.tensor([w - 1, h - 1], dtype=dtype, device=keypoints.device)
    patch = torch.cat([get_patches(level.permute(2, 0, 1), at.long(), head.kernel_size) for level in levels], dim=1)
    offset = head.offset_conv(F.normalize(patch, p=2.0, dim=1)).clamp(-max(h, w) / 4.0, max(h, w) / 4.0)
    offset = offset[:, :, 0, 0].view(len(at), 2, head.n_pos).permute(0, 2, 1)
    features = _bilinear_normalised(levels, at.unsqueeze(1) + offset)  # (N, n_pos, dim)
    features = torch.selu_(features @ head.sf_conv.weight[:, :, 0, 0].T)
    descriptors = features.flatten(1) @ head.agg_weights.flatten(0, 1)  # einsum("npc,pcd->nd")
    return F.normalize(descriptors, p=2.0, dim=1)


def _bilinear_normalised(levels: list[torch.Tensor], xy: torch.Tensor) -> torch.Tensor:
    """The L2-normalised channel-wise concatenation of `levels` ((H, W, c) maps) sampled at pixel
    positions `xy` (..., 2) as grid_sample samples it (bilinear, align_corners=True, zeros outside):
    (..., C)."""
    h, w, _ = levels[0].shape
    x0, y0 = xy[..., 0].floor(), xy[..., 1].floor()
    fx, fy = xy[..., 0] - x0, xy[..., 1] - y0
    x = x0.long().unsqueeze(-1) + torch.tensor([0, 1, 0, 1], device=xy.device)  # (..., 4 corners)
    y = y0.long().unsqueeze(-1) + torch.tensor([0, 0, 1, 1], device=xy.device)
    weight = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=-1)
    weight = weight * ((x >= 0) & (x < w) & (y >= 0) & (y < h))
    corners = [_rows_at(level, y.clamp(0, h - 1), x.clamp(0, w - 1)) for level in levels]  # (..., 4, c)
    norm = sum(c.square().sum(-1) for c in corners).sqrt().clamp_min(1e-12)
    weight = (weight / norm).unsqueeze(-2).to(corners[0].dtype)  # (..., 1, 4)
    return torch.cat([(weight @ c).squeeze(-2) for c in corners], dim=-1)


def _rows_at(level: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`level[y, x]` (..., c) by one index_select: `level` is an (H, W, c) view whose channels are
    contiguous and whose rows are evenly spaced (a crop of a channels-last map, or a contiguous map)."""
    h, w, c = level.shape
    row, pixel, channel = level.stride()
    if channel != 1 or row % pixel:
        level = level.contiguous()
        row, pixel, _ = level.stride()
    rows = level.as_strided(((h - 1) * (row // pixel) + w, c), (pixel, 1))
    return rows.index_select(0, (y * (row // pixel) + x).flatten()).view(*y.shape, c)
