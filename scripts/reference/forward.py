#!/usr/bin/env python3
"""Independent reference forward pass for llama / qwen2 GGUF models (PyTorch).

Everything here is written from the format descriptions, not from forgepipe's Go
code: its own GGUF parser (numpy: header, metadata, tensor index) and dequantisers
(F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K; any other type raises), then a plain
PyTorch transformer in float32 (default) or float64:
  x = token_embd[ids]
  per layer: h = rmsnorm(x)*attn_norm; q,k,v = h@Wq,Wk,Wv (+ biases if present: qwen2);
             rope on q,k; causal softmax(q k^T / sqrt(head_dim)) v with GQA;
             x += attn_output(.); h = rmsnorm(x)*ffn_norm;
             x += ffn_down(silu(ffn_gate h) * ffn_up h)
  logits = output(rmsnorm(x)*output_norm)   (output = token_embd when output.weight is absent)
Rope: llama = llama.cpp's "normal" rope, rotating adjacent pairs (x[2i], x[2i+1]) of
the first rope.dimension_count dims of each head, applied to the weights as stored
in the GGUF (llama.cpp's converter permutes q/k for this); qwen2 = NeoX rope,
rotating (x[i], x[i+n_rot/2]). theta_i = freq_base^(-2i/n_rot), freq_base default 10000.
Generation is greedy and recomputes the whole sequence at every step (no KV cache).

Usage:
  forward.py MODEL.gguf --prompt-ids 1,2,3 [--prompt-ids ...] --gen N --out FILE.json
             [--full-logits | --full-logits-runs K] [--dtype float32|float64]
             [--device cuda|cpu] [--golden golden.json] [--compare OTHER.json]
  --golden G      take the prompts from G (forgepipe golden.json format), check
                  generated_ids and top5_first against it and print the comparison
                  (exit status 1 on a mismatch).
  --compare F     compare with an earlier output F of this script (e.g. float64 vs
                  float32): generated ids, max |logit diff| of top5 and full logits.
Output JSON (one prompt): {"model", "sha256", "arch", "dtype", "device", "config",
  "prompt_ids", "generated_ids", "top5", "logits_encoding", "logits"}; with several
  prompts the per-prompt fields go into "runs": [{...}, ...] instead.
  Positions: seq = prompt_ids + generated_ids; entry i of "top5" / "logits" is the
  next-token distribution after seq[0..i], for i = 0 .. len(seq)-2 (so entry
  len(prompt)-1+k produced generated_ids[k]). "top5" = [[id, logit] x5] per position.
  "logits" (only with --full-logits) = per position, base64 of the vocab-size array
  of little-endian float32 logits ("logits_encoding": "base64-float32-le").

How the checked-in references were made: see scripts/reference/README.md.
"""
import argparse
import base64
import hashlib
import json
import struct
import sys

import numpy as np

# ---------------------------------------------------------------------------
# GGUF parsing (numpy only)

GGML_TYPES = {  # id: (name, block elements, block bytes)
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8),
    28: ("F64", 1, 8), 30: ("BF16", 1, 2),
}

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
           10: "<Q", 11: "<q", 12: "<d"}


