"""The catalogue of bad inputs: every script ends with ONE line naming the file or option.

Each case runs a script exactly as ``python SCRIPT ARGS`` would (same ``__main__`` code, real exit
code and file descriptors) and checks: non-zero exit, the last line on stderr is the error and
names the culprit, no Python traceback. Inputs smaller than the training patch must work, and no
script, failing or not, may change a byte of its inputs.

Starting Python with torch costs seconds on a busy 2-core machine, so the cases run in forked
children of ONE warm process (tests/support/cli.py: ``serve``) rather than in one interpreter
each; a crash in a case still prints its traceback into that case's stderr, as the interpreter
would. Cases already covered end to end elsewhere are not repeated here: missing
``--train_dir``, ``--lr -1``, a bad int, an unknown config key and a wrong ``--model`` on resume
(tests/train/test_train.py); zero-byte/corrupt/non-image files in test.py's input and an
official state dict without ``--model`` (tests/scripts/test_test_script.py); an unmatched target
in evaluation.py (tests/scripts/test_evaluation.py); a name mismatch in ``dataset_load.py
check`` (tests/data/test_dataset_load.py).
"""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tqdm import tqdm

from support.cli import ERROR_LINE, last_line, run_helper, tree_digest
from utils.core.cli import close_progress_bars, run_main

TRAIN = ('train.py', '--model', 'spikerain-tiny', '--iters', '1', '--patch_size', '16',
         '--batch_size', '2', '--workers', '0', '--no-tensorboard', '--warmup', '0')
TEST = ('test.py', '--no_progress', '--weights', '{D}/tiny.pth')
EVAL = ('evaluation.py', '--quiet')
DEMO = ('tools/make_demo_data.py', '--train_samples', '1', '--test_samples', '1', '--size', '16')

