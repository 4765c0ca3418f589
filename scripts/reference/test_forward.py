#!/usr/bin/env python3
"""Self-tests of forward.py (no golden data needed).

1. dequantisers: random blocks packed by gguf_write.py (loop-based packers
   following ggml's quantize_row_*_ref layouts) -> forward.DEQUANT must give the
   packers' expected values (F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K).
2. GGUF path: a random llama model whose matrices are stored in all those types
   vs. an F32 twin holding the expected dequantised values: same logits.
3. (when `transformers` is importable, e.g. on the device machine) random tiny
   Hugging Face LlamaForCausalLM (GQA, q/k permuted into the GGUF the way
   llama.cpp's convert_hf_to_gguf.py does, partial n_rot not tested) and
   Qwen2ForCausalLM (q/k/v biases, NeoX rope, tied embeddings) written to GGUF:
   forward.py's float64 logits vs transformers' float64 logits.
Run: python3 scripts/reference/test_forward.py [--device cpu|cuda] [--tmp DIR]
Exit status 1 on any failure.
"""
import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import forward  # noqa: E402
from gguf_write import pack, write_gguf  # noqa: E402

FAIL = []


def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}")
    if not ok:
        FAIL.append(name)


def test_dequant(rng):
    for kind, n in [("F16", 512), ("BF16", 512), ("Q8_0", 32 * 40), ("Q4_0", 32 * 40),
                    ("Q4_K", 256 * 12), ("Q6_K", 256 * 12)]:
        raw, want = pack(rng, n, kind)
        got = forward.DEQUANT[kind](np.frombuffer(raw, dtype=np.uint8), n)
        err = float(np.abs(got.astype(np.float64) - want).max())
        tol = 1e-6 * max(1.0, float(np.abs(want).max()))
        check(f"dequant {kind}", got.shape == (n,) and err <= tol, f"max err {err:.3g}")


