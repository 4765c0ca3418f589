"""Summarise an Nsight Systems GPU trace of decode steps (graph nodes traced
one by one): the real duration of each kernel inside the replayed graphs,
and the idle gaps between consecutive kernels, per layer of a token.

usage: nsys-summary.py TRACE.csv   (nsys stats -r cuda_gpu_trace -f csv)
The second half of the trace is used (decode in steady state); "a layer"
is the time divided by the launches of the one-row attention kernel.
"""
import csv
import sys
from collections import defaultdict

rows = []
with open(sys.argv[1]) as f:
    lines = [l for l in f if l.count(",") > 3]
for r in csv.DictReader(lines):
    name = r.get("Name") or r.get("name") or ""
    try:
        start = float(r.get("Start (ns)") or r.get("Start"))
        dur = float(r.get("Duration (ns)") or r.get("Duration"))
    except (TypeError, ValueError):
        continue
    if "memcpy" in name.lower() or "memset" in name.lower():
        continue
    rows.append((start, dur, name.split("(")[0].strip()))
rows.sort()
rows = rows[len(rows) // 2:]
if not rows:
    sys.exit("no kernels in the trace")
layers = sum(1 for _, _, n in rows if n.startswith("attn_rows_rope")) or 1
per = defaultdict(lambda: [0, 0.0])
gaps = defaultdict(float)  # idle time before each kernel, by its name
for i, (s, d, n) in enumerate(rows):
    per[n][0] += 1
    per[n][1] += d
    if i:
        ps, pd, _ = rows[i - 1]
        gaps[n] += max(0.0, s - (ps + pd))
span = rows[-1][0] + rows[-1][1] - rows[0][0]
busy = sum(d for _, d, _ in rows)
print("%d kernels over %.1f ms, %d one-row attention launches (layers); per layer: %.2f us wall, %.2f us in kernels, %.2f us idle"
      % (len(rows), span / 1e6, layers, span / layers / 1e3, busy / layers / 1e3, (span - busy) / layers / 1e3))
print("%-36s %8s %10s %10s %12s" % ("kernel", "per layer", "us each", "us/layer", "gap before/layer"))
for n, (c, t) in sorted(per.items(), key=lambda kv: -kv[1][1]):
    print("%-36s %8.2f %10.2f %10.2f %12.2f" % (n[:36], c / layers, t / c / 1e3, t / layers / 1e3, gaps[n] / layers / 1e3))
