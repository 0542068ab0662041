"""tools/gpu_check.py: its CPU-only part runs and writes both reports (issue 16, item 7)."""
import json

import pytest

from support import load_tool

pytestmark = pytest.mark.slow          # the whole tool (its CPU part) in this process: ~5 s

gpu_check = load_tool('gpu_check')


def test_cpu_part_runs_and_writes_json_and_markdown(tmp_path):
    assert gpu_check.main(['--out', str(tmp_path), '--steps', '2', '--cpu_only']) == 0
    report = json.loads((tmp_path / 'report.json').read_text())
    assert set(report['cpu']) == set(gpu_check.MODELS)
    for name, r in report['cpu'].items():
        assert r['finite'] and len(r['fp32_losses']) == len(r['bf16_losses']) == 2, name
        assert 0.5 < r['bf16_vs_fp32_spike_agreement'] <= 1.0, name
    t = report['test_script']
    assert t['plain']['exit_code'] == 0 and t['tiled']['exit_code'] == 0
    assert t['plain']['written'] and t['tiled']['written']
    assert report['cuda_skipped'] == '--cpu_only' and 'cuda' not in report
    md = (tmp_path / 'report.md').read_text()
    assert '## CPU: float32 vs bf16 autocast' in md and 'Not run: --cpu_only' in md