# (id, command (``{D}``: the input data, ``{O}``: this case's output folder), what the last
# line must contain). Paths are matched by their tail, so a message must name the file itself.
BAD = [
    # train.py: data
    ('train-zero-byte-image', (*TRAIN, '--train_dir', '{D}/zero'), 'zero/input/a.png: empty'),
    ('train-corrupt-image', (*TRAIN, '--train_dir', '{D}/corrupt'), 'corrupt/input/a.png'),
    ('train-truncated-image', (*TRAIN, '--train_dir', '{D}/trunc'), 'trunc/input/a.png'),
    ('train-non-image-file', (*TRAIN, '--train_dir', '{D}/nonimg'), 'nonimg/input/notes.txt'),
    ('train-count-mismatch', (*TRAIN, '--train_dir', '{D}/count'), 'count/input/b.png'),
    ('train-name-mismatch', (*TRAIN, '--train_dir', '{D}/names'), 'names/input/b.png'),
    ('train-size-mismatch', (*TRAIN, '--train_dir', '{D}/size'), 'size/input/c.png (24x20)'),
    ('train-empty-folders', (*TRAIN, '--train_dir', '{D}/empty'), 'empty/input'),
    ('train-corrupt-val-image', (*TRAIN, '--train_dir', '{D}/good', '--val_dir',
                                 '{D}/corrupt'), 'corrupt/input/a.png'),
    ('train-missing-dataset', (*TRAIN, '--dataset', 'Rain200H', '--data_root', '{D}'),
     'Rain200H/train: not found'),
    # train.py: options, config files, checkpoints, output folder
    ('train-batch-size-0', (*TRAIN, '--train_dir', '{D}/good', '--batch_size', '0'),
     '--batch_size'),
    ('train-patch-size-0', (*TRAIN, '--train_dir', '{D}/good', '--patch_size', '0'),
     '--patch_size'),
    ('train-iters-negative', (*TRAIN, '--train_dir', '{D}/good', '--iters', '-3'), '--iters'),
    ('train-save-every-negative', (*TRAIN, '--train_dir', '{D}/good', '--save_every', '-1'),
     '--save_every'),
    ('train-model-opt-T-0', (*TRAIN, '--train_dir', '{D}/good', '--model_opt', 'T=0'),
     '--model_opt'),
    ('train-model-opt-short-list', (*TRAIN, '--train_dir', '{D}/good', '--model_opt',
                                    'en_num_blocks=[1,1]'), '--model_opt'),
    ('train-config-not-yaml', (*TRAIN, '--train_dir', '{D}/good', '--config',
                               '{D}/not_yaml.yaml'), 'not_yaml.yaml: not valid YAML'),
    ('train-config-bad-value', (*TRAIN, '--train_dir', '{D}/good', '--config',
                                '{D}/bad_value.yaml'), "bad_value.yaml: key 'patch_size'"),
    ('train-config-not-mapping', (*TRAIN, '--train_dir', '{D}/good', '--config',
                                  '{D}/list.yaml'), 'list.yaml: expected a mapping'),
    ('train-unwritable-model-save-dir', (*TRAIN, '--train_dir', '{D}/good',
                                         '--model_save_dir', '{D}/a_file/run'), 'a_file/run'),
    ('train-resume-truncated-pth', (*TRAIN, '--train_dir', '{D}/good', '--resume',
                                    '{D}/trunc.pth'), 'trunc.pth: not a readable'),
    ('train-resume-text-pth', (*TRAIN, '--train_dir', '{D}/good', '--resume', '{D}/text.pth'),
     'text.pth: not a readable'),
    ('train-auto-resume-half-copied-last', (*TRAIN, '--train_dir', '{D}/good',
                                            '--model_save_dir', '{D}/half_copied_run'),
     'half_copied_run/model_last.pth: not a readable'),
    # test.py
    ('test-truncated-image', (*TEST, '--data_path', '{D}/trunc'), 'trunc/input/a.png'),
    ('test-empty-folder', (*TEST, '--data_path', '{D}/empty'), 'empty/input: no images'),
    ('test-missing-data-path', (*TEST, '--data_path', '{D}/nowhere'), 'nowhere: no such'),
    ('test-wrong-model-for-our-checkpoint', (*TEST, '--model', 'esdnet-tiny', '--data_path',
                                             '{D}/good'),
     "tiny.pth: checkpoint was saved from model 'spikerain-tiny'"),
    ('test-wrong-model-for-official-weights',
     ('test.py', '--weights', '{D}/official.pth', '--model', 'esdnet-tiny', '--data_path',
      '{D}/good'), re.compile(r"official\.pth: weights do not fit model 'esdnet-tiny'.*"
                              r"checkpoint has \d+ tensors, [\d,]+ parameters")),
    ('test-truncated-pth', ('test.py', '--weights', '{D}/trunc.pth', '--data_path', '{D}/good'),
     'trunc.pth: not a readable'),
    ('test-non-checkpoint-pth', ('test.py', '--weights', '{D}/text.pth', '--data_path',
                                 '{D}/good'), 'text.pth: not a readable'),
    ('test-pth-without-tensors', ('test.py', '--weights', '{D}/foreign.pth', '--model',
                                  'spikerain-tiny', '--data_path', '{D}/good'),
     'foreign.pth: no state dict found'),
    ('test-unwritable-save-path', (*TEST, '--data_path', '{D}/good', '--save_path',
                                   '{D}/a_file/out'), 'a_file/out'),
    ('test-save-path-is-a-file', (*TEST, '--data_path', '{D}/good', '--save_path',
                                  '{D}/a_file'), 'a_file: exists and is not a folder'),
    ('test-tile-negative', (*TEST, '--data_path', '{D}/good', '--tile', '-5'), '--tile -5'),
    ('test-tile-not-a-number', (*TEST, '--data_path', '{D}/good', '--tile', 'big'), '--tile'),
    ('test-tile-overlap-too-big', (*TEST, '--data_path', '{D}/good', '--tile', '16',
                                   '--tile_overlap', '16'), '--tile_overlap 16'),
    ('test-batch-size-0', (*TEST, '--data_path', '{D}/good', '--batch_size', '0'),
     '--batch_size 0'),
    ('test-unknown-device', (*TEST, '--data_path', '{D}/good', '--device', 'abacus'),
     '--device abacus'),
    ('test-target-count-mismatch', (*TEST, '--data_path', '{D}/count', '--target_path',
                                    '{D}/count/target'), '/b.png: no target image'),
    ('test-target-size-mismatch', (*TEST, '--data_path', '{D}/size', '--target_path',
                                   '{D}/size/target'), 'size/target/c.png (24x18)'),
    # evaluation.py
    ('eval-zero-byte-image', (*EVAL, '--restored', '{D}/zero/input', '--target_path',
                              '{D}/zero/target'), 'zero/input/a.png: empty'),
    ('eval-corrupt-image', (*EVAL, '--restored', '{D}/corrupt/input', '--target_path',
                            '{D}/corrupt/target'), 'corrupt/input/a.png'),
    ('eval-restored-missing', (*EVAL, '--restored', '{D}/count/target', '--target_path',
                               '{D}/count/input'), 'count/input/b.png: no restored image'),
    ('eval-size-mismatch', (*EVAL, '--restored', '{D}/size/input', '--target_path',
                            '{D}/size/target'), 'size/input/c.png: size 24x20'),
    ('eval-empty-folder', (*EVAL, '--restored', '{D}/empty/input', '--target_path',
                           '{D}/empty/target'), 'empty/input: no images'),
    ('eval-missing-folder', (*EVAL, '--restored', '{D}/nowhere', '--target_path',
                             '{D}/good/target'), 'nowhere: restored folder not found'),
    ('eval-crop-border-negative', (*EVAL, '--restored', '{D}/good/input', '--target_path',
                                   '{D}/good/target', '--crop_border', '-1'), '--crop_border'),
    ('eval-crop-border-eats-image', (*EVAL, '--restored', '{D}/good/input', '--target_path',
                                     '{D}/good/target', '--crop_border', '20'),
     'good/input/a.png: SSIM needs'),
    ('eval-json-onto-an-input', (*EVAL, '--restored', '{D}/good/input', '--target_path',
                                 '{D}/good/target', '--json', '{D}/good/target/a.png'),
     '--json'),
    ('eval-unwritable-json', (*EVAL, '--restored', '{D}/good/input', '--target_path',
                              '{D}/good/target', '--json', '{D}/a_file/m.json'), 'a_file'),
    # dataset_load.py
    ('check-zero-byte-image', ('dataset_load.py', 'check', '{D}/zero'), 'zero/input/a.png'),
    ('check-truncated-image', ('dataset_load.py', 'check', '{D}/trunc'), 'trunc/input/a.png'),
    ('check-non-image-file', ('dataset_load.py', 'check', '{D}/nonimg'), 'notes.txt'),
    ('check-count-mismatch', ('dataset_load.py', 'check', '{D}/count'), 'count/input/b.png'),
    ('check-size-mismatch', ('dataset_load.py', 'check', '{D}/size'), 'size/target/c.png'),
    ('check-empty-folders', ('dataset_load.py', 'check', '{D}/empty'), 'empty/input'),
    ('check-unknown-dataset', ('dataset_load.py', 'check', '--dataset', 'Rain9000'),
     "unknown dataset 'Rain9000'"),
    ('prepare-corrupt-image', ('dataset_load.py', 'prepare', '--convention', 'standard',
                               '--src', '{D}/corrupt', '--name', 'X', '--split', 'test',
                               '--out', '{O}'), 'corrupt/input/a.png'),
    ('prepare-size-mismatch', ('dataset_load.py', 'prepare', '--convention', 'standard',
                               '--src', '{D}/size', '--name', 'X', '--split', 'test',
                               '--out', '{O}'), 'size/target/c.png (24x18)'),
    ('prepare-count-mismatch', ('dataset_load.py', 'prepare', '--convention', 'standard',
                                '--src', '{D}/count', '--name', 'X', '--split', 'test',
                                '--out', '{O}'), 'count/input/b.png: no clean partner'),
    ('prepare-empty-source', ('dataset_load.py', 'prepare', '--convention', 'standard',
                              '--src', '{D}/empty', '--name', 'X', '--split', 'test',
                              '--out', '{O}'), 'empty: no images named like'),
    ('prepare-out-inside-source', ('dataset_load.py', 'prepare', '--convention', 'standard',
                                   '--src', '{D}/good', '--name', 'X', '--split', 'test',
                                   '--out', '{D}/good'), 'overlaps the source'),
    ('prepare-unwritable-out', ('dataset_load.py', 'prepare', '--convention', 'standard',
                                '--src', '{D}/good', '--name', 'X', '--split', 'test',
                                '--out', '{D}/a_file'), 'a_file'),
    ('prepare-unknown-convention', ('dataset_load.py', 'prepare', '--convention', 'zigzag',
                                    '--src', '{D}/good', '--name', 'X', '--split', 'test'),
     '--convention'),
    # tools/make_demo_data.py
    ('demo-size-0', (*DEMO, '--size', '0', '--out', '{O}'), '--size'),
    ('demo-samples-negative', (*DEMO, '--train_samples', '-2', '--out', '{O}'),
     '--train_samples'),
    ('demo-test-fraction-above-1', (*DEMO, '--test_fraction', '1.5', '--out', '{O}'),
     '--test_fraction'),
    ('demo-unknown-style', (*DEMO, '--styles', 'drizzle', '--out', '{O}'), '--styles'),
    ('demo-corrupt-clean-image', (*DEMO, '--clean_dir', '{D}/corrupt/input', '--out', '{O}'),
     'corrupt/input/a.png'),
    ('demo-zero-byte-clean-image', (*DEMO, '--clean_dir', '{D}/zero/input', '--out', '{O}'),
     'zero/input/a.png: empty'),
    ('demo-empty-clean-dir', (*DEMO, '--clean_dir', '{D}/empty/input', '--out', '{O}'),
     'empty/input: needs at least 2 images'),
    ('demo-missing-clean-dir', (*DEMO, '--clean_dir', '{D}/nowhere', '--out', '{O}'),
     '--clean_dir'),
    ('demo-out-inside-clean-dir', (*DEMO, '--clean_dir', '{D}/good/input', '--out',
                                   '{D}/good/input/demo'), 'overlaps the source'),
    ('demo-unwritable-out', (*DEMO, '--clean_dir', '{D}/good/input', '--out', '{D}/a_file/o'),
     'a_file/o'),
]

