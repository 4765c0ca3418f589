#!/usr/bin/env python3
"""Independent Llama 3 (llama-bpe) tokenizer reference -> tokenizer/testdata/llama3_tiktoken.json

Builds Llama 3.2's byte-level BPE tokenizer from the GPT-2-format files
(encoder.json + vocab.bpe, see /work/shared/data/README.md) three ways:
  1. tiktoken: Encoding(pat_str=LLAMA3_PATTERN, mergeable_ranks={raw bytes: id}),
     encode_ordinary (no special tokens).  The PRIMARY reference.
  2. HF `tokenizers`: BPE(vocab, merges, ignore_merges=True) with a Split
     pre-tokenizer on the same regex + ByteLevel(use_regex=False), ByteLevel decoder.
  3. a small pure-Python rank-based BPE (tiktoken's algorithm, `regex` module),
     which also runs where tiktoken/tokenizers are missing (the dev machine).
It asserts nothing: disagreements between the implementations are printed and
recorded in the output ("disagreements"), and the ids written are tiktoken's
(or, without tiktoken, the pure-Python ones, and "source" says so).

Optional: --llamacpp NAME.gguf.inp checks all available implementations against
llama.cpp's own test vectors (NAME.gguf.out beside it).

How it was run (device machine, python3 with tiktoken 0.14 / tokenizers 0.23;
see scripts/reference/README.md, the llama3.2-tokenizer folder was carried in
.devcarry/):
  python3 scripts/reference/tiktoken_llama3.py --tok-dir .devcarry/llama3.2-tokenizer \
      --text .devcarry/war-and-peace.txt --out $OUT/llama3_tiktoken.json \
      --llamacpp .devcarry/ggml-vocab-llama-bpe.gguf.inp
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hard_strings import HARD_STRINGS, wp_chunks  # noqa: E402

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def bytes_to_unicode():
    """GPT-2's byte -> printable unicode char table."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def load_files(tok_dir):
    with open(os.path.join(tok_dir, "encoder.json"), encoding="utf-8") as f:
        encoder = json.load(f)
    merges = []
    with open(os.path.join(tok_dir, "vocab.bpe"), encoding="utf-8") as f:
        for line in f.read().split("\n"):
            if not line or line.startswith("#version"):
                continue
            a, b = line.split(" ")
            merges.append((a, b))
    u2b = {u: b for b, u in bytes_to_unicode().items()}
    ranks = {}
    for s, i in encoder.items():
        ranks[bytes(u2b[c] for c in s)] = i
    assert len(ranks) == len(encoder), "duplicate byte strings in encoder.json"
    return encoder, merges, ranks


class PyBPE:
    """tiktoken's algorithm: whole piece lookup first, then merge the adjacent
    pair whose concatenation has the lowest rank until none is mergeable."""

    def __init__(self, ranks, pattern):
        import regex
        self.ranks = ranks
        self.pat = regex.compile(pattern)

    def encode_piece(self, piece):
        r = self.ranks.get(piece)
        if r is not None:
            return [r]
        parts = [piece[i:i + 1] for i in range(len(piece))]
        while len(parts) > 1:
            best, bi = None, -1
            for i in range(len(parts) - 1):
                rk = self.ranks.get(parts[i] + parts[i + 1])
                if rk is not None and (best is None or rk < best):
                    best, bi = rk, i
            if bi < 0:
                break
            parts[bi:bi + 2] = [parts[bi] + parts[bi + 1]]
        return [self.ranks[p] for p in parts]

    def encode(self, text):
        out = []
        for m in self.pat.finditer(text):
            out.extend(self.encode_piece(m.group(0).encode("utf-8")))
        return out


# variants whose disagreements are expected/informational: counted, first 3 recorded
INFO_ONLY = {"hf_tokenizers_no_ignore_merges"}


def make_tiktoken(ranks):
    import tiktoken
    enc = tiktoken.Encoding(name="llama3.2-from-gpt2-files", pat_str=LLAMA3_PATTERN,
                            mergeable_ranks=ranks, special_tokens={})
    return enc.encode_ordinary


def make_hf(encoder, merges, ignore_merges=True):
    from tokenizers import Tokenizer, Regex, models, pre_tokenizers, decoders
    bpe = models.BPE(vocab=encoder, merges=merges, ignore_merges=ignore_merges,
                     byte_fallback=False, fuse_unk=False)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()

    def enc(text):
        return tok.encode(text, add_special_tokens=False).ids
    enc.decode = lambda ids: tok.decode(ids, skip_special_tokens=False)
    return enc


