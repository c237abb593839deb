"""The human-readable part of a ``discodiff eval`` report folder: ``report.md`` and ``plots/*.png``.

:func:`write_report` turns the record of :func:`~.protocol.run_evaluation` (``metrics.json``) into

- ``report.md``: the evaluation set, seeds, embedders and versions, the models, then one table per measure with the
  models as rows (and the real accompaniments as the ``reference`` row where they have a value), intervals in
  brackets, and a measure that could not be computed shown as ``—`` with its reason;
- ``plots/<measure>.png``: one bar per model (and reference) with its interval as a whisker: ``kad_<embedder>``,
  ``fad_<embedder>`` and ``fad_infinity_<embedder>`` where there are values, ``clap_score``,
  ``vocal_fit_<measure>`` (the mean matched − mismatched difference), ``rtf``; and ``quality_vs_speed.png``: KAD
  of the first embedder (or, without a reference, the CLAP score) against the mean real-time factor.

The charts are drawn with pillow (a dependency of the package; matplotlib is not), so they are the same bytes for
the same numbers. Every file is written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

from discodiff.outputs import atomic_file

WIDTH, HEIGHT = 760, 440
LEFT, RIGHT, TOP, BOTTOM = 90, 24, 56, 96
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
REFERENCE_COLOUR = (90, 90, 90)
VOCAL_FIT_TITLES = {"harmonic": "harmonic agreement", "consonance": "harmonic consonance",
                    "rhythmic": "rhythmic agreement"}


# --- numbers ----------------------------------------------------------------------------------------------------


def _number(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def _interval(low, high) -> str:
    return "—" if low is None or high is None else f"[{_number(low)}, {_number(high)}]"


def _reason(metric: dict) -> str:
    return metric.get("reason", "").replace("|", "/")


# --- report.md --------------------------------------------------------------------------------------------------


def _set_lines(record: dict) -> list[str]:
    s = record["evaluation_set"]
    if s["kind"] == "tracks":
        what = (f"{s['n']} tracks of the Bach {s['split']} split under `{s['data']}`, {_number(s['seconds'])} s "
                f"excerpts ({s['excerpt']}), each accompanying its vocal excerpt prompted by its first caption; the real "
                "accompaniment excerpts are the reference")
    else:
        what = (f"{s['n']} prompts from `{s['prompts']}`, {_number(s['duration'])} s each, text only (no reference "
                "set: no distances, no vocal fit)")
    settings = record["settings"]
    lines = [f"- Evaluation set: {what}.",
             f"- Items: {', '.join(item['id'] for item in s['items'][:8])}{' …' if s['n'] > 8 else ''}.",
             f"- Seeds: item i is generated with seed {settings['seed']} + i; batches of {settings['batch_size']}; "
             f"device {settings['device']}.",
             f"- Intervals: {int(100 * settings['confidence'])} % percentile bootstrap over clips, "
             f"{settings['bootstrap']} replicates (FAD∞: {settings['fad_infinity_bootstrap']}), seed "
             f"{settings['bootstrap_seed']}. KAD: {settings['kad']}. Mismatched vocal: {settings['mismatched_vocal']}."]
    for name, embedder in record["embedders"].items():
        detail = ", ".join(f"{key} {embedder[key]}" for key in ("dim", "sample_rate", "window_seconds", "capacity",
                                                                "frame_pooling", "source") if embedder.get(key) is not None)
        lines.append(f"- Embedder `{name}`: {detail}.")
    lines.append("- Versions: " + ", ".join(f"{name} {version}" for name, version in record["versions"].items()) + ".")
    return lines


def _scalar_table(title: str, rows: list[tuple[str, dict]]) -> list[str]:
    lines = [f"## {title}", "", "| model | value | 95 % interval | n | note |", "|---|---|---|---|---|"]
    for name, metric in rows:
        n = metric.get("n", metric.get("n_generated"))
        lines.append(f"| {name} | {_number(metric.get('value'))} | {_interval(metric.get('ci_low'), metric.get('ci_high'))}"
                     f" | {_number(n)} | {_reason(metric)} |")
    return lines + [""]


def _vocal_fit_table(record: dict) -> list[str]:
    rows = [("reference", record["reference"]["vocal_fit"])]
    rows += [(name, model["vocal_fit"]) for name, model in record["models"].items()]
    lines = ["## Vocal fit", "", "Each accompaniment scored with its own vocal (matched) and with the next item's "
             "(mismatched); difference = matched − mismatched. Chance: harmonic ≈ 1/12, consonance ≈ 7/12, rhythmic ≈ 0.",
             ""]
    for measure, title in VOCAL_FIT_TITLES.items():
        lines += [f"### {title}", "", "| row | matched | mismatched | difference (mean ± std) | 95 % interval | "
                  "matched > mismatched | n | note |", "|---|---|---|---|---|---|---|---|"]
        for name, fit in rows:
            if fit.get("value", True) is None:
                lines.append(f"| {name} | — | — | — | — | — | — | {_reason(fit)} |")
                continue
            c = fit[measure]
            failed = f"{len(fit['failed'])} item(s) not scored" if fit["failed"] else ""
            lines.append(f"| {name} | {_number(c['matched_mean'])} | {_number(c['mismatched_mean'])} | "
                         f"{c['difference_mean']:+.4f} ± {c['difference_std']:.4f} | "
                         f"{_interval(c['difference_ci_low'], c['difference_ci_high'])} | "
                         f"{100 * c['share_matched_higher']:.0f} % | {c['n']} | {failed} |")
        lines.append("")
    return lines


def _speed_table(record: dict) -> list[str]:
    lines = ["## Speed", "", "| model | family | s per item | mean RTF | 95 % interval | peak added MiB | seconds per part |",
             "|---|---|---|---|---|---|---|"]
    for name, model in record["models"].items():
        s = model["speed"]
        parts = ", ".join(f"{part} {seconds:.3g}" for part, seconds in s["parts_s"].items())
        lines.append(f"| {name} | {model['family']} | {_number(s['mean_wall_s_per_item'])} | {_number(s['mean_rtf'])} | "
                     f"{_interval(s['rtf_ci_low'], s['rtf_ci_high'])} | {_number(s['max_peak_added_mib'])} | {parts} |")
    return lines + ["", "RTF: seconds of audio per wall-clock second (above 1: faster than real time); a batch's time "
                    "is shared by its items.", ""]


def report_markdown(record: dict, plots: list[Path]) -> str:
    """The text of ``report.md`` for ``record``, linking ``plots`` (paths relative to the report folder)."""
    lines = ["# Evaluation report", "", *_set_lines(record), "", "## Models", "",
             "| model | family | directory | pipeline.json sha256 | options |", "|---|---|---|---|---|"]
    for name, model in record["models"].items():
        options = ", ".join(f"{key}={value}" for key, value in model["options"].items()) or "the model's defaults"
        lines.append(f"| {name} | {model['family']} | `{model['directory']}` | `{model['pipeline_json_sha256'][:16]}…` | "
                     f"{options} |")
    lines.append("")
    models = record["models"]
    for embedder in record["embedders"]:
        for key, title in (("kad", "KAD"), ("fad", "FAD"), ("fad_infinity", "FAD∞")):
            lines += _scalar_table(f"{title} ({embedder})", [(name, model[key][embedder]) for name, model in models.items()])
    clap_rows = [(name, model["clap_score"]) for name, model in models.items()]
    if record["reference"].get("clap_score", {}).get("value") is not None:
        clap_rows.insert(0, ("reference", record["reference"]["clap_score"]))
    lines += _scalar_table("CLAP score (cosine of clip and caption)", clap_rows)
    lines += _vocal_fit_table(record)
    lines += _speed_table(record)
    if plots:
        lines += ["## Plots", "", *[f"![{path.stem}]({path.as_posix()})" for path in plots], ""]
    return "\n".join(lines)


# --- charts -----------------------------------------------------------------------------------------------------


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``[low, high]``."""
    span = high - low
    raw = span / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _range(values: list[float], include_zero: bool) -> tuple[float, float]:
    low, high = min(values), max(values)
    if include_zero:
        low, high = min(low, 0.0), max(high, 0.0)
    if high - low < 1e-12:
        pad = abs(high) * 0.1 or 1.0
        low, high = low - pad, high + pad
    pad = 0.06 * (high - low)
    return low - (pad if low < 0 or not include_zero else 0.0), high + pad


