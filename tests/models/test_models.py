"""Registry specifics, padding, weight loading (generic checks:
tests/models/test_model_contract.py)."""
import pytest
import torch

from models import WeightsError, available_models, build_model, load_weights
from models.base import pad_to_multiple

TINY = dict(dim=16, en_num_blocks=[1, 1, 1, 1], de_num_blocks=[1, 1, 1, 1], T=4)


def test_registry_lists_official_names():
    for name in ('spikerain-s', 'spikerain-m', 'spikerain-l', 'esdnet'):
        assert name in available_models()


def test_official_parameter_counts(golden):
    stats = golden.stats()
    for ref_name, name in [('spikerain_s', 'spikerain-s'), ('spikerain_m', 'spikerain-m'),
                           ('spikerain_l', 'spikerain-l'), ('esdnet', 'esdnet')]:
        n = sum(p.numel() for p in build_model(name).parameters())
        assert n == stats[ref_name]['params'], name


def test_overrides_use_official_keyword_names():
    model = build_model('spikerain-s', **TINY)
    assert model.config['dim'] == 16 and model.T == 4
    assert model.patch_embed.proj.weight.shape == (16, 3, 3, 3)


def test_unknown_model_and_option_are_clear():
    with pytest.raises(ValueError, match='unknown model .*available'):
        build_model('spikerain-xl')
    with pytest.raises(ValueError, match="unknown option.*'width'"):
        build_model('spikerain-s', width=3)


def test_padding_is_bottom_right_and_keeps_content():
    x = torch.rand(1, 3, 37, 53)
    p = pad_to_multiple(x, 4)
    assert p.shape[-2:] == (40, 56)
    assert torch.equal(p[..., :37, :53], x)


def test_load_weights_accepts_wrappers_and_prefixes(tmp_path):
    src = build_model('spikerain-tiny')
    sd = src.state_dict()
    for wrapped in (sd, {'state_dict': sd}, {'params': sd},
                    {'state_dict': {f'module.{k}': v for k, v in sd.items()}}):
        dst = load_weights(build_model('spikerain-tiny'), wrapped)
        assert all(torch.equal(dst.state_dict()[k], v) for k, v in sd.items())
    path = tmp_path / 'w.pth'
    torch.save({'state_dict': {k: v.half() if v.is_floating_point() else v
                               for k, v in sd.items()}}, path)
    dst = load_weights(build_model('spikerain-tiny'), path)
    assert dst.patch_embed.proj.weight.dtype == torch.float32


def test_load_weights_mismatch_lists_keys_and_describes_checkpoint():
    sd = build_model('esdnet-tiny').state_dict()
    with pytest.raises(WeightsError) as err:
        load_weights(build_model('spikerain-tiny'), sd)
    msg = str(err.value)
    assert 'missing' in msg and 'unexpected' in msg and 'top-level modules' in msg
    assert 'down1_2' in msg and '\n' not in msg
    bigger = build_model('spikerain-tiny', dim=32).state_dict()
    with pytest.raises(WeightsError, match='mis-shaped: patch_embed.proj.weight'):
        load_weights(build_model('spikerain-tiny'), bigger)


@pytest.mark.parametrize('content', [b'', b'not a checkpoint at all', None])
def test_unreadable_checkpoint_is_one_clear_error(tmp_path, content):
    path = tmp_path / 'bad.pth'
    if content is None:                                  # a truncated real checkpoint
        torch.save(build_model('spikerain-tiny').state_dict(), path)
        path.write_bytes(path.read_bytes()[:1000])
    else:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match='bad.pth'):
        load_weights(build_model('spikerain-tiny'), path)
