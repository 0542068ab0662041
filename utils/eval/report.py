"""One self-contained HTML page to judge restorations by eye: sliders, zoom, scores, energy.

Deraining is judged by looking. The page puts each model's output beside its rainy input (a
before/after slider per image and model), zooms every column on the same spot at a click, and
shows per-image and mean scores (PSNR/SSIM on Y where targets exist, no-reference scores where
not), each model's energy and firing rates, and the commands that made it all.

It works offline and from a copied folder: no fonts, scripts or styles from the network (inline
CSS and vanilla JS, and a Content-Security-Policy that forbids everything else), JPEG previews
embedded as data URIs, and the full-size images linked by relative path (the zoom uses them when
they are there, else the preview). ``tools/report.py`` is the command; it adds the energy
(``utils.efficiency``, a group this one may not import) as plain dicts.
"""
from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

from utils.core.atomic import write_text_atomic
from utils.core.errors import InputError
from utils.eval import noreference
from utils.data.image_io import list_images, read_image_rgb
from utils.eval.folders import evaluate_pair, mean_metrics, target_folder
from utils.inference.outputs import read_manifest

# The page may load nothing but itself, data: URIs and the linked full images beside it (local
# files, or the same server when a folder of reports is served).
CSP = ("default-src 'none'; img-src data: file: 'self'; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'")


class ReportInputError(InputError):
    """Folders that cannot make a report: missing, empty, or whose image names do not match."""


@dataclass
class Column:
    """One model's restored folder and what the page says about it."""
    label: str
    folder: Path
    files: dict[str, Path]                          # stem -> restored image
    manifest: dict | None                           # utils.inference.outputs manifest, if any
    scores: dict[str, dict] = field(default_factory=dict)   # stem -> {metric: value}
    means: dict = field(default_factory=dict)
    efficiency: dict | None = None                  # see :func:`efficiency_entry`
    efficiency_note: str = ''                       # why there is none

    @property
    def recipe(self) -> dict:
        return (self.manifest or {}).get('recipe') or {}


@dataclass
class ReportSet:
    """The images of a report: inputs, each model's outputs, targets (or none), matched by stem."""
    input_dir: Path
    inputs: dict[str, Path]
    columns: list[Column]
    target_dir: Path | None = None
    targets: dict[str, Path] | None = None
    input_scores: dict[str, dict] = field(default_factory=dict)
    input_means: dict = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)        # the score keys shown, in order
    lower_is_better: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    @property
    def stems(self) -> list[str]:
        return list(self.inputs)


# --- Gathering the folders ------------------------------------------------------------------