class GGUF:
    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            self.buf = f.read()
        self.pos = 0
        magic = self.buf[:4]
        if magic != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file (magic {magic!r})")
        self.pos = 4
        self.version = self._u32()
        if self.version not in (2, 3):
            raise ValueError(f"unsupported GGUF version {self.version}")
        n_tensors = self._u64()
        n_kv = self._u64()
        self.meta = {}
        for _ in range(n_kv):
            key = self._str()
            vtype = self._u32()
            self.meta[key] = self._value(vtype)
        self.tensors = {}
        for _ in range(n_tensors):
            name = self._str()
            nd = self._u32()
            dims = [self._u64() for _ in range(nd)]
            ttype = self._u32()
            off = self._u64()
            self.tensors[name] = (dims, ttype, off)
        align = int(self.meta.get("general.alignment", 32))
        self.data_start = (self.pos + align - 1) // align * align

    def _unpack(self, fmt):
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return v

    def _u32(self):
        return self._unpack("<I")

    def _u64(self):
        return self._unpack("<Q")

    def _str(self):
        n = self._u64()
        s = self.buf[self.pos:self.pos + n].decode("utf-8", errors="surrogateescape")
        self.pos += n
        return s

    def _value(self, vtype):
        if vtype in _SCALAR:
            return self._unpack(_SCALAR[vtype])
        if vtype == 8:
            return self._str()
        if vtype == 9:
            etype = self._u32()
            n = self._u64()
            if etype in _SCALAR and etype != 7:
                dt = np.dtype(_SCALAR[etype])
                arr = np.frombuffer(self.buf, dtype=dt, count=n, offset=self.pos).copy()
                self.pos += n * dt.itemsize
                return arr
            return [self._value(etype) for _ in range(n)]
        raise ValueError(f"unknown metadata value type {vtype}")

    def tensor(self, name):
        """Dequantised tensor as float32 numpy array, shape = reversed GGUF dims
        (a GGUF matrix with ne = [in, out] becomes (out, in))."""
        dims, ttype, off = self.tensors[name]
        if ttype not in GGML_TYPES:
            raise ValueError(f"{name}: unknown ggml type {ttype}")
        tname, blk, bsize = GGML_TYPES[ttype]
        n = int(np.prod(dims)) if dims else 1
        if n % blk:
            raise ValueError(f"{name}: {n} elements not a multiple of block {blk}")
        nbytes = n // blk * bsize
        start = self.data_start + off
        raw = np.frombuffer(self.buf, dtype=np.uint8, count=nbytes, offset=start)
        fn = DEQUANT.get(tname)
        if fn is None:
            raise NotImplementedError(f"{name}: tensor type {tname} not supported by this reference")
        out = fn(raw, n)
        assert out.dtype == np.float32 and out.size == n
        return out.reshape(list(reversed(dims)))


# ---------------------------------------------------------------------------
# dequantisers: raw uint8 bytes -> float32[n]

def _f16(raw_cols):
    return np.ascontiguousarray(raw_cols).view(np.float16).astype(np.float32)


def dq_f32(raw, n):
    return raw.view(np.float32).copy()


def dq_f16(raw, n):
    return raw.view(np.float16).astype(np.float32)


def dq_bf16(raw, n):
    return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def dq_q8_0(raw, n):
    b = raw.reshape(-1, 34)
    d = _f16(b[:, 0:2])                                   # (nb, 1)
    q = np.ascontiguousarray(b[:, 2:]).view(np.int8).astype(np.float32)
    return (d * q).reshape(-1)


def dq_q4_0(raw, n):
    b = raw.reshape(-1, 18)
    d = _f16(b[:, 0:2])
    qs = b[:, 2:]
    lo = (qs & 0x0F).astype(np.int32) - 8                  # elements 0..15
    hi = (qs >> 4).astype(np.int32) - 8                    # elements 16..31
    return (d * np.concatenate([lo, hi], axis=1).astype(np.float32)).reshape(-1)


def _k4_scales_mins(s):
    """Q4_K/Q5_K 12-byte packed 6-bit scales and mins -> (nb, 8) each."""
    s = s.astype(np.int32)
    sc = np.empty((s.shape[0], 8), np.int32)
    mn = np.empty((s.shape[0], 8), np.int32)
    sc[:, 0:4] = s[:, 0:4] & 63
    mn[:, 0:4] = s[:, 4:8] & 63
    sc[:, 4:8] = (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)
    mn[:, 4:8] = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return sc, mn


def dq_q4_k(raw, n):
    b = raw.reshape(-1, 144)
    nb = b.shape[0]
    d = _f16(b[:, 0:2])                                   # (nb, 1)
    dmin = _f16(b[:, 2:4])
    sc, mn = _k4_scales_mins(b[:, 4:16])
    qs = b[:, 16:144].reshape(nb, 4, 32)                   # 4 chunks of 64 values
    q = np.stack([qs & 0x0F, qs >> 4], axis=2)             # (nb, 4, 2, 32): sub-block 2c, 2c+1
    q = q.reshape(nb, 8, 32).astype(np.float32)
    d1 = (d * sc.astype(np.float32))[:, :, None]           # float32 like ggml
    m1 = (dmin * mn.astype(np.float32))[:, :, None]
    return (d1 * q - m1).reshape(-1).astype(np.float32)