def _canvas(title: str):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    draw.text((LEFT, 16), title, fill="black", font=_font(16))
    return image, draw


def _y_axis(draw, low: float, high: float, label: str):
    font = _font(12)
    ticks = [t for t in _ticks(low, high) if low <= t <= high]

    def y(value: float) -> float:
        return TOP + (high - value) / (high - low) * (HEIGHT - TOP - BOTTOM)

    for tick in ticks:
        draw.line([(LEFT - 4, y(tick)), (WIDTH - RIGHT, y(tick))], fill=(225, 225, 225))
        draw.text((LEFT - 8, y(tick)), f"{tick:.3g}", fill="black", font=font, anchor="rm")
    draw.line([(LEFT, TOP), (LEFT, HEIGHT - BOTTOM)], fill="black")
    draw.text((12, TOP - 20), label, fill="black", font=font)
    return y


def _save(image, path: Path) -> Path:
    with atomic_file(path) as temporary:
        image.save(temporary, format="PNG")
    return path


def bar_chart(path: Path, title: str, ylabel: str, bars: list[tuple[str, float, float | None, float | None]],
              reference_first: bool = False) -> Path:
    """A PNG of one bar per ``(label, value, low, high)`` with a whisker from ``low`` to ``high`` (when given)."""
    values = [v for _, value, low, high in bars for v in (value, low, high) if v is not None]
    low, high = _range(values, include_zero=True)
    image, draw = _canvas(title)
    y = _y_axis(draw, low, high, ylabel)
    font = _font(12)
    slot = (WIDTH - LEFT - RIGHT) / len(bars)
    width = min(80.0, slot * 0.6)
    draw.line([(LEFT, y(0.0)), (WIDTH - RIGHT, y(0.0))], fill="black")
    for index, (label, value, lo, hi) in enumerate(bars):
        centre = LEFT + slot * (index + 0.5)
        colour = REFERENCE_COLOUR if reference_first and index == 0 else COLOURS[index % len(COLOURS)]
        top, bottom = sorted((y(value), y(0.0)))
        draw.rectangle([centre - width / 2, top, centre + width / 2, max(bottom, top + 1)], fill=colour)
        if lo is not None and hi is not None:
            draw.line([(centre, y(lo)), (centre, y(hi))], fill="black", width=2)
            for end in (lo, hi):
                draw.line([(centre - width / 5, y(end)), (centre + width / 5, y(end))], fill="black", width=2)
        draw.text((centre, min(y(value), y(hi) if hi is not None else y(value)) - 4), f"{value:.3g}", fill="black",
                  font=font, anchor="md")
        name = label if len(label) <= 18 else label[:17] + "…"
        draw.text((centre, HEIGHT - BOTTOM + 10), name, fill="black", font=font, anchor="ma")
    return _save(image, path)


