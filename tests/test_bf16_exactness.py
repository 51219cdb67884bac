"""Gradient accumulation and resume under bf16 autocast, the precision a GPU trains in. The CPU autocasts
to bf16 too (accelerate's ACCELERATE_MIXED_PRECISION=bf16, what `accelerate launch` sets), so these run in CI;
with LLM_MAGICS_TEST_DEVICE=cuda they run on the GPU. The tolerance: support.LOSS_ATOL at bf16."""

import pytest
import torch

from llm_magics import Session
from support import DATA, DEVICE, LOSS_ATOL, TWO_LAYER_CONFIG

CORPUS = (DATA / "tiny_corpus.txt").read_text()


@pytest.fixture
def bf16(monkeypatch, tmp_path):
    """bf16 autocast for every run of the test, and a forward hook that records the dtype the model's
    Linear layers compute in (so a test cannot pass in fp32 by accident)."""
    import json

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    dtypes = set()

    def hook(module, args, output):
        if isinstance(module, torch.nn.Linear) and module.training:
            dtypes.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    config = tmp_path / "llama.json"
    config.write_text(json.dumps(TWO_LAYER_CONFIG))
    yield str(config), dtypes
    handle.remove()


def _losses(result):
    return torch.tensor([row["loss"] for row in result.history])


def test_grad_accum_2x4_equals_batch_8_under_bf16(bf16):
    config, dtypes = bf16
    common = dict(text=CORPUS, from_scratch=True, config=config, steps=3, seq_len=32, lr=1e-3, progress=False, seed=0)
    accumulated, whole = Session(), Session()
    two = accumulated.train(batch_size=4, grad_accum=2, device=str(DEVICE), **common)
    one = whole.train(batch_size=8, device=str(DEVICE), **common)
    assert dtypes == {torch.bfloat16}, dtypes  # the forward passes ran in bf16
    assert two.tokens == one.tokens == 3 * 8 * 32
    # Adam's steps hide a gradient's scale, not its direction: the losses after the first step tell a batch of
    # 8 from one of 4 (3e-2 apart), the weights after 3 small steps less clearly.
    torch.testing.assert_close(_losses(two), _losses(one), atol=LOSS_ATOL[torch.bfloat16], rtol=0)


def test_resume_under_bf16_reproduces_the_uninterrupted_run(bf16, tmp_path):
    config, dtypes = bf16
    common = dict(
        text=CORPUS, config=config, steps=6, lr=3e-3, seq_len=16, batch_size=2, progress=False, device=str(DEVICE)
    )
    straight = Session().train(from_scratch=True, **common)
    Session().train(from_scratch=True, checkpoint_every=3, output_dir=str(tmp_path / "a"), **common)
    resumed = Session().train(from_scratch=True, resume=str(tmp_path / "a" / "checkpoint-3"), **common)
    assert dtypes == {torch.bfloat16}, dtypes
    assert [row["step"] for row in resumed.history] == list(range(1, 7))
    torch.testing.assert_close(_losses(resumed), _losses(straight), atol=LOSS_ATOL[torch.bfloat16], rtol=0)
