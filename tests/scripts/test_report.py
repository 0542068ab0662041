"""tools/report.py as a user runs it (subprocess), and its page in a real headless Chromium.

The browser test drives Debian's ``chromium`` through the DevTools protocol over a pipe
(``--remote-debugging-pipe``: JSON messages on file descriptors 3 and 4), so it needs no Python
package beyond the standard library. It is skipped, with the reason, where no Chromium is
installed; the page's content is checked without a browser in tests/eval/test_report.py.
"""
from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from support.cli import last_line

pytestmark = pytest.mark.slow          # every test runs test.py / tools/report.py in subprocesses

BROWSERS = ('chromium', 'chromium-browser', 'google-chrome', 'chrome')


@pytest.fixture(scope='module')
def restored(tmp_path_factory, paired_folder, tiny_weights, cli):
    """A benchmark split and two models' test.py outputs (with manifests) of it."""
    root = tmp_path_factory.mktemp('report')
    split = paired_folder(root / 'split', count=2, size=(40, 48))
    folders = []
    for seed in (0, 1):
        weights = root / f'tiny{seed}.pth'
        shutil.copy(tiny_weights('spikerain-tiny', seed=seed), weights)
        out = root / f'out{seed}'
        code, _, err = cli('test.py', '--weights', weights, '--data_path', split / 'input',
                           '--save_path', out, '--no_progress')
        assert code == 0, err
        folders.append(out)
    return split, folders


def test_report_from_test_py_folders(restored, cli, tmp_path):
    split, folders = restored
    out = tmp_path / 'page' / 'report.html'
    code, stdout, err = cli('tools/report.py', '--input', split, '--restored', *folders,
                            '--energy_images', 1, '--out', out)
    assert code == 0, err
    assert last_line(stdout).startswith(f'wrote {out} (') and '2 images, 2 models' in stdout
    page = out.read_text()
    assert page.count('<input class="slider"') == 4
    # Labels from the manifests, told apart by folder; energy measured from their weights.
    assert 'spikerain-tiny (out0)' in page and 'spikerain-tiny (out1)' in page
    assert page.count('measured by tools/report.py') >= 2 and 'mJ per image' in page
    # The commands: test.py's own (from each manifest) and this page's.
    assert page.count('test.py --weights') == 2
    assert 'tools/report.py --input' in page and 'http://' not in page and 'https://' not in page


@pytest.mark.parametrize('case, message', [
    ('missing', '--restored {tmp}/nowhere: no such folder'),
    ('empty', '--input {tmp}/empty: no images in this folder'),
    ('out', '--out {tmp}/report.png: must end in .html'),
])
def test_bad_input_is_one_line_and_writes_nothing(restored, cli, tmp_path, case, message):
    split, folders = restored
    (tmp_path / 'empty').mkdir()
    out = tmp_path / 'report.html'
    args = {'missing': ['--input', split, '--restored', folders[0], tmp_path / 'nowhere'],
            'empty': ['--input', tmp_path / 'empty', '--restored', *folders],
            'out': ['--input', split, '--restored', *folders]}[case]
    if case == 'out':
        out = tmp_path / 'report.png'
    code, stdout, err = cli('tools/report.py', *args, '--out', out)
    assert code != 0
    assert err.strip().count('\n') == 0 and message.format(tmp=tmp_path) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['empty']     # no page, no temp file


def test_a_failed_run_leaves_an_earlier_report_untouched(restored, cli, tmp_path):
    split, folders = restored
    out = tmp_path / 'report.html'
    out.write_text('earlier report')
    (folders[1] / 'im1.png').rename(tmp_path / 'im1.png')       # a model's output goes missing
    try:
        code, _, err = cli('tools/report.py', '--input', split, '--restored', *folders,
                           '--out', out)
    finally:
        (tmp_path / 'im1.png').rename(folders[1] / 'im1.png')
    assert code != 0 and 'no image named im1.*' in err
    assert out.read_text() == 'earlier report'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['report.html']


