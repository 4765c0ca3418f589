"""Summarise the start of a `pipeline run --trace` timeline (ms from the
command's start): the device's start, the disk's read-ahead, the staging
fills and copies of the weights, and the first token; what ran alongside.

usage: startup-summary.py TRACE.json
"""
import json
import sys

ev = json.load(open(sys.argv[1]))
ev = ev["traceEvents"] if isinstance(ev, dict) else ev
names = {}
for e in ev:
    if e.get("ph") == "M" and e.get("name") == "thread_name":
        names[(e["pid"], e["tid"])] = e["args"]["name"]
spans = {}
for e in ev:
    if e.get("ph") == "X":
        spans.setdefault(names.get((e["pid"], e["tid"]), "?"), []).append(e)


def window(thread, name=None):
    s = [e for e in spans.get(thread, []) if name is None or e["name"] == name]
    if not s:
        return None
    a = min(e["ts"] for e in s) / 1000
    b = max(e["ts"] + e["dur"] for e in s) / 1000
    busy = sum(e["dur"] for e in s) / 1000
    return a, b, busy, s


def show(label, w, extra=""):
    if w is None:
        print("  %-34s none%s" % (label, extra))
        return
    a, b, busy, s = w
    print("  %-34s %8.1f .. %8.1f ms (%3d spans, busy %7.1f ms)%s" % (label, a, b, len(s), busy, extra))


ra = window("disk read-ahead", "read ahead")
cached = window("disk read-ahead", "in page cache")
extra = ""
if ra:
    byts = sum(e["args"].get("bytes", 0) for e in ra[3])
    extra = "; %.0f MB, %.2f GB/s" % (byts / 1e6, byts / 1e6 / max(ra[1] - ra[0], 1e-9))
if cached:
    extra += "; %.0f MB already in the page cache" % (sum(e["args"].get("bytes", 0) for e in cached[3]) / 1e6)
print("startup timeline:")
show("open (the run's Open)", window("run", "open"))
show("device and runtime start", window("open"))
show("disk read-ahead", ra, extra)
show("staging fills (mmap -> pinned)", window("staging fill (host)"))
show("copies (HtoD)", window("copy stream (HtoD)"))
show("GPU layer steps", window("compute stream"))
show("prompt to first token", window("run", "prompt to first token"))
