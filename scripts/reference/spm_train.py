#!/usr/bin/env python3
"""Train a small llama-style SentencePiece BPE model on War and Peace and write
tokenizer test fixtures -> tokenizer/testdata/spm/{spm.model,vocab.json,cases.json}

Trainer settings follow Llama (1/2)'s tokenizer.model trainer_spec: model_type=bpe,
byte_fallback, split_digits, add_dummy_prefix, identity normalisation,
remove_extra_whitespaces=False, allow_whitespace_only_pieces, unk 0 / bos 1 / eos 2,
pad -1, max_sentencepiece_length 16; here vocab_size 2000 and
character_coverage 0.9995 (so rare characters fall back to <0xNN> byte pieces).

vocab.json has the token list the way llama.cpp's convert_hf_to_gguf.py
(_create_vocab_sentencepiece) would put it into a GGUF: tokens = IdToPiece,
scores = GetScore, types = 1 normal / 2 unknown (IsUnknown) / 3 control
(IsControl) / 5 unused (IsUnused) / 6 byte (IsByte), checked in that order.
cases.json has sp.encode(text) ids (no BOS/EOS) for the shared hard strings
(hard_strings.py) and War and Peace chunks.

--model EXISTING.model skips training and only (re)writes the json files
(used on the dev machine to check a model trained on the device with another
sentencepiece version: --check cases.json compares the ids).

How it was run (device machine, sentencepiece 0.2.2; see README.md beside it):
  python3 scripts/reference/spm_train.py --text .devcarry/war-and-peace.txt --outdir $OUT/spm
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hard_strings import HARD_STRINGS, wp_chunks  # noqa: E402
from tiktoken_llama3 import write_cases_json  # noqa: E402

TRAIN_ARGS = dict(
    model_type="bpe",
    vocab_size=2000,
    byte_fallback=True,
    split_digits=True,
    add_dummy_prefix=True,
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    allow_whitespace_only_pieces=True,
    character_coverage=0.9995,
    unk_id=0,
    bos_id=1,
    eos_id=2,
    pad_id=-1,
    max_sentencepiece_length=16,
    split_by_unicode_script=True,
    split_by_number=True,
    split_by_whitespace=True,
    max_sentence_length=8192,
    num_threads=8,
    input_sentence_size=0,
    shuffle_input_sentence=False,
)


def main():
    import sentencepiece as spm
    ap = argparse.ArgumentParser()
    ap.add_argument("--text", required=True, help="war-and-peace.txt")
    ap.add_argument("--outdir", required=True)
    ap.add_argument("--model", help="use this .model instead of training")
    ap.add_argument("--chunks", type=int, default=30)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--check", help="compare with an existing cases.json")
    args = ap.parse_args()
    os.makedirs(args.outdir, exist_ok=True)

    model = args.model
    if not model:
        prefix = os.path.join(args.outdir, "spm")
        spm.SentencePieceTrainer.train(input=args.text, model_prefix=prefix,
                                       minloglevel=1, **TRAIN_ARGS)
        model = prefix + ".model"
        os.remove(prefix + ".vocab")  # same information as vocab.json
    sp = spm.SentencePieceProcessor(model_file=model)
    n = sp.get_piece_size()

    tokens, scores, types = [], [], []
    for i in range(n):
        t = 1
        if sp.is_unknown(i):
            t = 2
        elif sp.is_control(i):
            t = 3
        elif sp.is_unused(i):
            t = 5
        elif sp.is_byte(i):
            t = 6
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(t)
    vocab = {
        "source": ("SentencePiece %s BPE model trained on war-and-peace.txt by "
                   "scripts/reference/spm_train.py (%s)" % (spm.__version__, json.dumps(TRAIN_ARGS))),
        "tokens": tokens, "scores": scores, "types": types,
        "bos": sp.bos_id(), "eos": sp.eos_id(), "unk": sp.unk_id(), "add_space_prefix": True,
    }
    with open(os.path.join(args.outdir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    print(f"vocab {n}: types {{t: count}} =",
          {t: types.count(t) for t in sorted(set(types))}, "bos/eos/unk", sp.bos_id(), sp.eos_id(), sp.unk_id())

    with open(args.text, encoding="utf-8") as f:
        wp = f.read()
    texts = list(HARD_STRINGS) + wp_chunks(wp, args.chunks, args.seed)
    cases = []
    for t in texts:
        ids = sp.encode(t)
        if sp.decode(ids) != t:
            # expected e.g. for leading spaces (dummy prefix) or unknowns: just note it
            print(f"note: decode(encode(x)) != x for {t[:40]!r}")
        cases.append({"text": t, "ids": ids})
    write_cases_json(os.path.join(args.outdir, "cases.json"), {
        "source": ("sentencepiece %s SentencePieceProcessor(spm.model).encode(text), no BOS/EOS; "
                   "scripts/reference/spm_train.py" % spm.__version__),
        "cases": cases,
    })
    print(f"wrote {len(cases)} cases to {args.outdir}")
    if args.check:
        with open(args.check, encoding="utf-8") as f:
            other = json.load(f)["cases"]
        bad = sum(1 for a, b in zip(cases, other) if a != b)
        print(f"check vs {args.check}: {bad} of {len(cases)} cases differ"
              + ("" if len(other) == len(cases) else f" (lengths {len(cases)} vs {len(other)})"))


if __name__ == "__main__":
    main()