def llama_meta(arch, n_layer, n_embd, n_head, n_head_kv, n_ff, n_ctx=256, base=10000.0, n_rot=None):
    m = {"general.architecture": arch,
         f"{arch}.block_count": n_layer, f"{arch}.embedding_length": n_embd,
         f"{arch}.attention.head_count": n_head, f"{arch}.attention.head_count_kv": n_head_kv,
         f"{arch}.feed_forward_length": n_ff, f"{arch}.context_length": n_ctx,
         f"{arch}.rope.freq_base": base, f"{arch}.attention.layer_norm_rms_epsilon": 1e-5,
         f"{arch}.rope.dimension_count": n_rot or n_embd // n_head}
    return m


def test_quant_model(rng, tmp, device):
    E, H, KV, F, V, NL = 256, 8, 4, 512, 512, 2
    D = E // H
    kinds = {"token_embd": "Q8_0", "output": "Q4_K", "attn_q": "Q4_K", "attn_k": "Q6_K",
             "attn_v": "Q8_0", "attn_output": "Q4_0", "ffn_gate": "F16", "ffn_up": "BF16",
             "ffn_down": "Q6_K"}
    shapes = {"attn_q": (E, E), "attn_k": (KV * D, E), "attn_v": (KV * D, E), "attn_output": (E, E),
              "ffn_gate": (F, E), "ffn_up": (F, E), "ffn_down": (E, F)}
    tq, tf = [], []

    def add(name, shape, kind):
        raw, vals = pack(rng, int(np.prod(shape)), kind)
        tq.append((name, shape, kind, raw))
        tf.append((name, shape, "F32", vals.astype(np.float32).tobytes()))
    add("token_embd.weight", (V, E), kinds["token_embd"])
    for i in range(NL):
        for k, s in shapes.items():
            add(f"blk.{i}.{k}.weight", s, kinds[k])
        for k in ("attn_norm", "ffn_norm"):
            w = (1 + rng.normal(0, 0.1, E)).astype(np.float32).tobytes()
            tq.append((f"blk.{i}.{k}.weight", (E,), "F32", w))
            tf.append((f"blk.{i}.{k}.weight", (E,), "F32", w))
    w = (1 + rng.normal(0, 0.1, E)).astype(np.float32).tobytes()
    for t in (tq, tf):
        t.append(("output_norm.weight", (E,), "F32", w))
    add("output.weight", (V, E), kinds["output"])
    meta = llama_meta("llama", NL, E, H, KV, F)
    pq, pf = os.path.join(tmp, "synthetic-quant.gguf"), os.path.join(tmp, "synthetic-f32.gguf")
    write_gguf(pq, meta, tq)
    write_gguf(pf, meta, tf)
    ids = [int(x) for x in rng.integers(0, V, 20)]
    mq = forward.Model(pq, "float32", device)
    mf = forward.Model(pf, "float32", device)
    check("synthetic model tensor types", sorted(set(mq.types.values())) ==
          ["BF16", "F16", "F32", "Q4_0", "Q4_K", "Q6_K", "Q8_0"], str(sorted(set(mq.types.values()))))
    import torch
    with torch.no_grad():
        lq = mq.forward(ids).double().cpu().numpy()
        lf = mf.forward(ids).double().cpu().numpy()
    err = float(np.abs(lq - lf).max())
    check("quantised GGUF == F32 twin", err <= 1e-4, f"max |logit diff| {err:.3g} (logit scale {np.abs(lf).max():.3g})")
    return pq


def permute_llamacpp(w, n_head, n_head_kv=None):
    """convert_hf_to_gguf.py LlamaModel.permute"""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def test_hf(tmp, device):
    try:
        import torch
        import transformers
    except ImportError:
        print("skip: transformers not installed (HF cross-check runs on the device machine)")
        return
    torch.manual_seed(0)
    for arch in ("llama", "qwen2"):
        try:
            E, H, KV, F, V, NL = 64, 4, 2, 96, 300, 2
            common = dict(vocab_size=V, hidden_size=E, intermediate_size=F, num_hidden_layers=NL,
                          num_attention_heads=H, num_key_value_heads=KV, rms_norm_eps=1e-5,
                          max_position_embeddings=128, tie_word_embeddings=(arch == "qwen2"))
            if arch == "llama":
                cfg = transformers.LlamaConfig(**common)
                hf = transformers.LlamaForCausalLM(cfg)
            else:
                cfg = transformers.Qwen2Config(**common)
                hf = transformers.Qwen2ForCausalLM(cfg)
            rp = getattr(cfg, "rope_parameters", None)
            base = float(rp["rope_theta"]) if isinstance(rp, dict) and "rope_theta" in rp else float(cfg.rope_theta)
            hf = hf.double().eval()
            with torch.no_grad():  # make biases / norms non-trivial
                for name, p in hf.named_parameters():
                    if name.endswith("bias") or "norm" in name:
                        p.add_(torch.randn_like(p) * 0.1)
                    elif p.dim() == 2:
                        p.mul_(5.0)  # std 0.1: non-trivial attention patterns
            sd = {k: v.detach().cpu().numpy() for k, v in hf.state_dict().items()}
            T = []

            def add(name, a):
                a = np.ascontiguousarray(a, dtype=np.float32)
                T.append((name, a.shape, "F32", a.tobytes()))
            add("token_embd.weight", sd["model.embed_tokens.weight"])
            for i in range(NL):
                p = f"model.layers.{i}."
                q, k = sd[p + "self_attn.q_proj.weight"], sd[p + "self_attn.k_proj.weight"]
                if arch == "llama":
                    q, k = permute_llamacpp(q, H, H), permute_llamacpp(k, H, KV)
                add(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
                add(f"blk.{i}.attn_q.weight", q)
                add(f"blk.{i}.attn_k.weight", k)
                add(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
                for b in ("q", "k", "v"):
                    if p + f"self_attn.{b}_proj.bias" in sd:
                        add(f"blk.{i}.attn_{b}.bias", sd[p + f"self_attn.{b}_proj.bias"])
                add(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
                add(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
                add(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
                add(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
                add(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
            add("output_norm.weight", sd["model.norm.weight"])
            if arch == "llama":
                add("output.weight", sd["lm_head.weight"])
            path = os.path.join(tmp, f"hf-{arch}.gguf")
            write_gguf(path, llama_meta(arch, NL, E, H, KV, F, base=base), T)
            ids = [int(x) for x in np.random.default_rng(1).integers(0, V, 24)]
            with torch.no_grad():
                ref = hf(torch.tensor([ids])).logits[0].double().numpy()
                m = forward.Model(path, "float64", device)
                got = m.forward(ids).double().cpu().numpy()
                m.cfg["rope_neox"] = not m.cfg["rope_neox"]   # negative control: wrong rope
                wrong = m.forward(ids).double().cpu().numpy()
            err = float(np.abs(got - ref).max())
            werr = float(np.abs(wrong - ref).max())
            check(f"HF {arch} negative control (other rope style differs)", werr > 1e-2, f"max |diff| {werr:.3g}")
            # transformers' RMSNorm and rotary tables compute in float32 even for a
            # float64 model, so agreement is at float32 level (~1e-7 relative)
            check(f"HF transformers {transformers.__version__} {arch} vs forward.py (float64)",
                  err <= 1e-5 * max(1.0, float(np.abs(ref).max())), f"max |logit diff| {err:.3g}, logit scale {np.abs(ref).max():.3g}, "
                  f"rope base {base}, tied {arch == 'qwen2'}")
        except Exception as e:  # report, don't hide the rest
            import traceback
            traceback.print_exc()
            check(f"HF {arch} cross-check ran", False, repr(e))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default=None)
    ap.add_argument("--tmp", default=None)
    args = ap.parse_args()
    tmp = args.tmp or tempfile.mkdtemp()
    rng = np.random.default_rng(1234)
    test_dequant(rng)
    test_quant_model(rng, tmp, args.device)
    test_hf(tmp, args.device)
    print(f"{len(FAIL)} failed" if FAIL else "all passed")
    sys.exit(1 if FAIL else 0)


if __name__ == "__main__":
    main()
