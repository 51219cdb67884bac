"""Attribution time and peak memory per method: ours (`Session.attribute`: integration steps and
perturbations in batches of 16, one target at a time) vs the same Captum method called with its defaults
(all IG steps in one batch, one perturbation per forward) on the same input, forward function and
baseline. A prompt of --prompt-tokens tokens and --new-tokens greedily generated targets on SmolLM2;
attributions must agree to 1e-4.

    python bench/attribution.py [--prompt-tokens 100] [--new-tokens 10] [--methods ...] [--steps 50]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import device_name, markdown_table, peak_memory_mb  # noqa: E402

from llm_magics import Session  # noqa: E402
from llm_magics.attribution import METHODS, _baseline_id, _LogProb  # noqa: E402


def captum_defaults(method: str, loaded, sequence: torch.Tensor, prompt_length: int, steps: int) -> np.ndarray:
    """Each target token attributed by the Captum method with its default batching."""
    from captum.attr import (FeatureAblation, InputXGradient, IntegratedGradients, LayerIntegratedGradients,
                             Occlusion, Saliency, ShapleyValueSampling)

    f, embedding = _LogProb(loaded), loaded.model.get_input_embeddings()
    base = _baseline_id(loaded.tokenizer)
    rows = []
    for index in range(sequence.shape[1] - prompt_length):
        ids, target = sequence[:, :prompt_length + index], int(sequence[0, prompt_length + index])
        x = embedding(ids).detach().requires_grad_(True)
        if method == "integrated-gradients":
            a = IntegratedGradients(f).attribute(x, torch.zeros_like(x), additional_forward_args=(target, True),
                                                 n_steps=steps).sum(-1)
        elif method == "layer-integrated-gradients":
            a = LayerIntegratedGradients(f, embedding).attribute(ids, torch.full_like(ids, base),
                                                                 additional_forward_args=(target,), n_steps=steps).sum(-1)
        elif method == "saliency":
            a = Saliency(f).attribute(x, additional_forward_args=(target, True)).sum(-1)
        elif method == "input-x-gradient":
            a = InputXGradient(f).attribute(x, additional_forward_args=(target, True)).sum(-1)
        elif method == "occlusion":
            with torch.no_grad():
                a = Occlusion(f).attribute(x, (1, x.shape[-1]), strides=(1, x.shape[-1]), baselines=0,
                                           additional_forward_args=(target, True)).mean(-1)
        elif method == "feature-ablation":
            with torch.no_grad():
                a = FeatureAblation(f).attribute(ids, baselines=base, additional_forward_args=(target,))
        else:
            with torch.no_grad():
                a = ShapleyValueSampling(f).attribute(ids, baselines=base, additional_forward_args=(target,),
                                                      n_samples=steps)
        row = np.full(sequence.shape[1], np.nan)
        row[:ids.shape[1]] = a[0].detach().double().numpy()
        rows.append(row)
    return np.array(rows)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompt-tokens", type=int, default=100)
    parser.add_argument("--new-tokens", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50, help="IG steps (Shapley samples: half of it)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    args = parser.parse_args()
    session = Session()
    loaded = session.load("default")
    torch.manual_seed(0)
    words = ("the river bank was quiet when the old fisherman told his grandson a story about the sea "
             "and the storms he had seen long ago before the town had a harbour ").split()
    text = " ".join(words[i % len(words)] for i in range(args.prompt_tokens * 2))
    ids = loaded.tokenizer(text)["input_ids"][:args.prompt_tokens]
    text = loaded.tokenizer.decode(ids)
    rows = []
    for method in args.methods:
        steps = args.steps if "integrated" in method else max(1, args.steps // 2)
        out = {}

        def ours():
            torch.manual_seed(0)
            out["ours"] = session.attribute(text, method=method, max_new_tokens=args.new_tokens, steps=steps,
                                            progress=False)

        start = time.perf_counter()
        ours_mb = peak_memory_mb(ours)
        ours_s = time.perf_counter() - start
        result = out["ours"]
        sequence = torch.tensor([result.ids])

        def theirs():
            torch.manual_seed(0)
            out["captum"] = captum_defaults(method, loaded, sequence, result.prompt_length, steps)

        start = time.perf_counter()
        captum_mb = peak_memory_mb(theirs)
        captum_s = time.perf_counter() - start
        difference = float(np.nanmax(np.abs(out["captum"] - result.scores)))
        rows.append([method, steps, f"{ours_s:.1f}", f"{captum_s:.1f}", f"{captum_s / ours_s:.2f}x", f"{ours_mb:.0f}",
                     f"{captum_mb:.0f}", f"{difference:.1e}"])
        print(f"{method}: ours {ours_s:.1f}s {ours_mb:.0f}MB, captum defaults {captum_s:.1f}s {captum_mb:.0f}MB, "
              f"max diff {difference:.1e}", file=sys.stderr, flush=True)
    table = markdown_table(["method", "steps / samples", "ours s", "Captum defaults s", "speed-up", "ours peak MB",
                            "Captum peak MB", "max |difference|"], rows)
    print(f"Attribution of {args.new_tokens} generated tokens to a {args.prompt_tokens}-token prompt, "
          f"SmolLM2-135M, on {device_name()}\n\n{table}")


if __name__ == "__main__":
    main()
