#!/usr/bin/env python3
"""Check that a model folder tinytune wrote (pretrain, merge, full/partial train) loads in
Hugging Face transformers, and an adapter it wrote loads in PEFT, and that both evaluate to the
same loss as `tinytune eval`.

    python scripts/check_hf_load.py MODEL_DIR [--adapter ADAPTER_DIR] [--data tests/fixtures/corpus/eval.jsonl]

Needs torch and transformers (tests/fixtures/requirements.txt pins them). Exits non-zero when
the losses differ by more than 1e-4.
"""
import argparse
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--adapter", help="a LoRA adapter folder to apply with PEFT")
    p.add_argument("--data", default=os.path.join(ROOT, "tests/fixtures/corpus/eval.jsonl"))
    p.add_argument("--tinytune", default=os.path.expanduser("~/.cache/tinytune/target/debug/tinytune"))
    args = p.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager").eval()
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter).eval()
        ctx_model = model.get_base_model()
    else:
        ctx_model = model
    ctx = getattr(ctx_model.config, "max_position_embeddings", None) or ctx_model.config.n_positions
    texts = [json.loads(l)["text"] for l in open(args.data) if l.strip()]
    nll, n = 0.0, 0
    with torch.no_grad():
        for t in texts:
            ids = tok(t)["input_ids"][: min(1024, ctx)]
            if len(ids) < 2:
                continue
            x = torch.tensor([ids])
            logits = model(x).logits[0, :-1]
            nll += torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
            n += len(ids) - 1
    hf = nll / n
    print(f"transformers loaded {args.model}: {type(model).__name__}, {sum(p.numel() for p in model.parameters())} parameters; eval loss {hf:.6f} over {n} tokens")
    cmd = [args.tinytune, "eval", "--device", "cpu", "--model", args.model, "--data", args.data, "--json"]
    if args.adapter:
        cmd += ["--adapter", args.adapter]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    tt = json.loads(out.stdout)
    print(f"tinytune eval: loss {tt['loss']:.6f} over {tt['tokens']} tokens")
    ok = abs(tt["loss"] - hf) < 1e-4 and tt["tokens"] == n
    print("agree within 1e-4" if ok else "DISAGREE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
