"""imc_lib.aliked: kornia's ALIKED forward laid out for a CPU gives kornia's outputs."""

import pytest
import torch
import torch.nn.functional as F

from imc_lib.networks import aliked, aliked_cpu
from imc_lib.stages import features
from imc_lib.utils import read_image


@pytest.mark.parametrize(
    ("name", "scene", "photo"),
    [
        ("aliked-n16", "temple", "templeSR0002.png"),
        ("aliked-n16", "fountain", "0002.jpg"),
        ("aliked-t16", "entry", "0001.jpg"),
    ],
)
def test_same_keypoints_scores_and_descriptors_as_kornia(imc_data_dir, weights_dir, name, scene, photo):
    images = imc_data_dir / "train" / scene / "images"
    path = images / photo
    model = aliked.load(
        {"model_name": name, "max_num_keypoints": 2048, "detection_threshold": 0.01}, weights_dir
    ).eval()
    image = features.prepare(read_image(path, max_side=640), 640, torch.device("cpu"))
    with torch.inference_mode():
        expected = model(image)[0]
    keypoints, descriptors, scores = aliked_cpu.detect(model, image)
    assert len(keypoints) == len(expected.keypoints) > 1000
    # The channels-last upsampling rounds differently (~1e-6): where more maxima than 2048 pass the
    # threshold, a few near-ties at the cut may swap, so keypoints are compared by position.
    distance, nearest = torch.cdist(keypoints, expected.keypoints, compute_mode="donot_use_mm_for_euclid_dist").min(1)
    same = distance < 1e-3
    assert same.float().mean() > 0.99
    assert (scores[same] - expected.keypoint_scores[nearest[same]]).abs().max() < 1e-4
    assert (descriptors[same] - expected.descriptors[nearest[same]]).abs().max() < 1e-4
    assert torch.allclose(descriptors.norm(dim=1), torch.ones(len(descriptors)))


def test_sampling_is_grid_sample_s_on_the_normalised_map():
    """Positions inside, on the border, between pixels and outside (zeros) of a random map given as
    two levels of 2 + 3 channels, one a crop of a larger channels-last map (as the forward's are)."""
    torch.manual_seed(0)
    rows = torch.randn(7, 9, 5)
    xy = torch.tensor([[0.0, 0.0], [8.0, 6.0], [3.25, 4.5], [-0.5, 2.0], [8.7, 6.2], [-3.0, -3.0], [20.0, 1.0]])
    wh = torch.tensor([8.0, 6.0])
    normalised = F.normalize(rows, dim=-1).permute(2, 0, 1)[None]
    grid = (2 * xy / wh - 1).view(1, 1, -1, 2)
    expected = F.grid_sample(normalised, grid, mode="bilinear", align_corners=True)[0, :, 0].T
    padded = torch.randn(10, 13, 3)
    padded[2:9, 1:10] = rows[..., 2:]
    levels = [rows[..., :2].contiguous(), padded[2:9, 1:10]]
    got = aliked_cpu._bilinear_normalised(levels, xy)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.equal(got[-2:], torch.zeros(2, 5))
