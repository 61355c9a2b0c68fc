#!/usr/bin/env python3
"""LoRA training throughput: tinytune (`tinytune train --device cpu`) beside PyTorch + PEFT on
the same CPU, the same model (a random-weight Llama from a config), the same batch and sequence
length, the same optimizer (AdamW) and the same LoRA (all linear layers, rank r).

Run from the repository root, in a Python environment with torch, transformers and peft
(tests/fixtures/requirements.txt pins them):

    python benches/peft_compare.py --config benches/llama-3m.json --steps 20
    python benches/peft_compare.py --config benches/llama-24m.json --steps 6 --batch-size 8

It prints tokens/s (the first step, which includes one-time setup, is not timed) and the peak
resident memory of each process.
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytorch_peft(args, windows):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = json.load(open(args.config))
    model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in cfg.items() if k != "architectures"}))
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules="all-linear", lora_dropout=0.0))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    batches = [windows[i:i + args.batch_size] for i in range(0, len(windows) - args.batch_size + 1, args.batch_size)]
    tokens, start = 0, None
    for step in range(args.steps + 1):
        batch = torch.tensor(batches[step % len(batches)])
        # Forward over seq_len tokens, as tinytune does; transformers shifts the labels itself.
        inputs = batch[:, :-1]
        out = model(input_ids=inputs, labels=inputs, use_cache=False)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if step == 0:
            start = time.perf_counter()
        else:
            tokens += inputs.numel()
    secs = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return tokens / secs, peak


def tinytune(args):
    with tempfile.TemporaryDirectory(prefix="tinytune-bench-") as work:
        return tinytune_in(args, work)


def tinytune_in(args, work):
    binary = args.tinytune
    model = os.path.join(work, "model")
    subprocess.run([binary, "init", "--config", args.config, "--tokenizer", args.tokenizer, "--out", model], check=True, capture_output=True)
    cmd = [binary, "train", "--device", "cpu", "--model", model, "--data", args.data, "--out", os.path.join(work, "out"),
           "--steps", str(args.steps + 1), "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
           "--rank", str(args.rank), "--alpha", str(2 * args.rank), "--lr", "1e-3", "--pack"]
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    # Throughput after the first step, from metrics.jsonl, as for PyTorch.
    rows = [json.loads(l) for l in open(os.path.join(work, "out", "metrics.jsonl")) if '"loss"' in l]
    first, last = rows[0], rows[-1]
    tokens = sum(r["tokens"] for r in rows[1:])
    secs = last["elapsed"] - first["elapsed"]
    peak = re.search(r"peak memory (\d+) MiB", out.stdout)
    return tokens / secs, (int(peak.group(1)) * 1048576 if peak else None)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--tokenizer", default=os.path.join(ROOT, "tests/fixtures/tiny-llama/tokenizer.json"))
    p.add_argument("--data", default=os.path.join(ROOT, "www/assets/builtin/corpus/valid.txt"))
    p.add_argument("--tinytune", default=os.path.expanduser("~/.cache/tinytune/target/debug/tinytune"))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()

    from tokenizers import Tokenizer
    ids = Tokenizer.from_file(args.tokenizer).encode(open(args.data).read()).ids
    n = args.seq_len + 1
    windows = [ids[i:i + n] for i in range(0, len(ids) - n + 1, n)]

    params = "?"
    print(f"model {os.path.basename(args.config)}, LoRA r={args.rank} on all linear layers, batch {args.batch_size} x {args.seq_len}, "
          f"{args.steps} timed steps, {args.threads} threads")
    tt, tt_peak = tinytune(args)
    print(f"tinytune        {tt:9.0f} tokens/s   peak RSS {tt_peak / 1048576 if tt_peak else float('nan'):7.0f} MiB")
    pt, pt_peak = pytorch_peft(args, windows)
    print(f"PyTorch + PEFT  {pt:9.0f} tokens/s   peak RSS {pt_peak / 1048576:7.0f} MiB")
    print(f"ratio tinytune / PyTorch: {tt / pt:.2f}")


if __name__ == "__main__":
    sys.exit(main())
