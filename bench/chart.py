"""Draw benchmark result lines as an SVG bar chart: for each figure, our value and the baseline side
by side, with the ratio and whether it met its goal.

    python -m bench.members_list | python -m bench.chart "Member list at 1 M members" > docs/img/members_list.svg
"""

from __future__ import annotations

import json
import sys
from html import escape


def svg(title: str, rows: list[dict]) -> str:
    bar_h, gap, left, width = 14, 14, 260, 420
    top = 48
    height = top + len(rows) * (2 * bar_h + gap) + 40
    peak = max(max(r["value"], r["baseline_value"]) for r in rows) or 1.0
    unit = rows[0]["unit"] if rows else ""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 150}" height="{height}" '
           'font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="#fff"/>',
           f'<text x="12" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
           f'<rect x="{left}" y="30" width="12" height="10" fill="#0f766e"/><text x="{left + 16}" y="39">Shequn</text>',
           f'<rect x="{left + 80}" y="30" width="12" height="10" fill="#94a3b8"/>'
           f'<text x="{left + 96}" y="39">{escape(rows[0]["baseline"] if rows else "baseline")}</text>']
    y = top
    for r in rows:
        name = r["bench"].split(".", 1)[1] if "." in r["bench"] else r["bench"]
        out.append(f'<text x="12" y="{y + bar_h + 4}">{escape(name)}</text>')
        for value, colour, dy in ((r["value"], "#0f766e", 0), (r["baseline_value"], "#94a3b8", bar_h)):
            w = max(1.0, width * value / peak)
            out.append(f'<rect x="{left}" y="{y + dy}" width="{w:.1f}" height="{bar_h - 2}" fill="{colour}"/>')
            out.append(f'<text x="{left + w + 4:.1f}" y="{y + dy + bar_h - 4}">{value:,.2f} {escape(unit)}</text>')
        mark = "✓" if r["ok"] else "✗"
        out.append(f'<text x="{left + width + 90}" y="{y + bar_h + 4}" fill="{"#15803d" if r["ok"] else "#b91c1c"}">'
                   f'{r["ratio"]:.2f} {mark}</text>')
        y += 2 * bar_h + gap
    out.append(f'<text x="12" y="{height - 12}" fill="#555">ratio (goal {escape(rows[0]["goal"] if rows else "")}) '
               'on the right</text>')
    out.append("</svg>")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    title = argv[0] if argv else "Benchmark"
    rows = [json.loads(line) for line in sys.stdin if line.startswith("{")]
    if not rows:
        print("no result lines on stdin", file=sys.stderr)
        return 2
    sys.stdout.write(svg(title, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
