"""GPU only: decode tokens/s for SmolLM2-135M in bf16 at batch 1 and 8, plain `generate` vs a static KV
cache + torch.compile; and training MFU of a 124M GPT-2 from scratch. Prints a skip line on CPU.

    python bench/gpu_decode.py
"""
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import device_name, markdown_table  # noqa: E402


def decode_rate(model, inputs, tokens, **extra):
    model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False, **extra)  # warm-up / compile
    torch.cuda.synchronize()
    start = time.perf_counter()
    model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, **extra)
    torch.cuda.synchronize()
    return inputs["input_ids"].shape[0] * tokens / (time.perf_counter() - start)


def main():
    if not torch.cuda.is_available():
        print("skipped: no CUDA GPU on this machine (run it where one is; see bench/RESULTS.md)")
        return
    from llm_magics import Session

    session = Session()
    loaded = session.load("default", device="cuda", dtype="bfloat16")
    model, tokenizer = loaded.model, loaded.tokenizer
    tokenizer.padding_side = "left"
    rows = []
    for batch in (1, 8):
        inputs = tokenizer(["Once upon a time"] * batch, return_tensors="pt", padding=True).to("cuda")
        plain = decode_rate(model, inputs, 256)
        # transformers compiles the forward pass itself when the cache is static.
        compiled = decode_rate(model, inputs, 256, cache_implementation="static")
        rows.append([batch, f"{plain:,.0f}", f"{compiled:,.0f}", f"{compiled / plain:.2f}x"])
    print(f"Decode, SmolLM2-135M bf16, 256 new tokens, on {device_name()}\n")
    print(markdown_table(["batch", "generate tok/s", "static cache + compile tok/s", "speed-up"], rows))

    # Training MFU: 6 * params * tokens / time / peak bf16 FLOP/s.
    result = Session().train(text=open(Path(__file__).parent.parent / "examples/data/tiny_corpus.txt").read() * 500,
                             from_scratch=True, config="gpt2-124m", arch="gpt2", tokenizer="default", steps=30,
                             batch_size=16, seq_len=1024, progress=False)
    params = 124e6
    peak = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
    name = torch.cuda.get_device_name()
    peak_flops = next((v for k, v in peak.items() if k in name), None)
    flops = 6 * params * result.tokens_per_second
    print(f"\nGPT-2 124M from scratch: {result.tokens_per_second:,.0f} tokens/s, "
          f"{flops / 1e12:.1f} TFLOP/s" + (f", MFU {flops / peak_flops:.1%}" if peak_flops else ""))


if __name__ == "__main__":
    main()
