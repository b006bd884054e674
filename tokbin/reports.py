"""What binarize reports beside the bins: metrics.json, and per split a document-length
histogram as data (<split>.csv) and as a chart (<split>.svg).

Every split's histogram uses one bucket width, so the charts compare at a glance, and each
chart's x axis ends where its split's longest document does. The charts are SVG drawn here,
not Vega specs: `dvc plots show` puts an image in its page as it is, so the page needs no
script from a CDN and shows them offline; an SVG is also a few KB of text, the same bytes for
the same data.
"""
from __future__ import annotations

import itertools
import json
from html import escape
from pathlib import Path
from typing import Iterator

import numpy as np

from tokbin.format import DOCLENS_DTYPE, Meta, doclens_file, read_chunks
from tokbin.fsio import write_text_atomic

MOST_BUCKETS = 50  # in the histogram of the split with the longest document
WIDTH, HEIGHT = 720, 400  # the chart, in CSS pixels
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 50  # the margins around the plotting area


def write_reports(meta: Meta, tokens_dir: Path, metrics_path: Path, histograms_dir: Path,
                  charts_dir: Path) -> None:
    """metrics.json (per split: tokens, documents, bytes), and per split its document-length
    histogram: histograms_dir/<split>.csv (bucket start in tokens, documents) and the chart
    charts_dir/<split>.svg."""
    metrics = {split: {"tokens": s.tokens, "documents": s.documents, "bytes": s.bytes}
               for split, s in meta.splits.items()}
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(metrics_path, json.dumps(metrics, indent=2) + "\n")
    doclens = {split: tokens_dir / doclens_file(split) for split in meta.splits}
    longest = {split: max(int(c.max()) for c in read_chunks(path, DOCLENS_DTYPE))
               for split, path in doclens.items()}
    width = bucket_width(max(longest.values()))
    for folder in (histograms_dir, charts_dir):
        folder.mkdir(parents=True, exist_ok=True)
    for split, path in doclens.items():
        counts = np.zeros(longest[split] // width + 1, np.int64)
        for lengths in read_chunks(path, DOCLENS_DTYPE):
            counts += np.bincount(lengths // width, minlength=len(counts))
        rows = "".join(f"{i * width},{n}\n" for i, n in enumerate(counts.tolist()))
        write_text_atomic(histograms_dir / f"{split}.csv", "tokens,documents\n" + rows)
        write_text_atomic(charts_dir / f"{split}.svg",
                          histogram_svg(split, counts.tolist(), width, longest[split]))


def one_two_five() -> Iterator[int]:
    """1, 2, 5, 10, 20, 50, ...: the bucket widths and tick steps a reader counts in."""
    value = 1
    for factor in itertools.cycle((2, 2.5, 2)):
        yield value
        value = int(value * factor)


def bucket_width(longest: int) -> int:
    """The smallest width of one_two_five() that fits `longest` in MOST_BUCKETS buckets."""
    return next(width for width in one_two_five() if longest // width < MOST_BUCKETS)


def tick_step(top: int, ticks: int = 6) -> int:
    """The smallest step of one_two_five() giving at most `ticks` steps up to `top`."""
    return next(step for step in one_two_five() if top / step <= ticks)


def histogram_svg(split: str, counts: list[int], width: int, longest: int) -> str:
    """A bar chart of `counts` (documents per bucket of `width` tokens), titled with its split."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    x_end = len(counts) * width
    x_step = tick_step(x_end)
    y_step = tick_step(max(counts))
    y_top = max(y_step, -(-max(counts) // y_step) * y_step)

    def x(tokens: float) -> float:
        return LEFT + plot_w * tokens / x_end

    def y(documents: float) -> float:
        return TOP + plot_h * (1 - documents / y_top)

    title = (f"{split}: document length distribution ({sum(counts):,} documents, longest "
             f"{longest:,} tokens)")
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
             f"<title>{escape(title)}</title>",
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
             f'<text x="{WIDTH / 2:g}" y="22" text-anchor="middle" font-size="15" '
             f'font-weight="bold">{escape(title)}</text>']
    for value in range(0, y_top + 1, y_step):
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(value):.1f}" '
                     f'y2="{y(value):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">'
                     f"{value:,}</text>")
    for index, count in enumerate(counts):
        if count:
            parts.append(f'<rect x="{x(index * width):.1f}" y="{y(count):.1f}" '
                         f'width="{max(x((index + 1) * width) - x(index * width) - 1, 1):.1f}" '
                         f'height="{y(0) - y(count):.1f}" fill="#4c78a8"/>')
    for value in range(0, x_end + 1, x_step):
        parts.append(f'<line x1="{x(value):.1f}" x2="{x(value):.1f}" y1="{y(0):.1f}" '
                     f'y2="{y(0) + 5:.1f}" stroke="black"/>')
        parts.append(f'<text x="{x(value):.1f}" y="{y(0) + 18:.1f}" text-anchor="middle">'
                     f"{value:,}</text>")
    parts += [f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(0):.1f}" y2="{y(0):.1f}" '
              'stroke="black"/>',
              f'<text x="{LEFT + plot_w / 2:g}" y="{HEIGHT - 10}" text-anchor="middle">'
              f"document length in tokens (buckets of {width:,})</text>",
              f'<text transform="translate(16 {TOP + plot_h / 2:g}) rotate(-90)" '
              'text-anchor="middle">documents</text>',
              "</svg>"]
    return "\n".join(parts) + "\n"