def read_llamacpp(inp):
    with open(inp, encoding="utf-8") as f:
        texts = f.read().split("\n__ggml_vocab_test__\n")[:-1]
    with open(inp[:-len(".inp")] + ".out", encoding="utf-8") as f:
        outs = f.read().split("\n")[:len(texts)]
    return texts, [[int(x) for x in o.split()] for o in outs]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tok-dir", required=True)
    ap.add_argument("--text", required=True, help="war-and-peace.txt")
    ap.add_argument("--out", required=True)
    ap.add_argument("--chunks", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--llamacpp", help="NAME.gguf.inp of llama.cpp's llama-bpe test vectors")
    args = ap.parse_args()

    encoder, merges, ranks = load_files(args.tok_dir)
    print(f"vocab {len(ranks)}, merges {len(merges)}")
    impls = {"python": PyBPE(ranks, LLAMA3_PATTERN).encode}
    try:
        impls["tiktoken"] = make_tiktoken(ranks)
    except ImportError as e:
        print("no tiktoken:", e)
    try:
        impls["hf_tokenizers"] = make_hf(encoder, merges, True)
        impls["hf_tokenizers_no_ignore_merges"] = make_hf(encoder, merges, False)
    except ImportError as e:
        print("no tokenizers:", e)
    except Exception as e:  # an API change must not cost the other references
        print("HF tokenizers setup FAILED:", repr(e))
    primary = "tiktoken" if "tiktoken" in impls else "python"

    with open(args.text, encoding="utf-8") as f:
        wp = f.read()
    texts = list(HARD_STRINGS) + wp_chunks(wp, args.chunks, args.seed)

    disagreements = []
    stats = {k: 0 for k in impls}

    def run_all(label, i, text, expected=None):
        ids = {k: fn(text) for k, fn in impls.items()}
        ref = expected if expected is not None else ids[primary]
        for k, v in ids.items():
            if v != ref:
                stats[k] += 1
                if k in INFO_ONLY and stats[k] > 3:
                    continue
                disagreements.append({"set": label, "index": i, "impl": k,
                                      "text": text, "ids": v, "reference": ref})
                print(f"DISAGREE [{label} #{i}] {k} vs {'llama.cpp' if expected is not None else primary}: "
                      f"{text[:60]!r}\n  {v[:40]}\n  {ref[:40]}")
        return ids[primary]

    cases = []
    for i, t in enumerate(texts):
        ids = run_all("cases", i, t)
        b = b"".join(bytes_of(ranks)[x] for x in ids)
        assert b == t.encode("utf-8"), f"round trip failed for case {i}"
        if "hf_tokenizers" in impls and impls["hf_tokenizers"].decode(ids) != t:
            print(f"NOTE: HF ByteLevel decode differs for case {i}")
        cases.append({"text": t, "ids": ids})
    print("case disagreements per implementation:", stats)

    llamacpp_summary = None
    if args.llamacpp:
        lt, lo = read_llamacpp(args.llamacpp)
        stats = {k: 0 for k in impls}
        for i, (t, o) in enumerate(zip(lt, lo)):
            run_all("llama.cpp", i, t, expected=o)
        llamacpp_summary = {"file": os.path.basename(args.llamacpp), "strings": len(lt),
                            "mismatches": stats}
        print(f"llama.cpp test vectors ({len(lt)} strings), mismatches per implementation:", stats)

    out = {
        "source": ("Llama 3.2 tokenizer (/work/shared/data/llama3.2-tokenizer encoder.json+vocab.bpe, "
                   "128000 tokens) encoded with " + primary +
                   (" Encoding.encode_ordinary" if primary == "tiktoken" else " (pure-Python rank BPE)") +
                   ", pattern " + LLAMA3_PATTERN + "; no special tokens; generated by "
                   "scripts/reference/tiktoken_llama3.py"),
        "implementations": sorted(impls),
        "disagreements": disagreements,
        "llamacpp_check": llamacpp_summary,
        "cases": cases,
    }
    write_cases_json(args.out, out)
    print(f"wrote {args.out}: {len(cases)} cases, {os.path.getsize(args.out)} bytes")


def write_cases_json(path, obj):
    """JSON with one case per line (readable diffs, compact ids)."""
    parts = []
    for k, v in obj.items():
        if k == "cases":
            body = ",\n".join(json.dumps(c, ensure_ascii=False) for c in v)
            parts.append(json.dumps(k) + ": [\n" + body + "\n]")
        else:
            parts.append(json.dumps(k) + ": " + json.dumps(v, ensure_ascii=False))
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(parts) + "\n}\n")


_INV = None


def bytes_of(ranks):
    global _INV
    if _INV is None:
        _INV = {v: k for k, v in ranks.items()}
    return _INV


if __name__ == "__main__":
    main()
