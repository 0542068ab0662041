"""int8 with exact spikes (models/quantize.py): which conv inputs count as spikes, weights per
channel within half a step, the quantised activations exact on images other than the
calibration one, and the int8 graph close to fp32 in both runtimes (tiny configs)."""
import numpy as np
import pytest
import torch
from support import ROOT

from models import build_from_checkpoint
from models.acceleration import plain_forward
from models.export import META_PREFIX, example_input, onnx_bytes
from models.onnx_runtime import OnnxError, OnnxRestorer, compare_with_torch
from models.quantize import (conv_inputs, int8_summary, quantize_int8, quantize_weights,
                             spike_step, spike_tensors)


@pytest.fixture(scope='module')
def exported(tiny_export):
    """name -> (model, its export, the export's int8 form)."""
    cache = {}

    def get(name):
        if name not in cache:
            model, data = tiny_export(name)
            cache[name] = model, data, quantize_int8(data, example_input(model).numpy())
        return cache[name]
    return get


def test_spike_step_finds_the_grid_or_none():
    assert spike_step(np.array([0.0, 1.0, 1.0, 0.0])) == 1.0
    assert spike_step(np.array([0.0, 0.25, 0.5, 1.0])) == 0.25
    assert spike_step(np.array([0.0, 7 / 16, 0.125])) == 1 / 16
    assert spike_step(np.array([0.0, 300.0])) is None            # past 255 steps
    assert spike_step(np.array([-1.0, 0.0, 1.0])) is None        # negative
    assert spike_step(np.array([0.0, 0.3])) is None              # real-valued
    assert spike_step(np.array([], dtype=np.float32)) is None


@pytest.mark.parametrize('name', ['spikerain-tiny', pytest.param('vlif-net-tiny',
                                                                 marks=pytest.mark.slow)])
def test_only_tensors_made_of_spikes_are_quantised(exported, name):
    """Values alone are not evidence (a ReLU that is zero on the calibration image sits on every
    grid): each quantised activation comes from a fire op through value-moving ops."""
    import onnx
    _, data, q = exported(name)
    fp32 = onnx.load_from_string(data)
    spikes = spike_tensors(fp32)
    producer = {o: n.op_type for n in fp32.graph.node for o in n.output}
    quantised = [n.input[0] for n in onnx.load_from_string(q).graph.node
                 if n.op_type == 'QuantizeLinear']
    assert quantised and all(x in spikes for x in quantised)
    assert not any(producer[x] in ('Relu', 'Add', 'Mul', 'GlobalAveragePool')
                   for x in quantised)
    fires = [n for n in fp32.graph.node if n.op_type in ('Where', 'Div') and n.output[0] in spikes]
    assert fires                                         # the neurons' outputs were found


def test_weights_are_rounded_per_channel_within_half_a_step():
    w = np.random.default_rng(0).normal(size=(8, 4, 3, 3)).astype(np.float32)
    w[3] *= 100                                          # one loud channel keeps its own scale
    w[5] = 0                                             # an all-zero channel stays zero
    q, scale = quantize_weights(w)
    assert q.dtype == np.int8 and np.abs(q).max() == 127 and scale.shape == (8,)
    back = q * scale[:, None, None, None]
    assert np.all(np.abs(back - w) <= scale[:, None, None, None] / 2 + 1e-7)
    assert np.all(back[5] == 0) and scale[0] < scale[3] / 10


@pytest.mark.parametrize('name', ['spikerain-tiny', pytest.param('vlif-net-tiny',
                                                                 marks=pytest.mark.slow)])
