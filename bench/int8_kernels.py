"""Why `--quantize int8` on CPU runs torch's int8 weight-only matmul with bf16 activations: one SmolLM2 MLP
projection (576 -> 1536) at batch 1, each path timed call by call, interleaved, best of N, in one process
(robust to the load of a shared machine: one short call often runs undisturbed).

    python bench/int8_kernels.py [--threads 2] [--repeats 300]
"""

import argparse
import logging
import time

import torch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("torchao").setLevel(logging.ERROR)
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    torch.manual_seed(0)
    fp32 = torch.nn.Linear(576, 1536, bias=False)
    torchao_layer = torch.nn.Linear(576, 1536, bias=False)
    torchao_layer.weight = torch.nn.Parameter(fp32.weight.detach().clone(), requires_grad=False)
    quantize_(torchao_layer, Int8WeightOnlyConfig(set_inductor_config=False))
    qdata, scale = torchao_layer.weight.qdata, torchao_layer.weight.scale.reshape(-1)
    x = torch.randn(1, 576)
    paths = {
        "fp32 F.linear": lambda: fp32(x),
        "bf16 F.linear": lambda: torch.nn.functional.linear(x.bfloat16(), fp32.weight.bfloat16()),
        "torchao int8 weight-only layer, eager (fp32 activations)": lambda: torchao_layer(x),
        "_weight_int8pack_mm, fp32 activations": lambda: torch._weight_int8pack_mm(x, qdata, scale),
        "_weight_int8pack_mm, bf16 activations (our --quantize int8)": lambda: torch._weight_int8pack_mm(
            x.bfloat16(), qdata, scale.bfloat16()
        ).float(),
    }
    best = dict.fromkeys(paths, float("inf"))
    with torch.inference_mode():
        for _ in range(args.repeats):
            for name, fn in paths.items():
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
    print(f"one 576 -> 1536 projection at batch 1, {args.threads} threads, best of {args.repeats} interleaved\n")
    for name, seconds in best.items():
        print(f"{name}: {seconds * 1e6:.0f} us, {seconds / best['fp32 F.linear']:.2f}x the time of fp32")


if __name__ == "__main__":
    main()
