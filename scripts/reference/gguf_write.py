"""Minimal GGUF v3 writer and ggml block packers, for testing forward.py.

The packers take the integer quants and scales directly (no quantisation search)
and lay them out with plain per-element loops following the packing code of
ggml's quantize_row_*_ref (ggml-quants.c): a second, differently written view
of each format than the vectorised unpackers in forward.py.  pack_* returns
(bytes, expected float64 values).
"""
import struct

import numpy as np

GGUF_TYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 8, "Q4_K": 12, "Q6_K": 14, "BF16": 30}


def _f16(x):
    """round to float16, return (2 bytes, value as float64)"""
    h = np.float16(x)
    return h.tobytes(), float(h)


def pack_q8_0(rng, n):
    out, vals = bytearray(), []
    for _ in range(n // 32):
        db, d = _f16(rng.uniform(0.0002, 0.002))
        q = rng.integers(-127, 128, 32)
        out += db + bytes(int(v) & 0xFF for v in q)
        vals += [d * int(v) for v in q]
    return bytes(out), np.array(vals)


def pack_q4_0(rng, n):
    out, vals = bytearray(), []
    for _ in range(n // 32):
        db, d = _f16(rng.uniform(0.002, 0.02))
        L = rng.integers(0, 16, 32)          # stored nibble, value = L - 8
        qs = bytearray(16)
        for j in range(16):
            qs[j] = int(L[j]) | (int(L[j + 16]) << 4)
        out += db + qs
        vals += [d * (int(v) - 8) for v in L]
    return bytes(out), np.array(vals)


def pack_q4_k(rng, n):
    out, vals = bytearray(), []
    for _ in range(n // 256):
        db, d = _f16(rng.uniform(0.0001, 0.0008))
        mb, dmin = _f16(rng.uniform(0.0001, 0.0008))
        ls = rng.integers(0, 64, 8)
        lm = rng.integers(0, 64, 8)
        L = rng.integers(0, 16, 256)
        scales = bytearray(12)
        for j in range(8):
            if j < 4:
                scales[j] = int(ls[j])
                scales[j + 4] = int(lm[j])
            else:
                scales[j + 4] = (int(ls[j]) & 0xF) | ((int(lm[j]) & 0xF) << 4)
                scales[j - 4] |= (int(ls[j]) >> 4) << 6
                scales[j - 0] |= (int(lm[j]) >> 4) << 6
        qs = bytearray(128)
        p = 0
        for j in range(0, 256, 64):
            for l in range(32):
                qs[p + l] = int(L[j + l]) | (int(L[j + l + 32]) << 4)
            p += 32
        out += db + mb + scales + qs
        for i in range(256):
            s = i // 32
            vals.append(d * int(ls[s]) * int(L[i]) - dmin * int(lm[s]))
    return bytes(out), np.array(vals)


def pack_q6_k(rng, n):
    out, vals = bytearray(), []
    for _ in range(n // 256):
        db, d = _f16(rng.uniform(0.00005, 0.0004))
        sc = rng.integers(-128, 128, 16)
        L = rng.integers(0, 64, 256)          # stored 6-bit value, value = L - 32
        ql, qh = bytearray(128), bytearray(64)
        pl = ph = 0
        for j in range(0, 256, 128):
            for l in range(32):
                q1 = int(L[j + l]) & 0xF
                q2 = int(L[j + l + 32]) & 0xF
                q3 = int(L[j + l + 64]) & 0xF
                q4 = int(L[j + l + 96]) & 0xF
                ql[pl + l] = q1 | (q3 << 4)
                ql[pl + l + 32] = q2 | (q4 << 4)
                qh[ph + l] = ((int(L[j + l]) >> 4) | ((int(L[j + l + 32]) >> 4) << 2)
                              | ((int(L[j + l + 64]) >> 4) << 4) | ((int(L[j + l + 96]) >> 4) << 6))
            pl += 64
            ph += 32
        out += ql + qh + bytes(int(v) & 0xFF for v in sc) + db
        for i in range(256):
            vals.append(d * int(sc[i // 16]) * (int(L[i]) - 32))
    return bytes(out), np.array(vals)


def pack_float(rng, n, kind, scale=0.05):
    x = rng.normal(0, scale, n).astype(np.float32)
    if kind == "F32":
        return x.tobytes(), x.astype(np.float64)
    if kind == "F16":
        h = x.astype(np.float16)
        return h.tobytes(), h.astype(np.float64)
    if kind == "BF16":
        u = (x.view(np.uint32) >> 16).astype(np.uint16)
        return u.tobytes(), (u.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    raise ValueError(kind)


PACKERS = {"Q8_0": pack_q8_0, "Q4_0": pack_q4_0, "Q4_K": pack_q4_k, "Q6_K": pack_q6_k}


def pack(rng, n, kind):
    if kind in PACKERS:
        return PACKERS[kind](rng, n)
    return pack_float(rng, n, kind)


# ---------------------------------------------------------------------------

def _s(x):
    b = x.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _kv(key, val):
    if isinstance(val, bool):
        return _s(key) + struct.pack("<I?", 7, val)
    if isinstance(val, int):
        return _s(key) + struct.pack("<Ii", 5, val) if -2**31 <= val < 2**31 else _s(key) + struct.pack("<Iq", 11, val)
    if isinstance(val, float):
        return _s(key) + struct.pack("<If", 6, val)
    if isinstance(val, str):
        return _s(key) + struct.pack("<I", 8) + _s(val)
    if isinstance(val, list) and all(isinstance(v, str) for v in val):
        return _s(key) + struct.pack("<IIQ", 9, 8, len(val)) + b"".join(_s(v) for v in val)
    raise TypeError(key)


def write_gguf(path, meta, tensors, alignment=32):
    """tensors: list of (name, numpy-shape (rows, cols) or (n,), type name, raw bytes)."""
    meta = dict(meta)
    meta.setdefault("general.alignment", alignment)
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta))
    head += b"".join(_kv(k, v) for k, v in meta.items())
    off = 0
    infos, blobs = b"", []
    for name, shape, kind, raw in tensors:
        dims = list(reversed(shape))
        infos += _s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", GGUF_TYPE[kind], off)
        pad = (-len(raw)) % alignment
        blobs.append(raw + b"\0" * pad)
        off += len(raw) + pad
    body = head + infos
    body += b"\0" * ((-len(body)) % alignment)
    with open(path, "wb") as f:
        f.write(body)
        for b in blobs:
            f.write(b)
