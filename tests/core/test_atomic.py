"""utils.core.atomic: complete files or none, normal permissions, errors that name the file."""
import os
import stat
from pathlib import Path

import pytest

from utils.core.atomic import (atomic_open, remove_stale_temps, write_bytes_atomic,
                               write_text_atomic)


def test_writes_whole_file_with_normal_permissions(tmp_path):
    out = write_text_atomic(tmp_path / 'sub' / 'report.md', 'a\nb\n')
    assert out.read_text() == 'a\nb\n'
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in out.parent.iterdir()] == ['report.md']


def test_failure_inside_block_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = write_bytes_atomic(tmp_path / 'w.pth', b'old')
    with pytest.raises(RuntimeError), atomic_open(path, 'wb') as fh:
        fh.write(b'new, half')
        raise RuntimeError('boom')
    assert path.read_bytes() == b'old'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['w.pth']


def test_os_error_names_the_destination(tmp_path):
    path = write_bytes_atomic(tmp_path / 'x.bin', b'old')
    with pytest.raises(OSError) as info, atomic_open(path) as fh:
        fh.write(b'y')
        raise OSError(28, 'No space left on device')
    assert info.value.filename == str(path)
    assert 'previous file is intact' in str(info.value)
    assert path.read_bytes() == b'old'


def test_remove_stale_temps_only_touches_named_outputs(tmp_path):
    for name in ('.a.png.abcd1234.tmp', '.b.png.abcd1234.tmp', 'c.png', '.a.png.tmp'):
        (tmp_path / name).write_bytes(b'x')
    removed = remove_stale_temps(tmp_path, ['a.png'])
    assert [p.name for p in removed] == ['.a.png.abcd1234.tmp']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['.a.png.tmp', '.b.png.abcd1234.tmp',
                                                           'c.png']


def test_bad_mode_refused(tmp_path):
    with pytest.raises(ValueError), atomic_open(tmp_path / 'a', 'a'):
        pass


def test_never_touches_the_umask_or_the_random_state(tmp_path, monkeypatch):
    """Reading the umask means setting it, for every thread at once; the temp name must not
    consume the `random` draws a training run saves and restores."""
    import random

    def no_umask(mask):
        raise AssertionError('os.umask called')
    monkeypatch.setattr(os, 'umask', no_umask)
    state = random.getstate()
    for i in range(5):
        write_bytes_atomic(tmp_path / f'f{i}.bin', b'x')
    assert random.getstate() == state
    assert sorted(p.name for p in tmp_path.iterdir()) == [f'f{i}.bin' for i in range(5)]


def test_error_about_another_file_is_not_renamed(tmp_path):
    dest = tmp_path / 'copy.png'
    with pytest.raises(FileNotFoundError) as info, atomic_open(dest) as fh:
        fh.write((tmp_path / 'missing.png').read_bytes())
    assert info.value.filename == str(tmp_path / 'missing.png')
    assert list(tmp_path.iterdir()) == []


def test_temp_names_are_the_ones_remove_stale_temps_cleans(tmp_path):
    from utils.core.atomic import _create_temp
    fd, tmp = _create_temp(tmp_path, 'model_last.pth')
    os.close(fd)
    assert remove_stale_temps(tmp_path, ['model_last.pth']) == [Path(tmp)]


def test_check_writable_names_the_folder(tmp_path):
    from utils.core.atomic import check_writable
    check_writable(tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OSError) as info:
        check_writable(tmp_path / 'nowhere')
    assert info.value.filename == str(tmp_path / 'nowhere')