def test_quantised_activations_are_exact_on_other_images(exported, name):
    """Every activation given a uint8 QuantizeLinear is on its grid on images the calibration
    never saw (so the int8 conv sees the same spikes as the fp32 one)."""
    import onnx
    model, data, q = exported(name)
    summary = int8_summary(q)
    assert 0 < summary['int8_convs'] < summary['convs'], summary   # image convs stay float
    assert 0 < summary['int8_mac_share'] < 1
    proto = onnx.load_from_string(q)
    steps = {}
    for node in proto.graph.node:
        if node.op_type == 'QuantizeLinear':
            scale = next(i for i in proto.graph.initializer if i.name == node.input[1])
            steps[node.input[0]] = float(onnx.numpy_helper.to_array(scale))
    gen = torch.Generator().manual_seed(11)
    image = torch.rand(1, 3, 48, 72, generator=gen).numpy()
    inputs = conv_inputs(data, image)
    fp32 = {n.name or f'conv{i}': n.input[0]
            for i, n in enumerate(n for n in onnx.load_from_string(data).graph.node
                                  if n.op_type == 'Conv')}
    checked = 0
    for conv, (x, _, _) in inputs.items():
        if fp32[conv] in steps:
            counts = x.astype(np.float64) / steps[fp32[conv]]
            assert np.all(counts == np.round(counts)) and counts.min() >= 0 \
                and counts.max() <= 255, conv
            checked += 1
    assert checked == len(steps) > 0


@pytest.mark.parametrize('runtime', ['onnxruntime', 'openvino'])
def test_int8_graph_stays_close_to_the_exact_path(exported, runtime):
    model, data, q = exported('spikerain-tiny')
    gen = torch.Generator().manual_seed(3)
    images = [torch.rand(1, 3, 37, 50, generator=gen), torch.rand(1, 3, 60, 44, generator=gen)]
    fp32 = compare_with_torch(model, OnnxRestorer(data, model, 1, runtime=runtime), images)
    int8 = compare_with_torch(model, OnnxRestorer(data, model, 1, runtime=runtime,
                                                  precision='int8'), images)
    assert min(fp32) >= 50
    # Rounded weights flip a few spikes, which random deep weights amplify (trained ones do
    # not: the shipped-weights test below); close, not equal.
    assert 20 <= min(int8) < min(fp32), (int8, fp32)
    again = OnnxRestorer(q, model, 1, runtime=runtime, precision='int8')   # an int8 file as is
    assert compare_with_torch(model, again, images[:1])[0] == pytest.approx(int8[0], abs=1e-6)


@pytest.mark.slow
def test_int8_keeps_the_shipped_weights_quality_on_unseen_rain():
    """Quality parity with the exact path (the issue's bar: mean within 0.1 dB, no image worse
    by more than 0.3 dB), SpikeRain-S's shipped weights, OpenVINO int8, light and heavy rain on
    two photos (measured 2026-12-06 at 256x256: -0.05 to +0.03 dB per image)."""
    import skimage.data
    from models.onnx_runtime import psnr
    from utils.data.image_io import resize_longest, uint8_to_tensor
    from utils.eval.heldout import heldout_pairs
    model = build_from_checkpoint(ROOT / 'pretrained_models' / 'spikerain-s_synthetic.pth').eval()
    runtime = OnnxRestorer(onnx_bytes(model), model, 1, runtime='openvino', precision='int8')
    photos = [(n, resize_longest(getattr(skimage.data, n)(), 96)) for n in ('coffee', 'rocket')]
    diffs = []
    with torch.no_grad():
        for _, _, rainy, clean in heldout_pairs(photos, ('light', 'heavy'), seed=0):
            x, y = uint8_to_tensor(rainy), uint8_to_tensor(clean)
            with plain_forward(model):
                exact = psnr(model(x), y)
            diffs.append(psnr(runtime(x), y) - exact)
    assert abs(np.mean(diffs)) <= 0.1 and min(diffs) >= -0.3, diffs


def test_precision_refusals(exported):
    model, data, q = exported('spikerain-tiny')
    with pytest.raises(OnnxError, match='the onnxruntime backend runs fp32, int8'):
        OnnxRestorer(data, model, 1, precision='bf16')
    with pytest.raises(OnnxError, match='an int8 export; run it with precision int8'):
        OnnxRestorer(q, model, 1)
    import onnx
    meta = {p.key: p.value for p in onnx.load_from_string(q).metadata_props}
    assert meta[META_PREFIX + 'precision'] == 'int8' and META_PREFIX + 'model' in meta
