"""Numbers from the environment and the command line (issue 26, class 6): non-finite, negative,
fractional and overflowing values are one line naming the variable or option, never a
traceback and never a silent nonsense value."""
import pytest

from utils.core.cli import ArgumentParser
from utils.core.errors import UsageError
from utils.core.settings import (INT_LIMIT, MAX_PIXELS_ENV, SettingError, check_environment,
                                 env_int, parse_int)
from utils.data.image_io import DEFAULT_MAX_PIXELS, max_image_pixels


@pytest.mark.parametrize('text,value', [('12', 12), (' 1e6 ', 1_000_000), ('1_000', 1000),
                                        ('0', 0), ('64.0', 64)])
def test_whole_numbers_in_any_usual_spelling(text, value):
    assert parse_int(text) == value


@pytest.mark.parametrize('text,reason', [('inf', 'not a finite number'),
                                         ('-inf', 'not a finite number'),
                                         ('1e400', 'not a finite number'),
                                         ('nan', 'not a finite number'),
                                         ('1.5', 'not a whole number'),
                                         ('-1', 'must be >= 0'),
                                         ('many', 'not a number')])
def test_bad_numbers_say_why(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_int(text)


@pytest.mark.parametrize('text', ['inf', '-inf', '1e400', 'nan', '-5', 'lots', '2.5'])
def test_a_bad_pixel_limit_names_the_variable(monkeypatch, text):
    monkeypatch.setenv(MAX_PIXELS_ENV, text)
    for check in (max_image_pixels, check_environment):
        with pytest.raises(SettingError) as err:
            check()
        assert f'{MAX_PIXELS_ENV}={text!r}' in str(err.value) and '\n' not in str(err.value)
    assert isinstance(err.value, UsageError)                   # exit 2, like a bad option


def test_pixel_limit_default_blank_and_large(monkeypatch):
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    assert max_image_pixels() == DEFAULT_MAX_PIXELS
    monkeypatch.setenv(MAX_PIXELS_ENV, ' ')
    assert max_image_pixels() == DEFAULT_MAX_PIXELS
    monkeypatch.setenv(MAX_PIXELS_ENV, '1e12')          # large but finite: a real limit
    assert max_image_pixels() == 10 ** 12


def test_torchrun_variables_are_checked_too(monkeypatch):
    monkeypatch.setenv('WORLD_SIZE', '0')
    with pytest.raises(SettingError, match="WORLD_SIZE='0': must be >= 1"):
        check_environment()
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('LOCAL_RANK', 'inf')
    with pytest.raises(SettingError, match='LOCAL_RANK'):
        env_int('LOCAL_RANK', 0)


def _parser():
    p = ArgumentParser(prog='x')
    p.add_argument('--tile', type=int)
    p.add_argument('--lr', type=float)
    p.add_argument('--name')
    return p


@pytest.mark.parametrize('argv,expected', [
    (['--tile', '-5'], '--tile -5: must be >= 0'),
    (['--tile', '1e400'], '--tile 1e400: not a finite number'),
    (['--tile', '2.5'], '--tile 2.5: not a whole number'),
    (['--tile', str(INT_LIMIT + 1)], f'--tile {INT_LIMIT + 1}: must be <= 2,147,483,647'),
    (['--lr', 'nan'], '--lr nan: not a finite number'),
    (['--lr', 'inf'], '--lr inf: not a finite number'),
    (['--tile', 'many'], "argument --tile: invalid int value: 'many'"),
])
def test_every_int_and_float_option_is_checked(argv, expected):
    with pytest.raises(UsageError) as err:
        _parser().parse_args(argv)
    assert str(err.value).startswith(expected), str(err.value)


def test_good_numbers_and_other_types_pass():
    args = _parser().parse_args(['--tile', '1e3', '--lr', '-0.5', '--name', '-x'[1:]])
    assert (args.tile, args.lr, args.name) == (1000, -0.5, 'x')
    assert isinstance(args.tile, int)