def _images_by_stem(folder: Path, option: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise ReportInputError(f'{option} {folder}: no such folder')
    files = list_images(folder)
    if not files:
        raise ReportInputError(f'{option} {folder}: no images in this folder')
    out: dict[str, Path] = {}
    for f in files:
        if f.stem in out:
            raise ReportInputError(f'{option} {folder}: two images share the name {f.stem!r} '
                                   f'({out[f.stem].name} and {f.name}); images match by name')
        out[f.stem] = f
    return dict(sorted(out.items()))


def _match(stems: list[str], files: dict[str, Path], option: str, folder: Path,
           subset: bool) -> dict[str, Path]:
    """``files`` for exactly ``stems``; a missing (or, unless ``subset``, an extra) name is an
    error naming the first one, since a side-by-side page of unrelated images misleads."""
    missing = [s for s in stems if s not in files]
    if missing:
        raise ReportInputError(f'{option} {folder}: no image named {missing[0]}.* (an input has '
                               f'it; {len(missing)} of {len(stems)} inputs unmatched)')
    extra = [s for s in files if s not in stems]
    if extra and not subset:
        raise ReportInputError(f'{option} {folder}: {files[extra[0]].name} matches no input '
                               f'({len(extra)} image(s) unmatched); are the folders from the '
                               f'same inputs?')
    return {s: files[s] for s in stems}


def _labels(folders: list[Path], manifests: list[dict | None], labels: list[str] | None
            ) -> list[str]:
    if labels is not None:
        if len(labels) != len(folders):
            raise ReportInputError(f'--labels: {len(labels)} label(s) for {len(folders)} '
                                   f'--restored folder(s)')
        return list(labels)
    names = [((m or {}).get('recipe') or {}).get('model') or f.name
             for f, m in zip(folders, manifests)]
    return [f'{n} ({f.name})' if names.count(n) > 1 else n for n, f in zip(names, folders)]


def gather(input_path: str | os.PathLike, restored: list[str | os.PathLike],
           labels: list[str] | None = None, target: str | os.PathLike | None = None,
           max_images: int = 0) -> ReportSet:
    """The inputs, each restored folder and the targets, matched by file stem.

    ``input_path`` is a folder of rainy images or a benchmark split (``input/``, and its
    ``target/`` is used when ``target`` is not given). Every input must have its output in every
    folder (and its target); ``max_images`` keeps the first ones by name (0: all).
    """
    path = Path(input_path)
    split = path.is_dir() and (path / 'input').is_dir() and not list_images(path)
    input_dir = path / 'input' if split else path
    inputs = _images_by_stem(input_dir, '--input')
    if max_images:
        inputs = dict(list(inputs.items())[:max_images])
    stems = list(inputs)
    subset = bool(max_images)
    folders = [Path(r) for r in restored]
    manifests = [read_manifest(f) if f.is_dir() else None for f in folders]
    names = _labels(folders, manifests, labels)
    columns = [Column(name, f, _match(stems, _images_by_stem(f, '--restored'), '--restored', f,
                                      subset), m)
               for name, f, m in zip(names, folders, manifests)]
    report = ReportSet(input_dir, inputs, columns)
    if target is None and split and (path / 'target').is_dir():
        target = path / 'target'
    if target is not None:
        tdir = target_folder(target)
        report.target_dir = tdir
        report.targets = _match(stems, _images_by_stem(tdir, '--target'), '--target', tdir, True)
    return report


# --- Scores ---------------------------------------------------------------------------------

def no_reference_scorer() -> Callable[[np.ndarray], dict]:
    """``scorer(image) -> {metric: value}`` running NIQE, BRISQUE and PIQE
    (:mod:`utils.eval.noreference`). A metric an image is too small for (an
    :class:`InputError` of that module) scores NaN, shown as a dash, rather than stopping the
    page."""
    functions = {name: getattr(noreference, name) for name in noreference.METRICS}

    def scorer(img: np.ndarray) -> dict:
        row = {}
        for name, fn in functions.items():
            try:
                row[name] = float(fn(img))
            except InputError:          # too small for this metric's block or window
                row[name] = math.nan
        return row
    return scorer


def _mean(rows: list[dict]) -> dict:
    """Mean of each score over the images that have one (NaN: none has)."""
    keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float))] if rows else []
    out = {}
    for k in keys:
        vals = [r[k] for r in rows if not math.isnan(r[k])]
        out[k] = float(np.mean(vals)) if vals else math.nan
    out['images'] = len(rows)
    return out


def score(report: ReportSet, no_reference: Callable[[np.ndarray], dict] | None = None,
          progress: Callable[[str], None] | None = None) -> None:
    """Fill every column's (and the inputs') per-image scores and means.

    With targets: PSNR and SSIM on Y (the published protocol, :func:`evaluate_pair`). Without:
    ``no_reference(image)`` (lower is better), or nothing when it is ``None`` (then a note).
    """
    if report.targets is not None:
        report.metrics = ['psnr', 'ssim']

        def one(path: Path, stem: str) -> dict:
            row = evaluate_pair(path, report.targets[stem])
            return {'psnr': row['psnr'], 'ssim': row['ssim']}
        summarize = mean_metrics
    elif no_reference is not None:
        def one(path: Path, stem: str) -> dict:
            return {k: float(v) for k, v in no_reference(read_image_rgb(path)).items()}
        summarize = _mean
    else:
        return
    for who, files, target in [('rainy input', report.inputs, report)] + \
            [(c.label, c.files, c) for c in report.columns]:
        if progress:
            progress(f'scoring {who}')
        rows = {stem: one(p, stem) for stem, p in files.items()}
        means = summarize(list(rows.values()))
        if target is report:
            report.input_scores, report.input_means = rows, means
        else:
            target.scores, target.means = rows, means
    if report.targets is None:
        report.metrics = list(next(iter(report.input_scores.values())))
        report.lower_is_better = set(report.metrics)
        small = sorted({f'{m.upper()} ({stem})' for stem, row in report.input_scores.items()
                        for m, v in row.items() if math.isnan(v)})
        if small:
            report.notes.append(f'Too small for some no-reference metrics (shown as a dash, '
                                f'left out of the means): {", ".join(small)}.')