def dq_q6_k(raw, n):
    b = raw.reshape(-1, 210)
    nb = b.shape[0]
    ql = b[:, 0:128].reshape(nb, 2, 64).astype(np.int32)     # per 128-value half
    qh = b[:, 128:192].reshape(nb, 2, 32).astype(np.int32)
    sc = np.ascontiguousarray(b[:, 192:208]).view(np.int8).astype(np.float32)  # (nb, 16)
    d = _f16(b[:, 208:210])                                    # (nb, 1)
    q1 = (ql[:, :, 0:32] & 0x0F) | (((qh >> 0) & 3) << 4)
    q2 = (ql[:, :, 32:64] & 0x0F) | (((qh >> 2) & 3) << 4)
    q3 = (ql[:, :, 0:32] >> 4) | (((qh >> 4) & 3) << 4)
    q4 = (ql[:, :, 32:64] >> 4) | (((qh >> 6) & 3) << 4)
    q = np.stack([q1, q2, q3, q4], axis=2) - 32                # (nb, 2, 4, 32) = 256 values in order
    q = q.reshape(nb, 16, 16).astype(np.float32)               # 16 groups of 16, one scale each
    return ((d * sc)[:, :, None] * q).reshape(-1).astype(np.float32)


DEQUANT = {"F32": dq_f32, "F16": dq_f16, "BF16": dq_bf16, "Q8_0": dq_q8_0,
           "Q4_0": dq_q4_0, "Q4_K": dq_q4_k, "Q6_K": dq_q6_k}


# ---------------------------------------------------------------------------
# model

def load_config(g):
    arch = g.meta["general.architecture"]
    if arch not in ("llama", "qwen2"):
        raise NotImplementedError(f"architecture {arch!r} not supported (llama, qwen2)")

    def m(key, default=None):
        v = g.meta.get(f"{arch}.{key}", default)
        if v is None:
            raise KeyError(f"missing metadata {arch}.{key}")
        return v
    n_embd = int(m("embedding_length"))
    n_head = int(m("attention.head_count"))
    n_head_kv = int(m("attention.head_count_kv", n_head))
    head_dim = n_embd // n_head
    if f"{arch}.attention.key_length" in g.meta:
        head_dim = int(g.meta[f"{arch}.attention.key_length"])
    cfg = dict(
        arch=arch,
        n_layer=int(m("block_count")),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        n_rot=int(m("rope.dimension_count", head_dim)),
        rope_base=float(m("rope.freq_base", 10000.0)),
        eps=float(m("attention.layer_norm_rms_epsilon")),
        n_ctx=int(m("context_length")),
        rope_neox=(arch == "qwen2"),
    )
    return cfg


