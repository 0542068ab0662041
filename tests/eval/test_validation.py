"""utils.eval.protocol: one scoring rule for train.py's validation, batched by image size."""
import numpy as np
import pytest
import torch

from models import build_model
from utils.data.image_io import tensor_to_uint8
from utils.eval.metrics import calculate_psnr, calculate_ssim
from utils.eval.protocol import score_dataset, score_pair


class Pairs:
    """A validation set of (input, target, stem) with images of two sizes, interleaved."""

    def __init__(self, sizes):
        gen = torch.Generator().manual_seed(0)
        self.items = [(torch.rand(3, h, w, generator=gen), torch.rand(3, h, w, generator=gen),
                       f'im{i}') for i, (h, w) in enumerate(sizes)]
        self.loads = 0

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        self.loads += 1
        return self.items[i]


def test_score_pair_is_the_published_protocol():
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (20, 24, 3), dtype=np.uint8) for _ in range(2))
    got = score_pair(a, b)
    assert got['psnr'] == calculate_psnr(a, b, crop_border=0, test_y=True)
    assert got['ssim'] == calculate_ssim(a, b, crop_border=0, test_y=True)


def test_batched_scores_equal_one_at_a_time_and_every_image_is_seen_once():
    torch.manual_seed(0)
    net = build_model('spikerain-tiny').eval()
    data = Pairs([(16, 20), (16, 20), (16, 20), (12, 12), (16, 20)])
    seen = []
    one = score_dataset(net, data, torch.device('cpu'), range(len(data)), batch_size=1)
    many = score_dataset(net, data, torch.device('cpu'), range(len(data)), batch_size=2,
                       on_image=lambda i, stem, inp, out, tgt, s: seen.append((i, stem, s)))
    assert [i for i, _, _ in seen] == [0, 1, 2, 3, 4] and data.loads == 10
    assert one[2] == many[2] == 5
    assert many[0] == pytest.approx(one[0], abs=1e-3) and many[1] == pytest.approx(one[1], abs=1e-4)
    # the callback's scores are the image's own
    inp, tgt, _ = data[3]
    out = net(inp[None]).clamp(0, 1)
    assert seen[3][2]['psnr'] == pytest.approx(
        calculate_psnr(tensor_to_uint8(out), tensor_to_uint8(tgt)), abs=1e-3)


def test_bad_batch_size_is_refused():
    with pytest.raises(ValueError, match='batch_size'):
        score_dataset(build_model('spikerain-tiny'), Pairs([(8, 8)]), torch.device('cpu'), [0],
                    batch_size=0)