def scores_json(report: ReportSet) -> dict:
    """Every score on the page, machine-readable: per image and mean, inputs and each model."""
    def value(v: float) -> float | str | None:      # JSON has no NaN or inf
        return 'inf' if v == math.inf else None if math.isnan(v) else v

    def clean(row: dict) -> dict:
        return {k: value(v) for k, v in row.items() if k in report.metrics}
    return {'metrics': report.metrics, 'lower_is_better': sorted(report.lower_is_better),
            'rainy input': {'per_image': {s: clean(r) for s, r in report.input_scores.items()},
                            'mean': clean(report.input_means)},
            **{c.label: {'per_image': {s: clean(r) for s, r in c.scores.items()},
                         'mean': clean(c.means)} for c in report.columns}}


# --- Energy ---------------------------------------------------------------------------------

def efficiency_entry(stats: dict, *, weights: str | None, images: str, convention: dict,
                     source: str) -> dict:
    """What the page shows of a model's cost, from an ``EnergyReport.to_dict()`` (or a
    tools/complexity.py JSON entry): energy, firing rates, and where they come from."""
    return {'params': stats.get('params'), 'gmacs': stats.get('gmacs'),
            'sops': stats.get('sops'), 'energy_mj': stats.get('energy_mj'),
            'mean_firing_rate': stats.get('mean_firing_rate'),
            'neuron_rates': stats.get('neuron_rates') or {}, 'size': stats.get('size'),
            'weights': weights, 'images': images, 'convention': convention, 'source': source}


def read_complexity_json(path: str | os.PathLike) -> list[tuple[str, dict]]:
    """``(model name, entry)`` of every model in a tools/complexity.py ``--json`` file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        models = doc['models']
        conv = doc.get('energy_convention') or {'name': doc.get('energy_model')}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ReportInputError(f'--complexity {path}: not a tools/complexity.py --json file '
                               f'({type(err).__name__}: {err})') from None
    return [(name, efficiency_entry(stats, weights=doc.get('weights'), images=doc.get('images'),
                                    convention=conv, source=f'{path} (tools/complexity.py)'))
            for name, stats in models.items()]


def attach_complexity(report: ReportSet, entries: list[tuple[str, dict]]) -> None:
    """Give each column the complexity entry of its model and weights (same model name, same
    weights file name); a column that finds none keeps ``efficiency`` unset."""
    for col in report.columns:
        model, weights = col.recipe.get('model'), col.recipe.get('weights')
        for name, entry in entries:
            if name == model and entry['weights'] and weights and \
                    Path(entry['weights']).name == Path(weights).name:
                col.efficiency = entry
                break


# --- The page -------------------------------------------------------------------------------

def preview_uri(path: Path, max_side: int, quality: int) -> tuple[str, tuple[int, int]]:
    """A JPEG data URI of the image shrunk to ``max_side`` (never enlarged), and its full size."""
    img = Image.fromarray(read_image_rgb(path))
    size = img.size
    if max(size) > max_side:
        scale = max_side / max(size)
        img = img.resize((max(1, round(size[0] * scale)), max(1, round(size[1] * scale))),
                         Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format='JPEG', quality=quality, optimize=True)
    return 'data:image/jpeg;base64,' + base64.b64encode(buf.getvalue()).decode('ascii'), size


def _href(path: Path, base: Path) -> str:
    """``path`` relative to the page's folder, as a URL (the page may be moved with them)."""
    rel = os.path.relpath(Path(path).resolve(), base.resolve())
    return quote(Path(rel).as_posix())