# ------------------------------------------------------------------------ a headless Chromium
class DevTools:
    """A headless Chromium driven over ``--remote-debugging-pipe`` (one page, flat session)."""

    def __init__(self, exe: str, profile: Path, size=(1200, 900)):
        self._cmd_r, self._cmd_w = os.pipe()
        self._out_r, self._out_w = os.pipe()
        cmd_r, out_w = self._cmd_r, self._out_w

        def fds():      # the browser reads fd 3 and writes fd 4 (dup2's copies are inherited)
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (cmd_r, out_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)
        self.proc = subprocess.Popen(
            [exe, '--headless', '--remote-debugging-pipe', '--no-sandbox', '--disable-gpu',
             '--no-first-run', '--no-default-browser-check', '--disable-extensions',
             '--disable-background-networking', '--disable-component-update',
             '--disable-sync', '--disable-features=Translate,OptimizationHints,MediaRouter',
             '--hide-scrollbars', f'--user-data-dir={profile}',
             f'--window-size={size[0]},{size[1]}', 'about:blank'],
            preexec_fn=fds, close_fds=False, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(out_w)
        self._buf, self._id, self.events = b'', 0, []
        self.session = None

    def call(self, method: str, timeout: float = 30, **params) -> dict:
        self._id += 1
        msg = {'id': self._id, 'method': method, 'params': params}
        if self.session and not method.startswith('Target.'):
            msg['sessionId'] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b'\0')
        reply = self._wait(lambda m: m.get('id') == self._id, timeout)
        if 'error' in reply:
            raise RuntimeError(f'{method}: {reply["error"]}')
        return reply.get('result', {})

    def wait_event(self, method: str, timeout: float = 30) -> dict:
        seen = [e for e in self.events if e['method'] == method]
        return seen[0] if seen else self._wait(lambda m: m.get('method') == method, timeout)

    def _wait(self, done, timeout: float) -> dict:
        end = time.monotonic() + timeout
        while True:
            while b'\0' in self._buf:
                raw, self._buf = self._buf.split(b'\0', 1)
                msg = json.loads(raw)
                if 'method' in msg:
                    self.events.append(msg)
                if done(msg):
                    return msg
            left = end - time.monotonic()
            if left <= 0 or not select.select([self._out_r], [], [], left)[0]:
                raise TimeoutError('no answer from Chromium')
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                raise RuntimeError('Chromium closed the pipe')
            self._buf += chunk

    def open(self, url: str) -> None:
        target = self.call('Target.createTarget', url='about:blank')['targetId']
        self.session = self.call('Target.attachToTarget', targetId=target,
                                 flatten=True)['sessionId']
        for domain in ('Page', 'Runtime', 'Log', 'Network'):
            self.call(f'{domain}.enable')
        self.call('Page.navigate', url=url)
        self.wait_event('Page.loadEventFired')

    def js(self, expression: str):
        res = self.call('Runtime.evaluate', expression=expression, returnByValue=True,
                        awaitPromise=True)
        if 'exceptionDetails' in res:
            raise RuntimeError(f'{expression}: {res["exceptionDetails"]}')
        return res['result'].get('value')

    def shot(self, rect: dict) -> np.ndarray:
        data = self.call('Page.captureScreenshot', format='png',
                         clip={**rect, 'scale': 1})['data']
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert('RGB'))

    def click(self, x: float, y: float) -> None:
        for kind in ('mousePressed', 'mouseReleased'):
            self.call('Input.dispatchMouseEvent', type=kind, x=x, y=y, button='left',
                      clickCount=1)

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):   # it may be gone
            self.call('Browser.close', timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._out_r)


RECT = ('(function (e) { var r = e.getBoundingClientRect(); '
        'return {x: r.left, y: r.top, width: r.width, height: r.height}; })')


def test_page_in_headless_chromium(restored, cli, tmp_path):
    exe = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if exe is None:      # .ci/run installs it and sets SPIKEDERAIN_REQUIRE_BROWSER=1: a failure
        why = ('no Chromium on this machine (Debian: apt-get install chromium); the '
               "page's content is checked without a browser in tests/eval/test_report.py")
        if os.environ.get('SPIKEDERAIN_REQUIRE_BROWSER') == '1':
            pytest.fail(why)
        pytest.skip(why)
    split, folders = restored
    out = tmp_path / 'report.html'
    code, _, err = cli('tools/report.py', '--input', split, '--restored', *folders,
                       '--energy', 'none', '--out', out)
    assert code == 0, err
    browser = DevTools(exe, tmp_path / 'profile')
    try:
        browser.open(out.as_uri())
        assert browser.js('document.title') == 'Deraining report'
        assert browser.js("document.querySelectorAll('input.slider').length") == 4
        # Every image was decoded (from the embedded previews).
        assert browser.js("Array.from(document.images).every(i => i.complete && "
                          "i.naturalWidth > 0)")
        browser.js("window.scrollTo(0, 0); document.querySelector('article').scrollIntoView()")
        frame = browser.js(f"{RECT}(document.querySelector('.frame'))")
        slider = browser.js(f"{RECT}(document.querySelector('input.slider'))")
        before = browser.shot(frame)
        # A real mouse press near the slider's left end moves it: more of the input shows.
        browser.click(slider['x'] + 0.1 * slider['width'], slider['y'] + slider['height'] / 2)
        value = int(browser.js("document.querySelector('input.slider').value"))
        assert value < 25
        after = browser.shot(frame)
        assert before.shape == after.shape
        changed = np.abs(before.astype(int) - after.astype(int)).max(axis=2) > 8
        assert changed.mean() > 0.05, 'moving the slider did not change the pixels shown'
        # The change lies between the old and the new divider position (10 % .. 50 % wide).
        cols = np.flatnonzero(changed.any(axis=0)) / changed.shape[1]
        assert cols.min() > value / 100 - 0.02 and cols.max() < 0.52, (value, cols)
        # A click on an image zooms every column of that image on the same spot.
        browser.click(frame['x'] + 0.75 * frame['width'], frame['y'] + 0.25 * frame['height'])
        zoom = browser.js("(function () { var z = document.querySelector('article .zoom'); "
                          "return {hidden: z.hidden, where: z.querySelector('.where')"
                          ".textContent, pos: Array.from(z.querySelectorAll('.lens'))"
                          ".map(l => l.style.backgroundPosition)}; })()")
        assert not zoom['hidden'] and zoom['where'].startswith('x 36, y 10 of 48\u00d740')
        assert len(zoom['pos']) == 4 and len(set(zoom['pos'])) == 1      # input, 2 models, target
        browser.js('new Promise(r => setTimeout(r, 200))')
    finally:
        browser.close()
    errors = [e for e in browser.events
              if (e['method'] == 'Runtime.consoleAPICalled' and e['params']['type'] == 'error')
              or e['method'] == 'Runtime.exceptionThrown'
              or (e['method'] == 'Log.entryAdded' and e['params']['entry']['level'] == 'error')]
    assert not errors, errors
    urls = [e['params']['request']['url'] for e in browser.events
            if e['method'] == 'Network.requestWillBeSent']
    assert urls and all(u.startswith(('file:', 'data:')) for u in urls), urls