def scatter_chart(path: Path, title: str, xlabel: str, ylabel: str,
                  points: list[tuple[str, float, float, float | None, float | None]]) -> Path:
    """A PNG of labelled points ``(label, x, y, y low, y high)``, with vertical whiskers where the interval is given."""
    ys = [v for _, _, value, low, high in points for v in (value, low, high) if v is not None]
    xs = [x for _, x, *_ in points]
    ylow, yhigh = _range(ys, include_zero=False)
    xlow, xhigh = _range(xs, include_zero=True)
    image, draw = _canvas(title)
    y = _y_axis(draw, ylow, yhigh, ylabel)
    font = _font(12)

    def x(value: float) -> float:
        return LEFT + (value - xlow) / (xhigh - xlow) * (WIDTH - LEFT - RIGHT)

    draw.line([(LEFT, HEIGHT - BOTTOM), (WIDTH - RIGHT, HEIGHT - BOTTOM)], fill="black")
    for tick in (t for t in _ticks(xlow, xhigh) if xlow <= t <= xhigh):
        draw.line([(x(tick), HEIGHT - BOTTOM), (x(tick), HEIGHT - BOTTOM + 4)], fill="black")
        draw.text((x(tick), HEIGHT - BOTTOM + 8), f"{tick:.3g}", fill="black", font=font, anchor="ma")
    draw.text(((LEFT + WIDTH - RIGHT) / 2, HEIGHT - BOTTOM + 34), xlabel, fill="black", font=font, anchor="ma")
    for index, (label, px, py, low, high) in enumerate(points):
        colour = COLOURS[index % len(COLOURS)]
        if low is not None and high is not None:
            draw.line([(x(px), y(low)), (x(px), y(high))], fill=colour, width=2)
        draw.ellipse([x(px) - 5, y(py) - 5, x(px) + 5, y(py) + 5], fill=colour)
        draw.text((x(px) + 8, y(py) - 8), label, fill="black", font=font)
    return _save(image, path)


