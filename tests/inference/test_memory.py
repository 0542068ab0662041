"""Memory ahead of time: the estimate, the budget, automatic tiling and the warnings before a
forward that would not fit (utils/inference/memory.py, restore(), test.py)."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from models import build_model
from utils.inference.memory import (BUDGET_ENV, IMAGE_BYTES_PER_PIXEL, Budget, NotEnoughMemory,
                                    check_fits, coefficients, estimate_forward, memory_budget,
                                    parse_bytes, plan_tiling)
from utils.inference.outputs import MANIFEST_NAME, recipe_differences
from utils.inference.restore import restore

H, W = 96, 128


def _image(h=H, w=W, seed=0):
    torch.manual_seed(seed)
    small = torch.rand(1, 3, h // 8, w // 8)
    smooth = nn.functional.interpolate(small, size=(h, w), mode='bilinear', align_corners=False)
    return (smooth + 0.05 * torch.rand(1, 3, h, w)).clamp(0, 1)


@pytest.fixture(scope='module')
def esdnet():
    torch.manual_seed(0)
    return build_model('esdnet-tiny').eval()


def _budget_for_tile(model, side, h=H, w=W, available=None):
    """A budget that holds a ``side`` x ``side`` tile (and the blending buffers), not more."""
    coef = coefficients(model)
    return Budget(int(coef.bytes_for(side * side) + IMAGE_BYTES_PER_PIXEL * h * w), available,
                  'test')


def _psnr(a, b):
    mse = ((a - b) ** 2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def test_estimate_is_the_measured_line_and_grows_with_pixels_and_batch(esdnet):
    coef = coefficients(esdnet)
    assert coef.source == 'measured' and coef.per_pixel > 1000      # kilobytes per pixel
    one = estimate_forward(esdnet, 256, 256)
    assert estimate_forward(esdnet, 512, 512) - one == pytest.approx(3 * (one - coef.constant),
                                                                      rel=0.01)
    assert estimate_forward(esdnet, 256, 256, batch=2) > one
    unnamed = nn.Conv2d(3, 3, 3)                  # not in the table: scaled, and more cautious
    assert coefficients(unnamed).source.startswith('not measured')


def test_the_exported_graph_uses_its_runtime_line_or_else_the_exact_paths(esdnet):
    """test.py --backend: the runtime's own measured line when the table has one, else the
    model's exact torch path (the same maths), never a line scaled from another family."""
    class Exported(nn.Module):             # what memory.py sees of models.onnx_runtime's class
        def __init__(self, backend):
            super().__init__()
            self.backend, self.family = backend, 'ESDNet'
            self.model_name, self.config = esdnet.model_name, esdnet.config
            self.anchor = nn.Parameter(torch.zeros(0))
    entry = dict(model=esdnet.model_name, config=esdnet.config, device='cpu', family='ESDNet',
                 bytes_per_pixel=1000.0, constant_bytes=10)
    table = {'entries': [dict(entry, path='exact'),
                         dict(entry, path='openvino', bytes_per_pixel=400.0)]}
    ov = coefficients(Exported('openvino'), table=table)
    ort = coefficients(Exported('onnxruntime'), table=table)
    assert ov.source == 'measured' and ov.per_pixel < ort.per_pixel
    assert ort.source == 'measured (the exact torch path)'
    assert ort.per_pixel == coefficients(esdnet, table=table).per_pixel


