"""Our SpikeRain and ESDNet compute what the official implementations compute."""
import pytest
import torch

from models import build_model, load_weights

CASES = [('spikerain_tiny', 'spikerain-s'), ('spikerain_s', 'spikerain-s'),
         ('esdnet_tiny', 'esdnet')]


def _model(ref, name, train):
    model = load_weights(build_model(name, **ref['config']), ref['state_dict'])
    return model.train(train)


@pytest.mark.parametrize('file,name', CASES)
@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_outputs_match_official(file, name, mode, golden):
    ref = golden(file)
    model = _model(ref, name, mode == 'train')
    for i, (x, y) in enumerate(zip(ref['inputs'], ref[f'outputs_{mode}'])):
        with torch.no_grad():
            out = model(x)
        err = (out - y).abs().max().item()
        assert torch.allclose(out, y, atol=1e-5, rtol=1e-4), \
            f'{file} {mode} input {i}: max err {err}'


@pytest.mark.parametrize('file,name', CASES)
def test_bn_buffers_after_one_train_forward(file, name, golden):
    ref = golden(file)
    model = _model(ref, name, True)
    model(ref['inputs'][0])
    buffers = dict(model.named_buffers())
    for key, want in ref['bn_buffers_after_one_train_forward'].items():
        got = buffers[key]
        if want.dtype == torch.int64:
            assert torch.equal(got, want), key
        else:
            assert torch.allclose(got, want, atol=1e-6, rtol=1e-5), key


@pytest.mark.parametrize('file,name', [c for c in CASES if 'tiny' in c[0]])
def test_surrogate_gradients_match_official(file, name, golden):
    ref = golden(file)
    model = _model(ref, name, True)
    model(ref['inputs'][0]).backward(ref['grad_output'])
    params = dict(model.named_parameters())
    for key, want in ref['grads_train'].items():
        got = params[key].grad
        assert got is not None, f'no gradient reached {key}'
        bound = 1e-4 * want.abs().max().item() + 1e-6
        assert (got - want).abs().max().item() <= bound, key


@pytest.mark.parametrize('file,name', [c for c in CASES if 'tiny' in c[0]])
def test_spike_counts_match_official(file, name, golden):
    """Stricter than the outputs: every LIF layer fires exactly as often as the official one."""
    ref = golden(file)
    model = _model(ref, name, False)
    counts = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: counts.__setitem__(n, int(o.sum())))
             for n, m in model.named_modules() if type(m).__name__ == 'LIFNode']
    with torch.no_grad():
        model(ref['inputs'][0])
    for h in hooks:
        h.remove()
    want = ref['spike_counts_eval']                     # of inputs[0]
    assert set(counts) == set(want)
    assert counts == want
