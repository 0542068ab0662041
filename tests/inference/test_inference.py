"""restore(): untiled, tiled with blending, batched tiles; restore_files() on folders."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from models import build_model
from utils.data.image_io import read_image_rgb
from utils.inference.outputs import find_inputs, restore_files
from utils.inference.restore import restore
from utils.inference.tiling import _ramp_1d, blend_tiles, check_tiling, tile_starts


class LocalConvNet(nn.Module):
    """Three 3x3 convs: each output pixel sees only a 7x7 neighbourhood (radius 3)."""
    radius = 3

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.Tanh(),
                                  nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x):
        return torch.sigmoid(self.body(x))


class ShapeRecorder(nn.Module):
    """Identity that records the batch shape of every forward (to check memory bounds)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return x * self.w


def _smooth(h, w, seed=0):
    torch.manual_seed(seed)
    small = torch.rand(1, 3, max(2, h // 8), max(2, w // 8))
    return nn.functional.interpolate(small, size=(h, w), mode='bilinear', align_corners=False)


def _seam_mask(h, w, tile, overlap, radius):
    """True where no tile edge inside the image lies within ``radius`` pixels."""
    mask = torch.ones(h, w, dtype=torch.bool)
    for n, axis in ((h, 0), (w, 1)):
        starts = tile_starts(n, tile, overlap)
        for s in starts:
            for edge in (s, s + min(tile, n)):
                if 0 < edge < n:
                    lo, hi = max(0, edge - radius), min(n, edge + radius)
                    if axis == 0:
                        mask[lo:hi, :] = False
                    else:
                        mask[:, lo:hi] = False
    return mask


def test_tile_starts_cover_the_image_and_end_flush():
    assert tile_starts(20, 32, 8) == [0]
    assert tile_starts(100, 32, 8) == [0, 24, 48, 68]
    for n, t, o in [(100, 32, 8), (37, 16, 4), (64, 32, 0), (33, 32, 31)]:
        starts = tile_starts(n, t, o)
        assert starts[0] == 0 and starts[-1] == n - t
        assert all(b - a <= t - o for a, b in zip(starts, starts[1:]))


def test_blend_ramps_are_positive_and_sum_to_one_across_an_overlap():
    fall = _ramp_1d(32, 8, rise=False, fall=True)
    rise = _ramp_1d(32, 8, rise=True, fall=False)
    assert torch.all(fall > 0) and torch.all(rise > 0)
    assert torch.allclose(fall[-8:] + rise[:8], torch.ones(8), atol=1e-6)
    assert torch.all(fall[:24] == 1) and torch.all(rise[8:] == 1)


def test_blend_tiles_needs_only_a_function_of_tile_batches():
    """utils.inference.tiling knows nothing of models: a pixel-wise function comes back exactly."""
    seen = []

    def square(tiles):
        seen.append(tuple(tiles.shape))
        return tiles ** 2
    img = torch.rand(1, 3, 45, 70, dtype=torch.float64)
    out = blend_tiles(square, img, tile=20, overlap=6, batch_size=5)
    assert out.shape == img.shape and out.dtype == img.dtype
    torch.testing.assert_close(out, img ** 2, rtol=0, atol=1e-12)
    n_tiles = len(tile_starts(45, 20, 6)) * len(tile_starts(70, 20, 6))
    assert sum(b for b, *_ in seen) == n_tiles and max(b for b, *_ in seen) == 5
    assert all(shape[2:] == (20, 20) for shape in seen)


def test_tiled_equals_untiled_away_from_seams_for_a_local_model():
    model = LocalConvNet().eval()
    x = _smooth(70, 90)
    whole = restore(model, x)
    tiled = restore(model, x, tile=32, tile_overlap=12)
    mask = _seam_mask(70, 90, 32, 12, LocalConvNet.radius)
    assert mask.sum() > 0.3 * mask.numel()
    diff = (whole - tiled).abs().amax(dim=1)[0]
    assert diff[mask].max() < 1e-5
    assert diff.max() < 0.2                    # seams blended: small even where tiles are wrong


def test_tiled_agrees_with_untiled_for_a_spiking_model():
    torch.manual_seed(0)
    model = build_model('esdnet-tiny').eval()
    x = _smooth(40, 48)
    whole = restore(model, x)
    tiled = restore(model, x, tile=24, tile_overlap=8)
    diff = (whole - tiled).abs()
    assert diff.max() < 0.02 and diff.mean() < 1e-3


@pytest.mark.parametrize('name', ['spikerain-tiny', 'esdnet-tiny'])
def test_tile_at_least_the_image_gives_exactly_the_untiled_result(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    for h, w in [(37, 53), (5, 7)]:
        x = _smooth(h, w, seed=h)
        whole = restore(model, x)
        assert whole.shape == x.shape
        assert torch.equal(restore(model, x, tile=64, tile_overlap=16), whole)


def test_batched_tiles_equal_one_by_one_and_odd_sizes_work():
    torch.manual_seed(0)
    model = build_model('spikerain-tiny').eval()
    x = _smooth(37, 53)
    one = restore(model, x, tile=24, tile_overlap=8, batch_size=1)
    four = restore(model, x, tile=24, tile_overlap=8, batch_size=4)
    assert one.shape == x.shape
    assert torch.allclose(one, four, atol=1e-5)
    assert one.min() >= 0 and one.max() <= 1


def test_tiled_memory_is_bounded_by_tile_and_batch_size():
    model = ShapeRecorder()
    x = torch.rand(2, 3, 200, 150)
    out = restore(model, x, tile=64, tile_overlap=16, batch_size=3)
    assert torch.allclose(out, x, atol=1e-6)          # identity survives blending exactly
    assert max(s[0] for s in model.shapes) == 3
    assert all(s[2:] == (64, 64) for s in model.shapes)
    n_tiles = len(tile_starts(200, 64, 16)) * len(tile_starts(150, 64, 16))
    assert sum(s[0] for s in model.shapes) == 2 * n_tiles


def test_restore_keeps_input_untouched_and_on_its_device():
    model = LocalConvNet().eval()
    x = _smooth(20, 24)
    x0 = x.clone()
    y = restore(model, x, tile=16, tile_overlap=4)
    assert torch.equal(x, x0) and y.device == x.device and y.dtype == x.dtype


def test_bad_tiling_options_are_rejected_naming_the_option():
    with pytest.raises(ValueError, match='--tile_overlap 32'):
        check_tiling(32, 32)
    with pytest.raises(ValueError, match='--tile 4'):
        check_tiling(4, 0)
    with pytest.raises(ValueError, match='batch_size'):
        restore(LocalConvNet(), torch.rand(1, 3, 8, 8), tile=8, tile_overlap=2, batch_size=0)
    with pytest.raises(ValueError, match='--tile_overlap -1'):
        restore(LocalConvNet(), torch.rand(1, 3, 8, 8), tile=8, tile_overlap=-1)
    check_tiling(None, 999)                     # untiled: overlap unused
    # The library caps the overlap at half a tile (training validation passes only a tile).
    model, x = LocalConvNet().eval(), _smooth(40, 40)
    assert torch.equal(restore(model, x, tile=16), restore(model, x, tile=16, tile_overlap=8))


def _write_inputs(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)).save(folder / 'rgb.png')
    Image.fromarray(rng.integers(0, 256, (12, 10), dtype=np.uint8)).save(folder / 'gray.png')
    rgba = rng.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(folder / 'rgba.png')
    Image.fromarray(rng.integers(0, 65535, (8, 12), dtype=np.uint16)).save(folder / 'deep16.png')
    (folder / 'empty.png').write_bytes(b'')
    (folder / 'corrupt.jpg').write_bytes(b'\xff\xd8\xff\xe0 truncated')
    (folder / 'text.png').write_text('not an image')


def test_restore_files_handles_formats_bad_files_and_resumes(tmp_path):
    _write_inputs(tmp_path / 'in')
    inputs, folder = find_inputs(tmp_path / 'in')
    assert folder == tmp_path / 'in' and len(inputs) == 7
    model = LocalConvNet().eval()
    lines = []
    s = restore_files(model, inputs, tmp_path / 'out', batch_size=2, progress=False,
                      report=lines.append)
    assert sorted(p.name for p, _ in s.failed) == ['corrupt.jpg', 'empty.png', 'text.png']
    assert len(lines) == 3 and all(any(n in line for line in lines)
                                   for n in ('corrupt.jpg', 'empty.png', 'text.png'))
    names = sorted(p.name for p in (tmp_path / 'out').iterdir())
    assert names == ['deep16.png', 'gray.png', 'rgb.png', 'rgba.png']
    for stem, shape in [('rgb', (13, 17, 3)), ('gray', (12, 10, 3)), ('rgba', (9, 11, 3)),
                        ('deep16', (8, 12, 3))]:
        assert read_image_rgb(tmp_path / 'out' / f'{stem}.png').shape == shape
    # The outputs equal restore() on the decoded input.
    src = torch.from_numpy(read_image_rgb(tmp_path / 'in' / 'rgb.png')).permute(2, 0, 1)[None] / 255
    want = (restore(model, src.float())[0].permute(1, 2, 0) * 255).round().byte().numpy()
    assert np.array_equal(read_image_rgb(tmp_path / 'out' / 'rgb.png'), want)
    # Second run: the complete outputs are skipped; a broken one is redone.
    (tmp_path / 'out' / 'gray.png').write_bytes(b'\x89PNG half')
    again = restore_files(model, inputs, tmp_path / 'out', progress=False, report=lines.append)
    assert len(again.skipped) == 3 and [p.name for p in again.restored] == ['gray.png']
    assert read_image_rgb(tmp_path / 'out' / 'gray.png').shape == (12, 10, 3)
    forced = restore_files(model, inputs, tmp_path / 'out', overwrite=True, progress=False,
                           report=lines.append)
    assert len(forced.restored) == 4 and not forced.skipped
    assert not [p for p in (tmp_path / 'out').iterdir() if p.name.startswith('.')]


def test_find_inputs_reads_input_of_a_benchmark_split(tmp_path):
    _write_inputs(tmp_path / 'split' / 'input')
    (tmp_path / 'split' / 'target').mkdir()
    files, folder = find_inputs(tmp_path / 'split')
    assert folder == tmp_path / 'split' / 'input' and len(files) == 7
    assert find_inputs(tmp_path / 'split' / 'input' / 'rgb.png')[0] == [
        tmp_path / 'split' / 'input' / 'rgb.png']
    with pytest.raises(ValueError, match='no images found'):
        find_inputs(tmp_path / 'split' / 'target')
    with pytest.raises(ValueError, match='no such file or folder'):
        find_inputs(tmp_path / 'missing')
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / 'split' / 'input' / 'rgb.bmp')
    with pytest.raises(ValueError, match=r'rgb\.bmp and rgb\.png would both be restored'):
        find_inputs(tmp_path / 'split')


def test_tiny_photos_mostly_padding_get_one_note_each(tmp_path):
    from utils.inference.outputs import padding_note
    model = build_model('spikerain-tiny').eval()              # sides padded to multiples of 4
    assert padding_note(model, 'a.png', 3, 3) is not None     # 44 % padding
    assert padding_note(model, 'a.png', 7, 7) is None         # 23 %: normal
    assert padding_note(model, 'a.png', 1023, 767) is None
    src = tmp_path / 'in'
    src.mkdir()
    for name, side in (('a', 3), ('b', 3), ('c', 16)):
        Image.fromarray(np.full((side, side, 3), 90, np.uint8)).save(src / f'{name}.png')
    lines = []
    summary = restore_files(model, find_inputs(src)[0], tmp_path / 'out', tile=None,
                            progress=False, report=lines.append)
    notes = [line for line in lines if 'padding' in line]
    assert len(summary.restored) == 3 and len(notes) == 2      # one per tiny photo, none for c
    assert all('3x3' in n and '4x4' in n and 'multiples of 4' in n for n in notes)