def test_plan_is_whole_when_it_fits_and_tiles_that_fit_when_not(esdnet):
    roomy = plan_tiling(esdnet, H, W, overlap=16, budget=10**12)
    assert roomy.tile is None and roomy.recipe() == 'whole'
    budget = _budget_for_tile(esdnet, 72)
    plan = plan_tiling(esdnet, H, W, overlap=16, budget=budget)
    assert plan.tile is not None and plan.grid[0] * plan.grid[1] > 1
    th, tw = plan.tile
    assert plan.estimate <= budget.bytes < plan.whole_estimate
    assert th % esdnet.size_multiple == 0 and tw % esdnet.size_multiple == 0
    for length, side, count in ((H, th, plan.grid[0]), (W, tw, plan.grid[1])):
        assert side * count - (count - 1) * 16 >= length       # the tiles cover the image
    assert plan.recipe() == f'tiles {tw}x{th} overlap 16'
    with pytest.raises(NotEnoughMemory, match='smallest tiles'):
        plan_tiling(esdnet, H, W, overlap=16, budget=coefficients(esdnet).bytes_for(0))


def test_auto_tiles_only_when_needed_says_so_once_and_matches_whole(esdnet):
    x = _image()
    whole = restore(esdnet, x, tile=None, memory=10**12)
    lines = []
    assert torch.equal(restore(esdnet, x, memory=10**12, report=lines.append), whole)
    assert lines == []                                          # fits: whole, and silent
    tiled = restore(esdnet, x, tile_overlap=16, memory=_budget_for_tile(esdnet, 72),
                    report=lines.append)
    assert len(lines) == 1 and lines[0].startswith('note: 128x96 image: restoring it in ')
    assert 'tiles of' in lines[0] and 'memory budget' in lines[0] and '--tile 0' in lines[0]
    assert not torch.equal(tiled, whole)                        # it did tile ...
    assert _psnr(tiled, whole) >= 45                            # ... without visible seams


def test_a_batch_that_does_not_fit_goes_one_image_at_a_time(esdnet):
    x = torch.cat([_image(seed=1), _image(seed=2)])
    one = estimate_forward(esdnet, H, W)
    budget = Budget(int(one + IMAGE_BYTES_PER_PIXEL * H * W), None, 'test')
    lines = []
    out = restore(esdnet, x, memory=budget, report=lines.append)
    assert lines == [] and out.shape == x.shape
    assert torch.allclose(out[1:], restore(esdnet, x[1:], tile=None), atol=1e-6)


