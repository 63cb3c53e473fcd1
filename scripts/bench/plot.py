"""The connection sweep's figure: from the sweep's rows (report.sweep_rows), a PNG with the
throughput ratio of Axoneme to HAProxy and each proxy's memory per connection against the
connection count, on a logarithmic axis.

It draws and writes the one file it is given, nothing else. matplotlib lives in the repository's
.venv (tests/bench/requirements.txt pins it), not in the Python that runs the benchmark: the
benchmark runs this module with .venv's Python, `python -m bench.plot RESULTS_JSON PNG`, which
reads the sweep's rows from results.json."""

import json
import sys
from pathlib import Path

from . import report

# The figure's size in inches and its resolution: the PNG is WIDTH_INCHES * DPI by
# HEIGHT_INCHES * DPI pixels.
WIDTH_INCHES = 11
HEIGHT_INCHES = 4.5
DPI = 100


def memory_scale(rows: list, proxies: list) -> str:
    """The scale of the memory axis. A few connections share the growth of buffers and threads
    that many spread thin: a logarithmic axis shows both ends, where every figure drawn (the
    proxies', not the server's) is above zero."""
    drawn = [row[report.MEMORY].get(proxy) for row in rows for proxy in proxies]
    return "log" if all(value > 0 for value in drawn if value is not None) else "linear"


def draw(rows: list, path: Path) -> None:
    """Writes the figure of `rows` (one a connection count, as results.json's
    `sweep.connection_sweep` has them) to `path` as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.ticker import FuncFormatter, NullFormatter

    counts = [row["connections"] for row in rows]
    ratio = f"{report.SWEEP_SUBJECT}/{report.SWEEP_OTHER}"
    figure, (throughput, memory) = pyplot.subplots(1, 2, figsize=(WIDTH_INCHES, HEIGHT_INCHES),
                                                   dpi=DPI)
    with_ratio = [(count, row["ops_per_sec_ratio"]) for count, row in zip(counts, rows)
                  if row["ops_per_sec_ratio"] is not None]
    throughput.plot([count for count, _ in with_ratio], [value for _, value in with_ratio],
                    marker="o", label=f"{ratio} ops/s")
    throughput.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    throughput.set_title(f"Throughput, {ratio}")
    throughput.set_ylabel("ops/s ratio (above 1: Axoneme faster)")
    proxies = list(dict.fromkeys(target for row in rows for target in row[report.MEMORY]
                                 if target != "direct"))
    for proxy in proxies:
        measured = [(count, row[report.MEMORY].get(proxy)) for count, row in zip(counts, rows)
                    if row[report.MEMORY].get(proxy) is not None]
        memory.plot([count for count, _ in measured], [value for _, value in measured],
                    marker="o", label=proxy)
    memory.set_title("Resident memory per connection")
    memory.set_ylabel("KiB per connection")
    memory.set_yscale(memory_scale(rows, proxies))
    memory.legend()
    for axes in (throughput, memory):
        axes.set_xscale("log")
        axes.set_xticks(counts)
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_xlabel("concurrent connections (request/response, 64 B)")
        axes.grid(True, which="major", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=DPI)
    pyplot.close(figure)


def main(argv: list) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.plot RESULTS_JSON PNG", file=sys.stderr)
        return 2
    results = json.loads(Path(argv[0]).read_text())
    rows = results.get("sweep", {}).get("connection_sweep")
    if not rows:
        print(f"{argv[0]} has no connection sweep (sweep.connection_sweep)", file=sys.stderr)
        return 1
    draw(rows, Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
