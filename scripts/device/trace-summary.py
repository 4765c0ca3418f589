"""Summarise a `pipeline bench --trace` run: the tracks and how much device
compute ran while weight copies were in flight (the uploader's overlap).

usage: trace-summary.py BENCH.json TRACE.json
"""
import json
import sys

rep = json.load(open(sys.argv[1]))["trace"]
print("trace: %d events, %d dropped" % (rep["events"], rep["dropped"]))
for t in rep["tracks"]:
    if t["events"]:
        print("  %-10s %-24s %5d events" % (t["process"], t["thread"], t["events"]))

ev = json.load(open(sys.argv[2]))
ev = ev["traceEvents"] if isinstance(ev, dict) else ev
names = {}
for e in ev:
    if e.get("ph") == "M" and e.get("name") == "thread_name":
        names[(e["pid"], e["tid"])] = e["args"]["name"]


def spans(thread):
    return [(e["ts"], e["ts"] + e["dur"]) for e in ev
            if e.get("ph") == "X" and names.get((e["pid"], e["tid"])) == thread]


copies, steps = spans("copy stream (HtoD)"), spans("compute stream")
overlap = sum(max(0, min(a1, b1) - max(a0, b0)) for a0, a1 in copies for b0, b1 in steps)
print("copies: %d spans, %.1f ms; GPU layer steps: %d spans, %.1f ms; steps running during copies: %.1f ms" % (
    len(copies), sum(b - a for a, b in copies) / 1e3, len(steps), sum(b - a for a, b in steps) / 1e3, overlap / 1e3))
