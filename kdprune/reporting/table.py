"""The teacher-vs-compressed table printed at the end of a run."""

from __future__ import annotations

from typing import Any


def _num(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def comparison_table(m: dict[str, Any]) -> str:
    """A short plain-text table: dense vs compressed accuracy, params, MACs, latency, size."""
    rows = [
        ("", "dense", "compressed", "change"),
        (
            "test accuracy",
            f"{m['teacher_test_acc']:.4f}",
            f"{m['test_acc']:.4f}",
            f"{100 * (m['test_acc'] - m['teacher_test_acc']):+.2f} pts",
        ),
        (
            "parameters",
            _num(m["params_before"]),
            _num(m["params_after"]),
            f"-{100 * m['params_removed_fraction']:.1f}%",
        ),
        ("nonzero weights", "", f"{100 * m['nonzero_fraction']:.1f}%", ""),
        ("MACs", _num(m["macs_before"]), _num(m["macs_after"]), f"{m['macs_speedup']:.2f}x fewer"),
    ]
    for b in (1, 64):
        before, after = m.get(f"cpu_latency_ms_bs{b}_before"), m.get(f"cpu_latency_ms_bs{b}_after")
        if before is not None and after is not None:
            rows.append(
                (
                    f"CPU latency bs={b}",
                    f"{before:.2f} ms",
                    f"{after:.2f} ms",
                    f"{before / after:.2f}x faster",
                )
            )
    rows.append(
        ("file size", _num(m["dense_file_size_bytes"]) + "B", _num(m["file_size_bytes"]) + "B", "")
    )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    title = (
        f"{m['order']} | {m['method']} {m['target_ratio']} {m['unit']} | kd={m['kd']} | "
        f"{m['model']} on {m['dataset']} (teacher: {m['teacher_source']})"
    )
    return "\n".join([title, lines[0], "-" * len(lines[0]), *lines[1:]])