def _fmt(metric: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '&ndash;'
    if metric == 'psnr':
        return 'inf' if value == math.inf else f'{value:.2f}'
    if metric == 'ssim':
        return f'{value:.4f}'
    return f'{value:.2f}'


METRIC_NAMES = {'psnr': 'PSNR (dB)', 'ssim': 'SSIM'}


def _metric_head(report: ReportSet, m: str) -> str:
    arrow = '&darr;' if m in report.lower_is_better else '&uarr;'
    return f'{html.escape(METRIC_NAMES.get(m, m.upper()))} {arrow}'


def _scores_text(report: ReportSet, row: dict | None) -> str:
    if not row:
        return ''
    return ' &middot; '.join(f'{html.escape(METRIC_NAMES.get(m, m.upper()).split(" ")[0])} '
                             f'{_fmt(m, row.get(m))}' for m in report.metrics)


def _rates_svg(rates: dict[str, float], width: int = 560, height: int = 70) -> str:
    """Firing rate of every neuron layer in forward order, as an inline bar chart."""
    values = list(rates.values())
    if not values:
        return ''
    top = max(max(values), 1e-9)
    bw = width / len(values)
    bars = ''.join(
        f'<rect x="{i * bw:.2f}" y="{height - v / top * height:.2f}" width="{max(bw - 1, 0.5):.2f}"'
        f' height="{v / top * height:.2f}"><title>{html.escape(n)}: {v:.3f}</title></rect>'
        for i, (n, v) in enumerate(rates.items()))
    return (f'<svg class="rates" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="firing rate per neuron layer">'
            f'{bars}</svg><div class="axis">0 &ndash; {top:.3f} (max), '
            f'{len(values)} neuron layers, forward order</div>')


def _summary(report: ReportSet) -> str:
    heads = ['', *(_metric_head(report, m) for m in report.metrics)]
    if report.targets is not None:
        heads.append('gain (dB)')
    heads += ['energy (mJ)', 'firing rate', 'params', 'GMACs']
    best = {}
    for m in report.metrics:
        vals = [c.means.get(m) for c in report.columns if c.means.get(m) is not None]
        if vals:
            best[m] = (min if m in report.lower_is_better else max)(vals)
    rows = [f'<tr>{"".join(f"<th>{h}</th>" for h in heads)}</tr>']
    base = report.input_means
    cells = ['rainy input', *(_fmt(m, base.get(m)) for m in report.metrics)]
    if report.targets is not None:
        cells.append('')
    rows.append('<tr class="input">' + ''.join(
        f'<td>{c}</td>' for c in cells) + '<td></td>' * 4 + '</tr>')
    for col in report.columns:
        tds = [f'<td>{html.escape(col.label)}</td>']
        for m in report.metrics:
            v = col.means.get(m)
            strong = v is not None and best.get(m) == v and len(report.columns) > 1
            tds.append(f'<td>{"<b>" if strong else ""}{_fmt(m, v)}{"</b>" if strong else ""}'
                       f'</td>')
        if report.targets is not None:
            gain = col.means.get('psnr', math.nan) - base.get('psnr', math.nan)
            tds.append(f'<td>{gain:+.2f}</td>' if math.isfinite(gain) else '<td>&ndash;</td>')
        eff = col.efficiency
        if eff:
            tds += [f'<td>{eff["energy_mj"]:.3f}</td>', f'<td>{eff["mean_firing_rate"]:.3f}</td>',
                    f'<td>{eff["params"]:,}</td>', f'<td>{eff["gmacs"]:.2f}</td>']
        else:
            tds.append(f'<td colspan="4" class="note">{html.escape(col.efficiency_note or "")}'
                       f'</td>')
        rows.append(f'<tr>{"".join(tds)}</tr>')
    return f'<table class="summary">{"".join(rows)}</table>'


def _energy_notes(report: ReportSet) -> str:
    parts = []
    for col in report.columns:
        eff = col.efficiency
        if not eff:
            continue
        conv = eff.get('convention') or {}
        size = eff.get('size')
        size = f'{size[0]}&times;{size[1]}' if isinstance(size, (list, tuple)) else '?'
        parts.append(
            f'<details><summary>{html.escape(col.label)}: {eff["energy_mj"]:.3f} mJ per image '
            f'at {size}, mean firing rate {eff["mean_firing_rate"]:.3f}</summary>'
            f'<p>Convention <code>{html.escape(str(conv.get("name")))}</code>: '
            f'{html.escape(str(conv.get("source", "")))}. Firing rates measured on '
            f'{html.escape(str(eff.get("images")))}, weights '
            f'<code>{html.escape(str(eff.get("weights")))}</code>; from '
            f'{html.escape(eff["source"])}.</p>{_rates_svg(eff["neuron_rates"])}</details>')
    return ''.join(parts)


def _command_of(col: Column) -> str:
    """The command that wrote the folder (the manifest's), or one rebuilt from its recipe."""
    man = col.manifest
    if man is None:
        return f'# {col.folder}: no manifest; the command that made it is unknown'
    if man.get('command'):
        return f'{man["command"]}    # in {man.get("cwd", "?")}'
    r = col.recipe
    cmd = f'python test.py --weights {r.get("weights")} --data_path INPUT --save_path {col.folder}'
    if r.get('tile'):
        cmd += f' --tile {r["tile"]} --tile_overlap {r.get("tile_overlap")}'
    if r.get('path') == 'exact path':
        cmd += ' --exact'
    if r.get('precision') == 'bf16':
        cmd += ' --precision bf16'
    return f'{cmd}    # rebuilt from the manifest (it has no command); INPUT not recorded'


def _commands(report: ReportSet, own_command: str) -> str:
    lines = []
    for col in report.columns:
        r = col.recipe
        sha = (r.get('weights_sha256') or '?')[:16]
        lines.append(f'# {col.label}: {r.get("model", "?")}, weights {r.get("weights")} '
                     f'(sha256 {sha}...), {r.get("path", "?")}, {r.get("code_version", "")}')
        lines.append(_command_of(col))
        if col.efficiency:
            lines.append(f'#   energy and firing rates: {col.efficiency["source"]}')
    lines += ['# this page', own_command]
    return f'<pre class="commands">{html.escape(chr(10).join(lines))}</pre>'


STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.2em;color:#222;
 background:#fafafa}
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.1em;margin:.2em 0}
.meta,.note,.axis{color:#666;font-size:.9em}
table.summary{border-collapse:collapse;margin:.6em 0}
table.summary td,table.summary th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
table.summary td:first-child{text-align:left}table.summary tr.input{color:#666}
article{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em;margin:1em 0}
.row{display:flex;flex-wrap:wrap;gap:.8em;align-items:flex-start}
figure{margin:0;width:min(100%,420px)}figcaption{font-size:.9em;margin-top:.2em}
.frame{position:relative;cursor:crosshair;overflow:hidden;background:#000;user-select:none}
.frame img{display:block;width:100%;height:auto}
.frame img.after{position:absolute;left:0;top:0}
.divider{position:absolute;top:0;bottom:0;width:2px;margin-left:-1px;background:#fff;
 box-shadow:0 0 2px #000;pointer-events:none}
.tag{position:absolute;top:4px;padding:0 4px;font-size:11px;color:#fff;background:rgba(0,0,0,.55);
 pointer-events:none}.tag.l{left:4px}.tag.r{right:4px}
.mark{position:absolute;width:14px;height:14px;margin:-8px 0 0 -8px;border:2px solid #ff0;
 border-radius:50%;pointer-events:none;box-shadow:0 0 2px #000}
input.slider{width:100%;margin:.3em 0 0}
.zoom{display:flex;flex-wrap:wrap;gap:.6em;margin-top:.6em;padding-top:.6em;
 border-top:1px dashed #ccc}.zoom[hidden]{display:none}
.lens{width:220px;height:220px;background-color:#000;background-repeat:no-repeat;
 image-rendering:pixelated;border:1px solid #999}
.zoom figure{width:auto}
pre.commands{background:#f0f0f0;padding:.6em;overflow-x:auto;white-space:pre-wrap}
svg.rates rect{fill:#4a78b5}details{margin:.3em 0}
"""

SCRIPT = """
(function () {
  'use strict';
  var P = JSON.parse(document.getElementById('previews').textContent);
  document.querySelectorAll('img[data-p]').forEach(function (im) { im.src = P[im.dataset.p]; });
  document.querySelectorAll('input.slider').forEach(function (s) {
    var fig = s.closest('figure');
    var after = fig.querySelector('img.after'), bar = fig.querySelector('.divider');
    function set() {
      after.style.clipPath = 'inset(0 0 0 ' + s.value + '%)';
      bar.style.left = s.value + '%';
    }
    s.addEventListener('input', set);
    set();
  });
  var zoomSel = document.getElementById('zoom'), last = null;
  function show(art, fx, fy) {
    last = [art, fx, fy];
    var z = +zoomSel.value, W = +art.dataset.w, H = +art.dataset.h;
    var box = art.querySelector('.zoom');
    box.hidden = false;
    box.querySelectorAll('.lens').forEach(function (l) {
      if (!l.dataset.ready) {
        var layers = 'url("' + P[l.dataset.p] + '")';
        if (l.dataset.full) { layers = 'url("' + l.dataset.full + '"), ' + layers; }
        l.style.backgroundImage = layers;
        l.dataset.ready = '1';
      }
      var w = W * z, h = H * z;
      l.style.backgroundSize = w + 'px ' + h + 'px';
      l.style.backgroundPosition = (l.clientWidth / 2 - fx * w) + 'px ' +
        (l.clientHeight / 2 - fy * h) + 'px';
    });
    art.querySelectorAll('.mark').forEach(function (m) {
      m.style.left = (fx * 100) + '%';
      m.style.top = (fy * 100) + '%';
      m.hidden = false;
    });
    box.querySelector('.where').textContent = 'x ' + Math.round(fx * W) + ', y ' +
      Math.round(fy * H) + ' of ' + W + '\\u00d7' + H + ', ' + z + '\\u00d7';
  }
  document.querySelectorAll('.frame').forEach(function (f) {
    f.addEventListener('click', function (e) {
      var r = f.getBoundingClientRect();
      show(f.closest('article'), (e.clientX - r.left) / r.width, (e.clientY - r.top) / r.height);
    });
  });
  zoomSel.addEventListener('change', function () { if (last) { show.apply(null, last); } });
})();
"""


class _Previews:
    """Each image's preview data URI, stored once in the page and referenced by key."""

    def __init__(self, max_side: int, quality: int):
        self.max_side, self.quality = max_side, quality
        self.uris: dict[str, str] = {}
        self.sizes: dict[str, tuple[int, int]] = {}

    def key(self, path: Path) -> str:
        k = str(Path(path).resolve())
        if k not in self.uris:
            self.uris[k], self.sizes[k] = preview_uri(Path(path), self.max_side, self.quality)
        return str(list(self.uris).index(k))

    def json(self) -> str:
        return _json_in_html({str(i): uri for i, uri in enumerate(self.uris.values())})


def _json_in_html(doc) -> str:
    """JSON that can sit inside a <script> element (no ``</`` to close it early)."""
    return json.dumps(doc, allow_nan=False).replace('</', '<\\/')


def _image_block(report: ReportSet, stem: str, previews: _Previews, base: Path) -> str:
    src = report.inputs[stem]
    pin = previews.key(src)
    w, h = previews.sizes[str(src.resolve())]
    head = _scores_text(report, report.input_scores.get(stem))
    figs = []
    for col in report.columns:
        out = col.files[stem]
        pout = previews.key(out)
        ow, oh = previews.sizes[str(out.resolve())]
        if (ow, oh) != (w, h):
            raise ReportInputError(f'{out}: {ow}x{oh}, but its input {src} is {w}x{h}')
        label = html.escape(col.label)
        figs.append(
            f'<figure class="compare"><div class="frame" title="click to zoom every column here">'
            f'<img class="before" data-p="{pin}" alt="rainy input {html.escape(stem)}">'
            f'<img class="after" data-p="{pout}" alt="{label}: {html.escape(stem)}">'
            f'<div class="divider"></div><span class="tag l">rainy</span>'
            f'<span class="tag r">{label}</span><div class="mark" hidden></div></div>'
            f'<input class="slider" type="range" min="0" max="100" value="50" '
            f'aria-label="before/after: {label}, {html.escape(stem)}">'
            f'<figcaption><b>{label}</b> {_scores_text(report, col.scores.get(stem))} '
            f'&middot; <a href="{_href(out, base)}">full image</a></figcaption></figure>')
    lenses = [('rainy input', src, pin)] + [(c.label, c.files[stem], previews.key(c.files[stem]))
                                            for c in report.columns]
    if report.targets is not None:
        tgt = report.targets[stem]
        ptg = previews.key(tgt)
        figs.append(f'<figure><div class="frame" title="click to zoom every column here">'
                    f'<img data-p="{ptg}" alt="target {html.escape(stem)}">'
                    f'<span class="tag l">target</span><div class="mark" hidden></div></div>'
                    f'<figcaption><b>target</b> (clean) &middot; '
                    f'<a href="{_href(tgt, base)}">full image</a></figcaption></figure>')
        lenses.append(('target', tgt, ptg))
    zoom = ''.join(f'<figure><div class="lens" data-p="{p}" data-full="{_href(path, base)}">'
                   f'</div><figcaption>{html.escape(name)}</figcaption></figure>'
                   for name, path, p in lenses)
    return (f'<article id="img-{html.escape(stem)}" data-w="{w}" data-h="{h}">'
            f'<h2>{html.escape(stem)} <span class="meta">{w}&times;{h}; rainy input: '
            f'{head or "unscored"} &middot; <a href="{_href(src, base)}">full image</a>'
            f'</span></h2><div class="row">{"".join(figs)}</div>'
            f'<div class="zoom" hidden><div class="where meta"></div>{zoom}</div></article>')


def render_html(report: ReportSet, out_path: str | os.PathLike, own_command: str,
                title: str = 'Deraining report', preview: int = 1024, quality: int = 85) -> str:
    """The whole page as a string; links are relative to ``out_path``'s folder."""
    base = Path(out_path).resolve().parent
    previews = _Previews(preview, quality)
    blocks = ''.join(_image_block(report, s, previews, base) for s in report.stems)
    if report.targets is not None:
        scored = (f'PSNR and SSIM on the Y channel against <code>'
                  f'{html.escape(str(report.target_dir))}</code> (the published protocol; '
                  f'higher is better)')
    elif report.metrics:
        scored = ('no-reference scores (no targets; lower is better; they track people\'s '
                  'judgement only weakly)')
    else:
        scored = 'no scores (no targets, and no no-reference metric)'
    notes = ''.join(f'<p class="note">{html.escape(n)}</p>' for n in report.notes)
    when = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body><h1>{html.escape(title)}</h1>
<p class="meta">{len(report.stems)} images from <code>{html.escape(str(report.input_dir))}</code>,
{len(report.columns)} model(s); {scored}. Written {when}.</p>{notes}
<h2>Means</h2>{_summary(report)}{_energy_notes(report)}
<p class="meta">Drag a slider to move between the rainy input (left) and the restoration
(right). Click any image to zoom every column on the same spot, at
<select id="zoom" aria-label="zoom factor"><option value="2">2&times;</option>
<option value="4" selected>4&times;</option><option value="8">8&times;</option></select>
(full images where their links work, else the previews).</p>
<noscript><p class="note">The sliders, zoom and images need JavaScript (inline, nothing is
downloaded).</p></noscript>
{blocks}
<h2>Commands</h2>{_commands(report, own_command)}
<script type="application/json" id="scores">{_json_in_html(scores_json(report))}</script>
<script type="application/json" id="previews">{previews.json()}</script>
<script>{SCRIPT}</script>
</body></html>
"""


def write_report(path: str | os.PathLike, page: str) -> Path:
    """Write the page atomically (a half-written report is never left behind)."""
    return write_text_atomic(path, page)