# Inputs that look awkward but are valid: they must work (exit 0) and produce these outputs.
GOOD = [
    ('train-images-smaller-than-patch', (*TRAIN, '--train_dir', '{D}/small', '--val_dir',
                                         '{D}/small', '--model_save_dir', '{O}'),
     ['model_last.pth', 'model_best.pth']),
    ('test-images-smaller-than-model-stride', (*TEST, '--data_path', '{D}/small',
                                               '--target_path', '{D}/small', '--save_path',
                                               '{O}'), ['a.png', 'b.png']),
    ('test-ignores-non-image-files', (*TEST, '--data_path', '{D}/nonimg', '--save_path', '{O}'),
     ['a.png', 'b.png']),
    ('eval-json-and-csv-reports', (*EVAL, '--restored', '{D}/good/input', '--target_path',
                                   '{D}/good/target', '--json', '{O}/m.json', '--csv',
                                   '{O}/m.csv'), ['m.json', 'm.csv']),
    ('check-small-images', ('dataset_load.py', 'check', '{D}/small'), []),
    ('prepare-standard', ('dataset_load.py', 'prepare', '--convention', 'standard', '--src',
                          '{D}/good', '--name', 'X', '--split', 'test', '--out', '{O}'),
     ['X/test/input/a.png', 'X/test/target/b.png']),
    ('demo-from-small-clean-images', (*DEMO, '--clean_dir', '{D}/small/input', '--out', '{O}'),
     ['train/input', 'test/target', 'preview.png']),
]