class Model:
    def __init__(self, path, dtype="float32", device=None):
        import torch
        self.torch = torch
        self.g = GGUF(path)
        self.cfg = load_config(self.g)
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        if device == "cuda":
            # exact fp32 matmuls (no TF32)
            try:
                torch.backends.cuda.matmul.fp32_precision = "ieee"
            except Exception:
                pass
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self.types = {}

        def T(name, required=True):
            if name not in self.g.tensors:
                if required:
                    raise KeyError(f"missing tensor {name}")
                return None
            self.types[name] = GGML_TYPES[self.g.tensors[name][1]][0]
            a = self.g.tensor(name)
            return torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=self.dtype)
        c = self.cfg
        self.tok_embd = T("token_embd.weight")
        self.out_norm = T("output_norm.weight")
        self.output = T("output.weight", required=False)
        if self.output is None:
            self.output = self.tok_embd
        self.n_vocab = self.output.shape[0]
        self.layers = []
        for i in range(c["n_layer"]):
            p = f"blk.{i}."
            self.layers.append({k: T(p + k + ".weight", required=not k.endswith("_b")) if not k.endswith("_b")
                                else T(p + k[:-2] + ".bias", required=False)
                                for k in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                          "ffn_norm", "ffn_gate", "ffn_up", "ffn_down",
                                          "attn_q_b", "attn_k_b", "attn_v_b")})
        hd, nr = c["head_dim"], c["n_rot"]
        inv = 1.0 / (c["rope_base"] ** (torch.arange(0, nr, 2, dtype=torch.float64) / nr))
        self.inv_freq = inv.to(device)  # float64 angles, cast after cos/sin

    def rmsnorm(self, x, w):
        return x * self.torch.rsqrt((x * x).mean(-1, keepdim=True) + self.cfg["eps"]) * w

    def rope(self, x, pos):
        # x: (T, H, D)
        torch = self.torch
        c = self.cfg
        nr = c["n_rot"]
        ang = pos.to(torch.float64)[:, None] * self.inv_freq[None, :]        # (T, nr/2)
        cos = torch.cos(ang).to(self.dtype)[:, None, :]
        sin = torch.sin(ang).to(self.dtype)[:, None, :]
        xr, rest = x[..., :nr], x[..., nr:]
        if c["rope_neox"]:
            a, b = xr[..., :nr // 2], xr[..., nr // 2:]
            out = torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)
        else:
            a, b = xr[..., 0::2], xr[..., 1::2]
            out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
        return torch.cat([out, rest], dim=-1)

    def forward(self, ids):
        """ids: list[int] -> logits (T, vocab) in self.dtype."""
        torch = self.torch
        c = self.cfg
        T_ = len(ids)
        idx = torch.tensor(ids, dtype=torch.long, device=self.device)
        pos = torch.arange(T_, device=self.device)
        x = self.tok_embd[idx]
        H, KV, D = c["n_head"], c["n_head_kv"], c["head_dim"]
        mask = torch.full((T_, T_), float("-inf"), dtype=self.dtype, device=self.device).triu(1)
        for L in self.layers:
            h = self.rmsnorm(x, L["attn_norm"])
            q = h @ L["attn_q"].T
            k = h @ L["attn_k"].T
            v = h @ L["attn_v"].T
            if L["attn_q_b"] is not None:
                q = q + L["attn_q_b"]
            if L["attn_k_b"] is not None:
                k = k + L["attn_k_b"]
            if L["attn_v_b"] is not None:
                v = v + L["attn_v_b"]
            q = self.rope(q.view(T_, H, D), pos)
            k = self.rope(k.view(T_, KV, D), pos)
            v = v.view(T_, KV, D)
            rep = H // KV
            k = k.repeat_interleave(rep, dim=1)   # query head h uses kv head h // rep
            v = v.repeat_interleave(rep, dim=1)
            att = torch.einsum("thd,shd->hts", q, k) / (D ** 0.5) + mask
            att = torch.softmax(att, dim=-1)
            o = torch.einsum("hts,shd->thd", att, v).reshape(T_, H * D)
            x = x + o @ L["attn_output"].T
            h = self.rmsnorm(x, L["ffn_norm"])
            g_ = h @ L["ffn_gate"].T
            u = h @ L["ffn_up"].T
            x = x + (torch.nn.functional.silu(g_) * u) @ L["ffn_down"].T
        x = self.rmsnorm(x, self.out_norm)
        return x @ self.output.T

    def generate(self, prompt_ids, n_gen):
        """Greedy. Returns generated ids and logits (positions 0..len(seq)-2) as float64 numpy."""
        seq = list(prompt_ids)
        with self.torch.no_grad():
            first = self.forward(seq)
            rows = [r for r in first.double().cpu().numpy()]
            gen = []
            for step in range(n_gen):
                nxt = int(np.argmax(rows[-1]))
                gen.append(nxt)
                seq.append(nxt)
                if step == n_gen - 1:
                    break
                rows.append(self.forward(seq)[-1].double().cpu().numpy())
        return gen, np.stack(rows)


