"""%%llm lr-find: fastai's suggestions on a hand-made curve, a real sweep, and a bit-for-bit restore."""

import json
import random

import numpy as np
import pytest
import torch

from llm_magics import LLMError, Session, lr_finder
from support import DATA, one_error_line, run

CORPUS = (DATA / "tiny_corpus.txt").read_text() * 5
SMALL = dict(seq_len=16, batch_size=2, progress=False)


# fastai's definitions (fastai/callback/schedule.py), written out with torch as fastai does: the oracle.
def fastai_valley(lrs, losses, num_it):
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lrs[idx])


def fastai_minimum(lrs, losses, num_it):
    return lrs[torch.argmin(losses)].item() / 10


def fastai_steep(lrs, losses, num_it):
    grads = (losses[1:] - losses[:-1]) / (lrs[1:].log() - lrs[:-1].log())
    return lrs[grads.argmin()].item()


def fastai_suggestions(all_lrs, all_losses, num_it):
    lrs, losses = torch.tensor(all_lrs[num_it // 10 : -5]), torch.tensor(all_losses[num_it // 10 : -5])
    return {
        f.__name__.removeprefix("fastai_"): f(lrs, losses, num_it)
        for f in (fastai_valley, fastai_minimum, fastai_steep)
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_suggestions_follow_fastai_on_a_hand_made_curve(seed):
    """A plateau, a noisy valley, then divergence, over fastai's default 100-step sweep from 1e-7 to 10."""
    rng = np.random.default_rng(seed)
    lrs = [1e-7 * (10 / 1e-7) ** (k / 100) for k in range(100)]
    x = np.log10(lrs)
    losses = 5 - 2 / (1 + np.exp(-(x + 3) * 2)) + np.where(x > -1, (x + 1) ** 2 * 3, 0) + rng.normal(0, 0.02, 100)
    ours = {name: lr for name, (lr, _) in lr_finder.suggest(lrs, list(losses), 100).items()}
    expected = fastai_suggestions(lrs, list(losses), 100)
    assert ours.keys() == expected.keys()
    for name in expected:
        assert ours[name] == pytest.approx(expected[name], rel=1e-6), name
    assert 1e-5 < ours["valley"] < 1e-1  # on the way down, not on the plateau or past the minimum


def _state(s):
    return {name: p.detach().clone() for name, p in s.model.state_dict().items()}


def _rng():
    return torch.get_rng_state().clone(), random.getstate(), json.dumps(np.random.get_state(legacy=False), default=str)


def _same(before, after):
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)


@pytest.mark.slow
def test_a_sweep_restores_the_full_model_and_rng_bit_for_bit():
    s = Session()
    s.train(text=CORPUS, from_scratch=True, steps=3, **SMALL)
    model, weights, rng = s.model, _state(s), _rng()
    result = s.lr_find(text=CORPUS, num_steps=30, **SMALL)
    assert s.model is model
    _same(weights, _state(s))
    assert torch.equal(rng[0], _rng()[0]) and rng[1:] == _rng()[1:]
    # a real sweep: step k used 1e-7 * 1e8 ** ((k-1)/30), and the optimizer's next lr (the row's lr) follows it
    assert result.kind == "lr-find" and 10 <= result.steps_done <= 30
    used = [row["lr_used"] for row in result.history]
    assert used == pytest.approx([1e-7 * 1e8 ** (k / 30) for k in range(result.steps_done)], rel=1e-9)
    assert [row["lr"] for row in result.history] == pytest.approx(
        [1e-7 * 1e8 ** (k / 30) for k in range(1, result.steps_done + 1)], rel=1e-9
    )
    # stopped at 4x the best smoothed loss, or ran to the end
    smoothed = [row["smoothed_loss"] for row in result.history]
    assert result.steps_done == 30 or smoothed[-1] > 4 * min(smoothed)
    assert all(s <= 4 * min(smoothed[: i + 1]) for i, s in enumerate(smoothed[:-1]))
    expected = fastai_suggestions(used, smoothed, 30)
    assert result.suggested_lr == pytest.approx(expected["valley"], rel=1e-6)  # the oracle is float32
    assert s.suggested_lr == result.suggested_lr
    # --lr suggested: the next run peaks at it; a new session (a restart) reads it back from the runs dir
    trained = s.train(text=CORPUS, steps=4, warmup=1, lr="suggested", **SMALL)
    assert max(row["lr"] for row in trained.history) == pytest.approx(result.suggested_lr, rel=1e-6)
    assert Session().suggested_lr == result.suggested_lr


def test_a_lora_sweep_leaves_the_model_without_an_adapter_bit_for_bit(tmp_path):
    from peft import PeftModel

    s = Session()
    s.train(text=CORPUS, from_scratch=True, steps=2, **SMALL)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"text": line}) + "\n" for line in CORPUS.splitlines() if line.strip()))
    model, weights, rng = s.model, _state(s), _rng()
    result = s.lr_find(finetune=True, data=str(data), lora=True, num_steps=20, **SMALL)
    assert result.kind == "lr-find" and result.steps_done >= 10 and result.suggested_lr
    assert s.model is model and not isinstance(s.model, PeftModel)
    assert not any("lora" in name for name in s.model.state_dict())
    _same(weights, _state(s))
    assert torch.equal(rng[0], _rng()[0]) and rng[1:] == _rng()[1:]


def test_lr_find_magic_plots_and_sets_the_suggestion(shell, capsys):
    run(shell, "train --from-scratch --steps 2 --seq-len 16 --no-widget --no-progress --lr suggested", CORPUS)
    assert (
        one_error_line(capsys)
        == "llm train: --lr suggested needs an earlier `%%llm lr-find` (none is recorded in the runs dir)"
    )
    run(shell, "train --from-scratch --steps 2 --seq-len 16 --batch-size 2 --no-widget --no-progress", CORPUS)
    result = run(shell, "lr-find --num-steps 20 --seq-len 16 --batch-size 2 --no-progress", CORPUS)
    out = capsys.readouterr().out
    assert shell.user_ns["_llm"].suggested_lr == result.suggested_lr and result.suggested_lr
    assert f"suggested lr {result.suggested_lr:.2e} (valley;" in out and "The model is unchanged." in out
    figure = lr_finder.figure(result)["application/vnd.plotly.v1+json"]
    assert figure["layout"]["xaxis"]["type"] == "log"
    assert [t["name"].split(":")[0] for t in figure["data"][1:]] == ["valley", "minimum", "steep"]
    with pytest.raises(LLMError, match="--num-steps must be at least 10"):
        Session().lr_find(text=CORPUS, num_steps=5)