def _bars(rows: list[tuple[str, dict]], value: str = "value", low: str = "ci_low", high: str = "ci_high"):
    return [(name, metric[value], metric.get(low), metric.get(high)) for name, metric in rows
            if metric.get(value) is not None]


def write_plots(out: Path, record: dict) -> list[Path]:
    """The charts of ``record`` under ``out/plots`` (see the module docstring); returns their paths."""
    folder = Path(out) / "plots"
    models = record["models"]
    written = []
    for embedder in record["embedders"]:
        for key, title in (("kad", "KAD"), ("fad", "FAD"), ("fad_infinity", "FAD-infinity")):
            bars = _bars([(name, model[key][embedder]) for name, model in models.items()])
            if bars:
                written.append(bar_chart(folder / f"{key}_{embedder}.png", f"{title} to the reference ({embedder}; "
                                         "lower is closer), 95 % interval", title, bars))
    clap = [(name, model["clap_score"]) for name, model in models.items()]
    has_reference_clap = record["reference"].get("clap_score", {}).get("value") is not None
    if has_reference_clap:
        clap.insert(0, ("reference", record["reference"]["clap_score"]))
    bars = _bars(clap)
    if bars:
        written.append(bar_chart(folder / "clap_score.png", "CLAP score (clip vs caption), 95 % interval", "cosine",
                                 bars, reference_first=has_reference_clap))
    fit_rows = [("reference", record["reference"]["vocal_fit"])] + [(n, m["vocal_fit"]) for n, m in models.items()]
    fit_rows = [(name, fit) for name, fit in fit_rows if fit.get("value", True) is not None]
    if fit_rows:
        for measure, title in VOCAL_FIT_TITLES.items():
            bars = _bars([(name, fit[measure]) for name, fit in fit_rows], "difference_mean", "difference_ci_low",
                         "difference_ci_high")
            written.append(bar_chart(folder / f"vocal_fit_{measure}.png", f"{title}: matched - mismatched vocal, "
                                     "95 % interval", "difference", bars, reference_first=fit_rows[0][0] == "reference"))
    speed = [(name, model["speed"]) for name, model in models.items()]
    written.append(bar_chart(folder / "rtf.png", "real-time factor (audio s per wall s; higher is faster), 95 % interval",
                             "RTF", _bars(speed, "mean_rtf", "rtf_ci_low", "rtf_ci_high")))
    first = next(iter(record["embedders"]), None)
    points = []
    for name, model in models.items():
        quality = model["kad"][first] if first is not None else {"value": None}
        if quality.get("value") is not None:
            label, metric = f"KAD ({first}; lower is closer)", quality
        elif model["clap_score"].get("value") is not None:
            label, metric = "CLAP score (higher fits the caption)", model["clap_score"]
        else:
            continue
        points.append((label, name, model["speed"]["mean_rtf"], metric["value"], metric.get("ci_low"),
                       metric.get("ci_high")))
    if points and len({label for label, *_ in points}) == 1:
        written.append(scatter_chart(folder / "quality_vs_speed.png", "quality against speed",
                                     "mean real-time factor (higher is faster)", points[0][0],
                                     [point[1:] for point in points]))
    for stale in folder.glob("*.png"):  # a chart of an earlier run whose measure has no value now
        if stale not in written:
            stale.unlink()
    return written


def write_report(out: str | Path, record: dict) -> list[Path]:
    """``report.md`` and the plots of ``record`` in ``out``; returns the paths written."""
    out = Path(out)
    plots = write_plots(out, record)
    path = out / "report.md"
    with atomic_file(path) as temporary:
        temporary.write_text(report_markdown(record, [p.relative_to(out) for p in plots]), encoding="utf-8")
    return [path, *plots]
