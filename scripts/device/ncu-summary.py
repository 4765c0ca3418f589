"""Summarise an Nsight Compute CSV (--csv --page raw) of decode tokens: the
kernels of whole tokens (from after the first argmax to the last), grouped
by name, with time and DRAM bytes per token.

usage: ncu-summary.py NCU.csv
"""
import csv
import re
import sys
from collections import OrderedDict

rows = []
with open(sys.argv[1]) as fh:
    lines = [l for l in fh if l.startswith('"')]
rd = csv.DictReader(lines)
for r in rd:
    name = r.get("Kernel Name") or r.get("Function Name") or "?"
    try:
        t = float(r["gpu__time_duration.sum"].replace(",", ""))
    except (KeyError, ValueError):
        continue  # the units row
    rb = float(r.get("dram__bytes_read.sum", "0").replace(",", "") or 0)
    wb = float(r.get("dram__bytes_write.sum", "0").replace(",", "") or 0)
    rows.append((re.sub(r"\(.*", "", name), t, rb, wb))
if not rows:
    print("no kernels in the CSV")
    sys.exit(0)
# units: the second line of the CSV names them (ns / usecond, byte / Kbyte / Mbyte)
units = next(csv.reader([lines[1]])) if len(lines) > 1 else []
hdr = next(csv.reader([lines[0]]))
unit = dict(zip(hdr, units))
tscale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3}.get(unit.get("gpu__time_duration.sum", "nsecond"), 1e-3)
bscale = {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9}
rsc = bscale.get(unit.get("dram__bytes_read.sum", "byte"), 1)
wsc = bscale.get(unit.get("dram__bytes_write.sum", "byte"), 1)

ends = [i for i, r in enumerate(rows) if r[0].startswith("argmax")]
if len(ends) < 2:
    print("fewer than two argmax kernels: %d kernels, no whole token" % len(rows))
    sys.exit(0)
tok = rows[ends[0] + 1: ends[-1] + 1]
ntok = len(ends) - 1
agg = OrderedDict()
for name, t, rb, wb in tok:
    a = agg.setdefault(name, [0, 0.0, 0.0, 0.0])
    a[0] += 1
    a[1] += t * tscale
    a[2] += rb * rsc
    a[3] += wb * wsc
tot_t = sum(a[1] for a in agg.values()) / ntok
tot_b = sum(a[2] for a in agg.values()) / ntok
print("%d whole tokens, %d kernels a token, kernel time %.1f us a token (%.0f tok/s if back to back), DRAM read %.1f MB a token (%.0f GB/s over kernel time)" % (
    ntok, len(tok) // ntok, tot_t, 1e6 / tot_t, tot_b / 1e6, tot_b / tot_t / 1e3))
for name, (n, t, rb, wb) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    print("  %-44s %4d/token %8.1f us/token %6.2f us each %7.2f MB/token %6.0f GB/s" % (
        name[:44], n // ntok, t / ntok, t / n, rb / ntok / 1e6, rb / t / 1e3 if t else 0))