class Recorder(nn.Module):
    """Identity that records its forwards (so a test can see none ran)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * self.w


def test_check_fits_warns_over_the_budget_and_refuses_over_the_free_memory():
    model = Recorder()
    need = estimate_forward(model, H, W)
    assert check_fits(model, H, W, budget=Budget(need + 1, None, 'test')) is None
    lines = []
    restore(model, _image(), tile=None, memory=Budget(need // 2, 10**12, 'test'),
            report=lines.append)
    assert model.calls == 1 and len(lines) == 1 and lines[0].startswith('warning: image: ')
    assert '128x96' in lines[0] and '--tile' in lines[0]
    with pytest.raises(NotEnoughMemory, match=r'128x96 .* more than the .* free; use --tile'):
        restore(model, _image(), tile=None, memory=Budget(need // 2, need // 2, 'test'))
    assert model.calls == 1                                     # refused before the forward
    with pytest.raises(NotEnoughMemory, match='--tile 4096: .*use a smaller --tile'):
        restore(model, torch.zeros(1, 3, 1, 1).expand(1, 3, 4096, 4096), tile=4096,
                memory=Budget(need, need, 'test'))
    assert model.calls == 1


def test_memory_budget_reads_the_environment_and_refuses_nonsense(monkeypatch):
    monkeypatch.setenv(BUDGET_ENV, '512M')
    assert memory_budget('cpu').bytes == 512 * 2**20 and BUDGET_ENV in memory_budget('cpu').why
    assert parse_bytes('2G') == 2 * 2**30 and parse_bytes('1.5e9') == 1_500_000_000
    for bad in ('inf', 'nan', '-1G', '0', 'lots', '1e400'):
        monkeypatch.setenv(BUDGET_ENV, bad)
        with pytest.raises(ValueError, match=f'{BUDGET_ENV}=.*positive size'):
            memory_budget('cpu')
    monkeypatch.delenv(BUDGET_ENV)
    default = memory_budget('cpu')
    assert 0 < default.bytes <= 3 * 2**30


def test_recipe_compares_automatic_tiling_per_image_size():
    old = {'tile': 'auto', 'tiling': {'128x96': 'whole', '64x64': 'whole'}}
    same_sizes_agree = {'tile': 'auto', 'tiling': {'128x96': 'whole', '32x32': 'whole'}}
    assert recipe_differences(old, same_sizes_agree) == []
    other = {'tile': 'auto', 'tiling': {'128x96': 'tiles 72x56 overlap 16'}}
    assert [d.split(':')[0] for d in recipe_differences(old, other)] == ['tiling']


@pytest.mark.slow
def test_test_py_tiles_by_itself_says_why_records_it_and_tile_0_forces_whole(tmp_path, cli,
                                                                              tiny_weights):
    (tmp_path / 'in').mkdir()
    arr = (_image()[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / 'in' / 'a.png')
    weights = tiny_weights('esdnet-tiny')
    model = build_model('esdnet-tiny')
    from models.acceleration import optimize_for_inference
    tile_budget = _budget_for_tile(optimize_for_inference(model.eval()), 88).bytes
    env = {BUDGET_ENV: str(tile_budget)}
    code, out, err = cli('test.py', '--no_progress', '--weights', weights, '--data_path',
                         tmp_path / 'in', '--save_path', tmp_path / 'auto', env=env)
    assert code == 0, err
    notes = [ln for ln in err.splitlines() if ln.startswith('note: ')]
    assert len(notes) == 1 and '128x96 image: restoring it in' in notes[0], err
    recipe = json.loads((tmp_path / 'auto' / MANIFEST_NAME).read_text())['recipe']
    assert recipe['tile'] == 'auto' and recipe['tiling']['128x96'].startswith('tiles ')
    code, out, err = cli('test.py', '--no_progress', '--weights', weights, '--data_path',
                         tmp_path / 'in', '--save_path', tmp_path / 'whole', '--tile', '0',
                         env=env)
    assert code == 0, err
    assert 'restoring it in' not in err and 'warning: ' in err and 'whole images' in out
    recipe = json.loads((tmp_path / 'whole' / MANIFEST_NAME).read_text())['recipe']
    assert recipe['tile'] is None and 'tiling' not in recipe
    auto = np.asarray(Image.open(tmp_path / 'auto' / 'a.png'), dtype=float)
    whole = np.asarray(Image.open(tmp_path / 'whole' / 'a.png'), dtype=float)
    mse = ((auto - whole) ** 2).mean()
    assert mse == 0 or 10 * np.log10(255 ** 2 / mse) >= 45


def test_validation_and_the_heldout_check_warn_or_refuse_before_a_forward(monkeypatch, capsys):
    """The paths that restore whole on purpose (scores by the protocol) say it in time."""
    import utils.eval.protocol as protocol
    import utils.inference.memory as memory
    from utils.eval.heldout import judge_model
    from utils.inference.restore import say_once
    monkeypatch.setattr(protocol, '_warn_once', say_once())      # fresh for this test
    model = Recorder()
    monkeypatch.setenv(BUDGET_ENV, '1K')
    x = torch.rand(3, 32, 40)
    protocol.score_dataset(model, [(x, x, 'a'), (x, x, 'b')], torch.device('cpu'), [0, 1])
    err = capsys.readouterr().err
    assert err.count('warning: ') == 1 and '40x32' in err and '--val_tile' in err
    assert model.calls == 2
    arr = (x.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    monkeypatch.setattr(memory, 'available_memory', lambda device='cpu': 1000)
    with pytest.raises(NotEnoughMemory, match=r'40x32 .*use a smaller --size'):
        judge_model(model, [('p', 'light', arr, arr)])
    assert model.calls == 2                                     # refused before the forward