def top5(row):
    idx = np.argsort(-row, kind="stable")[:5]
    return [[int(i), float(row[i])] for i in idx]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def decode_logits(run):
    if "logits" not in run:
        return None
    return np.stack([np.frombuffer(base64.b64decode(s), dtype="<f4") for s in run["logits"]]).astype(np.float64)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--prompt-ids", action="append", default=[],
                    help="comma-separated token ids (repeatable)")
    ap.add_argument("--golden", help="golden.json: take prompts from it and compare")
    ap.add_argument("--gen", type=int, default=16)
    ap.add_argument("--out", required=True)
    ap.add_argument("--full-logits", action="store_true", help="store full logits for every prompt")
    ap.add_argument("--full-logits-runs", type=int, default=0,
                    help="store full logits for the first K prompts only")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--compare", help="earlier output of this script to compare against")
    ap.add_argument("--tol", type=float, default=1e-4, help="golden top5 logit tolerance")
    args = ap.parse_args()

    prompts = [[int(t) for t in p.split(",") if t.strip()] for p in args.prompt_ids]
    golden = None
    if args.golden:
        with open(args.golden) as f:
            golden = json.load(f)
        prompts += [p["prompt_ids"] for p in golden["prompts"]]
    if not prompts:
        ap.error("no prompts: give --prompt-ids or --golden")

    model = Model(args.model, args.dtype, args.device)
    c = model.cfg
    print(f"{args.model}: {c}, vocab {model.n_vocab}, device {model.device}, dtype {args.dtype}, "
          f"tensor types {sorted(set(model.types.values()))}, tied output {'output.weight' not in model.g.tensors}")
    for p in prompts:
        bad = [t for t in p if not 0 <= t < model.n_vocab]
        if bad:
            raise ValueError(f"prompt ids out of range: {bad}")

    runs, full = [], []
    for i, p in enumerate(prompts):
        gen, logits = model.generate(p, args.gen)
        run = {"prompt_ids": p, "generated_ids": gen, "top5": [top5(r) for r in logits]}
        if args.full_logits or i < args.full_logits_runs:
            run["logits_encoding"] = "base64-float32-le"
            run["logits"] = [base64.b64encode(r.astype("<f4").tobytes()).decode("ascii") for r in logits]
        runs.append(run)
        full.append(logits)
        print(f"prompt {i}: {len(p)} ids -> generated {gen}")

    ok = True
    if golden is not None:
        off = len(prompts) - len(golden["prompts"])
        print("golden comparison:")
        for j, gp in enumerate(golden["prompts"]):
            r, lg = runs[off + j], full[off + j]
            n = len(gp["generated_ids"])
            same = r["generated_ids"][:n] == gp["generated_ids"]
            first_div = next((k for k, (a, b) in enumerate(zip(r["generated_ids"], gp["generated_ids"]))
                              if a != b), None)
            row = lg[len(gp["prompt_ids"]) - 1]
            ids_ok = [t for t, _ in top5(row)] == [t for t, _ in gp["top5_first"]]
            dmax = max(abs(row[t] - v) for t, v in gp["top5_first"])
            good = same and ids_ok and dmax <= args.tol
            ok &= good
            print(f"  {j} {gp['prompt']!r}: generated_ids {'EQUAL' if same else 'DIFFER at %s' % first_div} "
                  f"({n} tokens), top5_first ids {'equal' if ids_ok else 'DIFFER'}, "
                  f"max |logit diff| {dmax:.3g} -> {'OK' if good else 'FAIL'}")
        print("golden:", "ALL OK" if ok else "MISMATCH")

    if args.compare:
        with open(args.compare) as f:
            other = json.load(f)
        oruns = other.get("runs", [other])
        gmax = fmax = 0.0
        same_all = True
        for j, (r, o) in enumerate(zip(runs, oruns)):
            same = r["generated_ids"] == o["generated_ids"] and r["prompt_ids"] == o["prompt_ids"]
            same_all &= same
            ol = decode_logits(o)
            if ol is not None:
                n = min(len(ol), len(full[j]))
                d = float(np.abs(full[j][:n] - ol[:n]).max())
                fmax = max(fmax, d)
            for a, b in zip(r["top5"], o["top5"]):
                bd = dict((t, v) for t, v in b)
                for t, v in a:
                    if t in bd:
                        gmax = max(gmax, abs(v - bd[t]))
            print(f"  compare run {j}: generated_ids {'equal' if same else 'DIFFER'}"
                  + (f", full logits max |diff| {d:.3g}" if ol is not None else ""))
        print(f"compare vs {args.compare}: generated ids {'all equal' if same_all else 'DIFFER'}, "
              f"max |top5 logit diff| {gmax:.3g}, max |full logit diff| {fmax:.3g}")

    meta = {"model": args.model.split("/")[-1], "sha256": sha256(args.model), "arch": c["arch"],
            "dtype": args.dtype, "device": str(model.device), "torch": model.torch.__version__,
            "config": c, "tensor_types": sorted(set(model.types.values())),
            "generator": "scripts/reference/forward.py"}
    out = dict(meta, **runs[0]) if len(runs) == 1 else dict(meta, runs=runs)
    with open(args.out, "w") as f:
        json.dump(out, f)
    print(f"wrote {args.out}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
