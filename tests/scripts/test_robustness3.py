"""The bad-input catalogue, round three (issue 26), by class: (3) no option ignored in silence,
(4) checked before the first step, reports that are complete (no file named that is not there,
a changed training set noticed), padding said, ``--extend`` on a finished run, (6) numbers from
the environment and the command line, (7) messages that name the option and the value.

The training cases run ``Trainer`` and ``train.parse_options`` in this process on 16-pixel
patches of a tiny model; the one-line cases fork every script from one warm helper process
(tests/support/cli.py), with inputs hashed before and after.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import support.cli as tr
from support import ROOT
from train import parse_options
from utils.data.datasets import DatasetError
from utils.train.checkpoint import CheckpointError, load_training_state
from utils.train.config import ConfigError, TrainConfig, add_options, load_config_file
from utils.train.trainer import Trainer

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope='module')
def data(tmp_path_factory, paired_folder) -> Path:
    root = tmp_path_factory.mktemp('pairs3')
    paired_folder(root / 'train', 3, (20, 24))
    paired_folder(root / 'test', 1, (16, 20), seed=1)
    paired_folder(root / 'small', 2, (12, 24), seed=2)       # 12 < --patch_size 16
    return root


def _cfg(data: Path, run: Path, **kw) -> TrainConfig:
    base = dict(model='spikerain-tiny', train_dir=str(data / 'train'),
                val_dir=str(data / 'test'), model_save_dir=str(run), batch_size=2,
                patch_size=16, warmup='0', val_every='0', save_every='0', workers=0,
                tensorboard=False, seed=3, iters=2)
    return TrainConfig(**{**base, **kw})


def _train(cfg: TrainConfig) -> tuple[dict, list[str]]:
    lines: list[str] = []
    summary = Trainer(cfg, log=lines.append).fit()
    return summary, lines


def _args(data: Path, *extra) -> list[str]:
    return ['--model', 'spikerain-tiny', '--train_dir', str(data / 'train'), *map(str, extra)]


# --------------------------------------------------- (3) no option ignored in silence: config
def test_a_config_key_given_twice_or_under_two_spellings_is_refused(tmp_path):
    import argparse
    parser = argparse.ArgumentParser()
    add_options(parser)
    path = tmp_path / 'c.yaml'
    path.write_text('model: spikerain-tiny\nbatch_size: 4\nlr: 0.001\nbatch_size: 8\n')
    with pytest.raises(ConfigError, match=r"c.yaml: key 'batch_size' is given twice \(line 4\)"):
        load_config_file(str(path), parser)
    path.write_text('batch-size: 4\nbatch_size: 8\n')
    with pytest.raises(ConfigError, match="keys 'batch-size' and 'batch_size' are the same"):
        load_config_file(str(path), parser)
    for text, key in (('lr: .nan\n', "key 'lr': bad value nan (not a finite number)"),
                      ('seed: -3\n', "key 'seed': bad value -3 (must be >= 0)"),
                      ('iters: 1.0e+400\n', "key 'iters'")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=key.replace('(', r'\(').replace(')', r'\)')):
            load_config_file(str(path), parser)


@pytest.mark.parametrize('extra,expected', [
    (('--rain', 'streaks'), '--rain streaks: no effect without --clean_dir'),
    (('--clean_fraction', '0.3', '--samples_per_photo', '4'),
     '--clean_fraction 0.3, --samples_per_photo 4: no effect without --clean_dir'),
    (('--val_size', '64'), '--val_size 64: no effect without --holdout_family'),
    (('--val_tile', '32'), '--val_tile 32: no effect without --val_dir, --dataset or'),
    (('--no-fast', '--no-recompute'), '--recompute False: no effect without --fast'),
    (('--data_root', 'elsewhere'), '--data_root elsewhere: no effect without --dataset'),
    (('--dim', '8', '--model_opt', 'dim=16'), '--dim 8 and --model_opt dim=16: two widths'),
])
def test_an_option_whose_feature_is_off_is_refused(data, extra, expected):
    with pytest.raises(ConfigError) as err:
        parse_options(_args(data, *extra))
    assert str(err.value).startswith(expected), str(err.value)


def test_an_option_another_one_replaces_gets_a_note_with_the_final_value(data, tmp_path):
    _, notes = parse_options(_args(data, '--batch_size', '2', '--global_batch_size', '4'))
    assert notes == ['--batch_size 2 replaced: --global_batch_size 4 over 1 process(es) is 4 '
                     'per process']
    _, notes = parse_options(_args(data, '--num_epochs', '5', '--iters', '3'))
    assert notes == ['--num_epochs 5 has no effect: --iters 3 sets the length of the run']
    _, notes = parse_options(['--model', 'spikerain-tiny', '--dataset', 'Rain200L',
                              '--train_dir', 'a', '--val_dir', 'b'])
    assert len(notes) == 1 and 'only names the run folder' in notes[0]
    # defaults, or a config file that repeats them, are not "given": no note, no refusal
    path = tmp_path / 'defaults.yaml'
    path.write_text(yaml.safe_dump(dict(rain='random', clean_fraction=0.1, val_size=192,
                                        num_epochs=2000, batch_size=16)))
    cfg, notes = parse_options(_args(data, '--config', path, '--iters', '3'))
    assert notes == [] and cfg.iters == 3


def test_a_runs_own_config_yaml_restarts_it_without_refusal_or_note(data, tmp_path):
    run = tmp_path / 'run'
    _train(_cfg(data, run, iters=1, global_batch_size=None))
    cfg, notes = parse_options(['--config', str(run / 'config.yaml')])
    assert notes == [] and cfg.train_dir == str(data / 'train')


# --------------------------------------------------------- (4) checked before the first step
def test_a_bad_validation_image_stops_the_run_before_any_step(data, tmp_path):
    val = tmp_path / 'val'
    shutil.copytree(data / 'test', val)
    bad = next((val / 'target').iterdir())
    bad.write_bytes(bad.read_bytes()[:40])                    # truncated: header reads fine
    run = tmp_path / 'run'
    with pytest.raises(DatasetError) as err:
        Trainer(_cfg(data, run, val_dir=str(val)), log=lambda s: None)
    assert f'--val_dir {val}' in str(err.value) and bad.name in str(err.value)
    assert not (run / 'model_last.pth').exists()


def test_a_training_pair_of_two_sizes_is_refused_before_any_step(data, tmp_path):
    train = tmp_path / 'train'
    shutil.copytree(data / 'train', train)
    target = sorted((train / 'target').iterdir())[0]
    Image.new('RGB', (30, 20)).save(target)
    with pytest.raises(DatasetError, match=r'\(24x20\) and .*\(30x20\): input and target sizes'):
        Trainer(_cfg(data, tmp_path / 'run', train_dir=str(train)), log=lambda s: None)


# ------------------------------------------------------------------------- padding is said
def test_images_smaller_than_the_patch_get_a_note(data, tmp_path):
    lines = []
    Trainer(_cfg(data, tmp_path / 'run', train_dir=str(data / 'small')),
            log=lines.append).lock.release()
    note = [ln for ln in lines if 'smaller than --patch_size 16' in ln]
    assert note and note[0].startswith('note: 2 of 2 training images') and '24x12' in note[0]
    lines = []
    Trainer(_cfg(data, tmp_path / 'run2'), log=lines.append).lock.release()
    assert not any('--patch_size' in ln for ln in lines)


# -------------------------------------------------------------------- complete reports
def test_resumed_runs_notice_ignored_weights_changed_data_and_missing_files(data, tmp_path,
                                                                            tiny_weights):
    first = tmp_path / 'first'
    _train(_cfg(data, first, iters=2, val_every='1'))
    assert (first / 'model_best.pth').is_file()
    # resumed from another folder: its best score has no model_best.pth here, and no
    # model_last.pth is written here (no step left): the last line names neither
    other = tmp_path / 'other'
    summary, lines = _train(_cfg(data, other, iters=2, val_every='1',
                                 resume=str(first / 'model_last.pth'),
                                 init_weights=str(tiny_weights('spikerain-tiny'))))
    text = '\n'.join(lines)
    assert 'note: --init_weights' in text and 'not used: the run resumes from' in text
    assert f'has no {other / "model_best.pth"} behind it' in text
    last = lines[-1]
    assert f'state in {first / "model_last.pth"}' in last, last
    assert str(other / 'model_last.pth') not in last and 'best val PSNR' not in last
    assert not (other / 'model_last.pth').exists() and not (other / 'model_best.pth').exists()
    # the same folder, one training file rewritten (same count): noticed
    train = tmp_path / 'train'
    shutil.copytree(data / 'train', train)
    run = tmp_path / 'run'
    _train(_cfg(data, run, iters=2, stop_after=1, train_dir=str(train)))
    target = sorted((train / 'target').iterdir())[0]
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(target)
    _, lines = _train(_cfg(data, run, iters=2, train_dir=str(train)))
    assert any(ln.startswith('note: the training set changed since the checkpoint (6 -> 6')
               for ln in lines), lines
    # one pair more: the schedule no longer fits, and the refusal says why
    run2 = tmp_path / 'run2'
    _train(_cfg(data, run2, iters=4, stop_after=1, train_dir=str(train)))
    for sub in ('input', 'target'):                 # 5 pairs: 3 batches of 2, not 2
        for extra in ('zz1.png', 'zz2.png'):
            shutil.copy(sorted((train / sub).iterdir())[0], train / sub / extra)
    with pytest.raises(CheckpointError, match=r'training set changed since the checkpoint '
                                              r'\(6 -> 10 files'):
        Trainer(_cfg(data, run2, iters=4, train_dir=str(train)), log=lambda s: None)


def test_extending_a_finished_run_does_not_keep_the_learning_rate_at_its_floor(data, tmp_path):
    run = tmp_path / 'run'
    cfg = dict(iters=4, lr=1e-3, min_lr=1e-6)
    _train(_cfg(data, run, **cfg))
    assert load_training_state(run / 'model_last.pth')['optimizer']['param_groups'][0]['lr'] \
        == pytest.approx(1e-6)
    summary, lines = _train(_cfg(data, run, **{**cfg, 'iters': 8}, extend=True))
    assert summary['finished'] and any('note: the saved run had finished' in ln for ln in lines)
    ext = yaml.safe_load((run / 'schedule.yaml').read_text())['extensions'][0]
    # where a run planned for 8 steps is at step 4: half-way down the cosine
    assert ext['iteration'] == 4 and ext['lr'] == pytest.approx((1e-3 + 1e-6) / 2)


# ------------------------------------------------ one-line errors from every script (forked)
TINY = '{D}/tiny.pth'
TRAIN = ('train.py', '--model', 'spikerain-tiny', '--train_dir', '{D}/pairs')
TEST = ('test.py', '--weights', TINY, '--data_path', '{D}/pairs')
# every script and tool: the environment is checked before any of them parses its options
SCRIPTS = ['train.py', 'test.py', 'evaluation.py', 'dataset_load.py',
           *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / 'tools').glob('*.py'))]
BAD = [   # (id, argv, env, exit code, expected text of the last stderr line)
    *[(f'{Path(name).stem}-pixels-inf', (name,), {'SPIKEDERAIN_MAX_PIXELS': 'inf'}, 2,
       "environment variable SPIKEDERAIN_MAX_PIXELS='inf': not a finite number")
      for name in SCRIPTS],
    *[(f'test-pixels-{v}', TEST, {'SPIKEDERAIN_MAX_PIXELS': v}, 2,
       f"SPIKEDERAIN_MAX_PIXELS='{v}': not a finite number") for v in ('-inf', '1e400')],
    ('train-world-size-zero', TRAIN, {'WORLD_SIZE': '0'}, 2, "WORLD_SIZE='0': must be >= 1"),
    ('train-seed-negative', (*TRAIN, '--seed', '-1'), {}, 2, '--seed -1: must be >= 0'),
    ('train-iters-overflow', (*TRAIN, '--iters', '1e400'), {}, 2,
     '--iters 1e400: not a finite number'),
    ('train-seed-huge', (*TRAIN, '--seed', '99999999999'), {}, 2,
     '--seed 99999999999: must be <= 2,147,483,647'),
    ('test-tile-fraction', (*TEST, '--tile', '32.5'), {}, 2, '--tile 32.5: not a whole'),
    ('test-batch-inf', (*TEST, '--batch_size', 'inf'), {}, 2,
     '--batch_size inf: not a finite number'),
    ('demo-data-fraction-nan', ('tools/make_demo_data.py', '--out', '{O}/d', '--test_fraction',
                                'nan'), {}, 2, '--test_fraction nan: not a finite number'),
    ('train-rain-without-clean-dir', (*TRAIN, '--rain', 'heavy'), {}, 2,
     '--rain heavy: no effect without --clean_dir'),
    ('train-resume-missing', (*TRAIN, '--resume', '{D}/nope.pth'), {}, 1,
     'error: --resume {D}/nope.pth: checkpoint file not found'),
    ('train-val-dir-missing', (*TRAIN, '--val_dir', '{D}/nope'), {}, 1,
     'error: --val_dir {D}/nope: dataset folder not found'),
    ('train-val-image-not-an-image', (*TRAIN, '--val_dir', '{D}/badval'), {}, 1,
     'error: --val_dir {D}/badval: {D}/badval/target/notes.txt: not an image file'),
    ('eval-crop-without-targets', ('evaluation.py', '--restored', '{D}/pairs/input',
                                   '--crop_border', '4'), {}, 2,
     '--crop_border 4: no effect without --target_path'),
    ('eval-device-without-lpips', ('evaluation.py', '--restored', '{D}/pairs/input',
                                   '--target_path', '{D}/pairs/target', '--device', 'cpu',
                                   '--tf32'), {}, 2,
     '--device cpu, --tf32: no effect without --lpips'),
    ('complexity-synthetic-with-images', ('tools/complexity.py', '--model', 'spikerain-tiny',
                                          '--images', '{D}/pairs/input', '--synthetic', '4'),
     {}, 2, '--synthetic 4: no effect with --images'),
    ('complexity-max-images-without-images', ('tools/complexity.py', '--model',
                                              'spikerain-tiny', '--max_images', '3'), {}, 2,
     '--max_images 3: no effect without --images'),
    ('benchmark-patch-without-training', ('tools/benchmark.py', '--model', 'spikerain-tiny',
                                          '--training', '--patch', '32'), {}, 2,
     '--patch 32: no effect without --training variants'),
    ('demo-data-fraction-without-clean-dir', ('tools/make_demo_data.py', '--out', '{O}/d',
                                              '--test_fraction', '0.5'), {}, 2,
     '--test_fraction 0.5: no effect without --clean_dir'),
    ('rain-samples-cols-with-families', ('tools/rain_samples.py', '--out', '{O}/r.png',
                                         '--families', '--cols', '5'), {}, 2,
     '--cols 5: no effect with --families'),
    ('grid-num-with-names', ('tools/compare_grid.py', '--rainy', '{D}/pairs/input',
                             '--restored', '{D}/pairs/input', '--target', '{D}/pairs/target',
                             '--names', 'im0', '--num', '2', '--out', '{O}/g.png'), {}, 2,
     '--num 2: no effect with --names'),
    ('heldout-without-weights', ('tools/heldout_check.py', '--photos', '{D}/missing'), {}, 2,
     'nothing to do: give --weights'),
    ('heldout-json-without-weights', ('tools/heldout_check.py', '--photos', '{D}/missing',
                                      '--save_pairs', '{O}/p', '--json', '{O}/h.json'), {}, 2,
     '--json: no effect without --weights'),
    ('benchmark-json-is-a-folder', ('tools/benchmark.py', '--runs', '1', '--json', '{D}'), {},
     1, '--json: is a folder'),
    ('complexity-json-under-a-file', ('tools/complexity.py', '--model', 'spikerain-tiny',
                                      '--json', f'{TINY}/r.json'), {}, 1,
     'tiny.pth is a file, not a folder'),
]


def serve(spec_file: str, result_file: str) -> None:
    import test_robustness2 as r2
    tr.warm_up()
    spec = json.loads(Path(spec_file).read_text())
    D, W = spec['data'], Path(spec['work'])
    res = {}
    for case_id, argv, env, _, _ in BAD:
        out = W / 'out' / case_id
        argv = [a.replace('{D}', D).replace('{O}', str(out)) for a in argv]
        log = str(W / case_id.replace('/', '_'))
        res[case_id] = r2._collect(r2._start(argv, str(W), log, env=env), log, timeout=120)
    Path(result_file).write_text(json.dumps(res))


@pytest.fixture(scope='module')
def ran(tmp_path_factory, paired_folder, tiny_weights):
    base = tmp_path_factory.mktemp('robustness3')
    data, work = base / 'data', base / 'work'
    paired_folder(data / 'pairs', 2, (20, 24))
    paired_folder(data / 'badval', 1, (20, 24))
    (data / 'badval' / 'target' / 'notes.txt').write_text('not an image')
    shutil.copyfile(tiny_weights('spikerain-tiny'), data / 'tiny.pth')
    work.mkdir()
    before = tr.tree_digest(data)
    (base / 'spec.json').write_text(json.dumps(dict(data=str(data), work=str(work))))
    tr.run_helper(f'import test_robustness3; test_robustness3.serve('
                  f'{str(base / "spec.json")!r}, {str(base / "result.json")!r})',
                  path=[HERE])
    res = json.loads((base / 'result.json').read_text())
    return dict(res=res, before=before, after=tr.tree_digest(data), work=work, data=data)


@pytest.mark.slow
@pytest.mark.parametrize('case_id,argv,env,code,expected', BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_one_line_naming_the_culprit(ran, case_id, argv, env, code, expected):
    res = ran['res'][case_id]
    err = res['stderr']
    assert 'Traceback' not in err, err[-3000:]
    assert res['code'] == code, (res['code'], res['stdout'][-2000:], err[-2000:])
    line = tr.last_line(err)
    assert tr.ERROR_LINE.match(line), f'last stderr line is not the error: {line!r}'
    assert expected.replace('{D}', str(ran['data'])) in line, line
    assert not (ran['work'] / 'out' / case_id).exists()          # refused before any output


@pytest.mark.slow
def test_inputs_are_untouched_by_the_catalogue(ran):
    assert ran['before'] == ran['after']


def test_every_script_ends_through_run_main():
    """So each checks the environment before its options, and errors are one line."""
    for name in SCRIPTS:
        assert 'run_main(' in (ROOT / name).read_text(), name
