"""ALIKED's forward pass laid out for a CPU: kornia's network and weights, its outputs, two thirds of its time.

kornia's `ALIKED.forward` L2-normalises its whole (128, H, W) feature map, then its descriptor head
reads 9 + 16 positions per keypoint from it with `grid_sample`. On a CPU that reads each position's
channels H*W floats apart: at 640 px and 2048 keypoints the normalisation and the sampling take about
half the forward. Here the map is built channels-last (one contiguous row of channels per pixel)
and only the rows the head reads are normalised and interpolated, by grid_sample's own rule
(bilinear, align_corners=True, zeros outside). The channels-last upsampling rounds differently
(~1e-6), so keypoints agree with kornia's to 1e-3 px and descriptors to 1e-4 (tests/test_aliked.py;
benchmarks/aliked_cpu.py). On a GPU kornia's forward is used as is.
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
    rows, score_map = _dense_rows(model, image)
    keypoints, scores, _ = model.dkd(score_map)
    descriptors = describe(model.desc_head, rows[0], keypoints[0])
    h, w = image.shape[-2:]
    wh = torch.tensor([w - 1, h - 1], dtype=keypoints[0].dtype, device=image.device)
    return wh * (keypoints[0] + 1) / 2, descriptors, scores[0]


def _dense_rows(model: ALIKED, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """kornia's `extract_dense_map` with the feature map channels-last and not normalised:
    ((1, H, W, dim) rows, (1, 1, H, W) score map)."""
    padder = InputPadder(image.shape[-2], image.shape[-1], 32)
    x1 = model.block1(padder.pad(image))
    x2 = model.block2(model.pool2(x1))
    x3 = model.block3(model.pool4(x2))
    x4 = model.block4(model.pool4(x3))
    last = torch.channels_last  # each pixel's channels contiguous; upsampling and cat keep that layout
    levels = [
        model.gate(model.conv1(x1.contiguous(memory_format=last))),
        model.upsample2(model.gate(model.conv2(x2)).contiguous(memory_format=last)),
        model.upsample8(model.gate(model.conv3(x3)).contiguous(memory_format=last)),
        model.upsample32(model.gate(model.conv4(x4)).contiguous(memory_format=last)),
    ]
    dense = torch.cat(levels, dim=1)  # (1, dim, H, W) held channels-last
    score_map = torch.sigmoid(model.score_head(dense))
    return padder.unpad(dense).permute(0, 2, 3, 1), padder.unpad(score_map)


def describe(head: SDDH, rows: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
    """SDDH's descriptors (N, dim) of `keypoints` ((N, 2) in [-1, 1]) on a (H, W, dim) map of
    unnormalised rows: kornia's `SDDH.forward` for one image, without its `mask`/`conv2d` variants."""
    if head.mask or head.conv2d:
        raise NotImplementedError("ALIKED descriptor heads with mask or conv2d are read by kornia's forward")
    h, w, _ = rows.shape
    wh = torch.tensor([w - 1, h - 1], dtype=torch.promote_types(rows.dtype, torch.float32), device=rows.device)
    at = (keypoints / 2 + 0.5) * wh
    patch = F.normalize(get_patches(rows.permute(2, 0, 1), at.long(), head.kernel_size), p=2.0, dim=1)
    max_offset = max(h, w) / 4.0
    offset = head.offset_conv(patch).clamp(-max_offset, max_offset)
    offset = offset[:, :, 0, 0].view(len(at), 2, head.n_pos).permute(0, 2, 1)
    features = _bilinear_normalised(rows, at.unsqueeze(1) + offset)  # (N, n_pos, dim)
    features = torch.selu_(features @ head.sf_conv.weight[:, :, 0, 0].T)
    descriptors = torch.einsum("npc,pcd->nd", features, head.agg_weights)
    return F.normalize(descriptors, p=2.0, dim=1)


def _bilinear_normalised(rows: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """The L2-normalised map `rows` (H, W, C) sampled at pixel positions `xy` (..., 2) as
    grid_sample samples it (bilinear, align_corners=True, zeros outside): (..., C)."""
    h, w, _ = rows.shape
    x0, y0 = xy[..., 0].floor(), xy[..., 1].floor()
    fx, fy = xy[..., 0] - x0, xy[..., 1] - y0
    out = 0
    for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        x, y = (x0 + dx).long(), (y0 + dy).long()
        inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
        corner = F.normalize(rows[y.clamp(0, h - 1), x.clamp(0, w - 1)], p=2.0, dim=-1)
        out = out + corner * (weight * inside).unsqueeze(-1).to(rows.dtype)
    return out