# ---------------------------------------------------------------------------------- fixtures
def _png(path: Path, h: int, w: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)).save(path)


def make_inputs(d: Path, paired_folder, tiny_weights) -> None:
    """Every bad (and awkward-but-valid) input of the catalogue, under ``d``."""
    def _split(root, stems=('a', 'b'), h=20, w=24):
        return paired_folder(root, stems=stems, size=(h, w))
    _split(d / 'good')
    _split(d / 'small', h=11, w=13)                  # smaller than the 16 px patch
    (_split(d / 'zero') / 'input' / 'a.png').write_bytes(b'')
    (_split(d / 'corrupt') / 'input' / 'a.png').write_bytes(b'\x89PNG\r\n\x1a\n garbage')
    cut = _split(d / 'trunc') / 'input' / 'a.png'
    cut.write_bytes(cut.read_bytes()[:100])           # half-copied
    (_split(d / 'nonimg') / 'input' / 'notes.txt').write_text('not an image')
    (_split(d / 'count') / 'target' / 'b.png').unlink()
    _split(d / 'names', stems=('a', 'b'))
    (d / 'names' / 'target' / 'b.png').rename(d / 'names' / 'target' / 'c.png')
    _split(d / 'size', stems=('a', 'b', 'c'))
    _png(d / 'size' / 'target' / 'c.png', 18, 24, seed=9)
    for sub in ('input', 'target'):
        (d / 'empty' / sub).mkdir(parents=True)
    (d / 'a_file').write_text('a file where a folder is expected')
    (d / 'not_yaml.yaml').write_text('lr: [0.1\n')
    (d / 'bad_value.yaml').write_text('patch_size: large\n')
    (d / 'list.yaml').write_text('- lr\n- 0.1\n')
    shutil.copyfile(tiny_weights('spikerain-tiny'), d / 'tiny.pth')
    torch.save(torch.load(d / 'tiny.pth', weights_only=True)['state_dict'], d / 'official.pth')
    whole = (d / 'tiny.pth').read_bytes()
    (d / 'trunc.pth').write_bytes(whole[:len(whole) // 2])
    (d / 'text.pth').write_text('this is not a checkpoint')
    torch.save({'epoch': 3, 'note': 'no tensors here'}, d / 'foreign.pth')
    (d / 'half_copied_run').mkdir()
    (d / 'half_copied_run' / 'model_last.pth').write_bytes(whole[:len(whole) // 3])


@pytest.fixture(scope='module')
def ran(tmp_path_factory, paired_folder, tiny_weights):
    """Build the inputs, run every case once, and hash the inputs before and after."""
    base = tmp_path_factory.mktemp('robustness')
    data, outs, logs = base / 'data', base / 'out', base / 'logs'
    make_inputs(data, paired_folder, tiny_weights)
    logs.mkdir()
    before = tree_digest(data)
    jobs = []
    for case_id, argv, _ in BAD + GOOD:
        out = outs / case_id
        argv = [a.replace('{D}', str(data)).replace('{O}', str(out)) for a in argv]
        if argv[0] == 'train.py' and '--model_save_dir' not in argv:
            argv += ['--model_save_dir', str(out)]
        if argv[0] == 'test.py' and '--save_path' not in argv:
            argv += ['--save_path', str(out)]
        cwd = base / 'cwd' / case_id                  # default outputs land here, not in ROOT
        cwd.mkdir(parents=True)
        jobs.append(dict(id=case_id, argv=argv, cwd=str(cwd), stdout=str(logs / f'{case_id}.out'),
                         stderr=str(logs / f'{case_id}.err')))
    (base / 'jobs.json').write_text(json.dumps(jobs))
    run_helper(f'from support import cli; cli.serve('
               f'{str(base / "jobs.json")!r}, {str(base / "results.json")!r})')
    results = json.loads((base / 'results.json').read_text())
    return dict(results=results, before=before, after=tree_digest(data), outs=outs)


# ------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize('case_id,argv,expected', BAD, ids=[c[0] for c in BAD])
@pytest.mark.slow
def test_bad_input_is_one_line_naming_the_culprit(ran, case_id, argv, expected):
    res = ran['results'][case_id]
    err = res['stderr']
    assert 'Traceback' not in err, err[-3000:]
    assert res['code'] != 0, (res['stdout'][-2000:], err[-2000:])
    line = last_line(err)
    assert ERROR_LINE.match(line), f'last stderr line is not the error: {line!r}'
    if isinstance(expected, str):
        assert expected in line, line
    else:
        assert expected.search(line), line


@pytest.mark.parametrize('case_id,argv,outputs', GOOD, ids=[c[0] for c in GOOD])
@pytest.mark.slow
def test_awkward_but_valid_input_works(ran, case_id, argv, outputs):
    res = ran['results'][case_id]
    assert res['code'] == 0, res['stderr'][-3000:]
    assert 'Traceback' not in res['stderr'] and 'error:' not in res['stderr']
    for name in outputs:
        assert (ran['outs'] / case_id / name).exists(), name


@pytest.mark.slow
def test_no_script_modifies_or_adds_to_its_inputs(ran):
    assert len(ran['before']) > 40
    assert ran['after'] == ran['before']


def test_run_main_turns_expected_errors_into_one_line(capsys, monkeypatch):
    def fails(err):
        def main():
            bar = tqdm(total=3, desc='work')           # left open, as an exception leaves it
            bar.update(1)
            raise err
        return main
    monkeypatch.delenv('SPIKEDERAIN_DEBUG', raising=False)
    cases = [(PermissionError(13, 'Permission denied', '/data/out'), 1,
              'prog.py: error: /data/out: Permission denied'),
             (ValueError('--tile 3: too small\nmore'), 1, 'prog.py: error: --tile 3: too small'),
             (KeyboardInterrupt(), 130, 'prog.py: interrupted')]
    for err, code, line in cases:
        with pytest.raises(SystemExit) as stop:
            run_main(fails(err), 'prog.py')
        assert stop.value.code == code
        stderr = capsys.readouterr().err
        assert last_line(stderr).startswith(line) and 'Traceback' not in stderr
        assert stderr.rstrip('\n').rsplit('\n', 1)[-1].startswith(line)   # on a line of its own
    with pytest.raises(ZeroDivisionError):                  # a bug keeps its traceback
        run_main(fails(ZeroDivisionError('bug')), 'prog.py')
    monkeypatch.setenv('SPIKEDERAIN_DEBUG', '1')
    with pytest.raises(ValueError):
        run_main(fails(ValueError('shown with its traceback')), 'prog.py')
    close_progress_bars()
    with pytest.raises(SystemExit) as stop:
        run_main(lambda: None, 'prog.py')
    assert stop.value.code == 0
