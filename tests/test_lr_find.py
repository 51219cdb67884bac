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


def test_smoothing_is_fastais_debiased_average_and_stops_at_4x_the_best():
    """A known loss sequence through the sweep's step callback, against fastai's AvgSmoothLoss written out:
    avg = beta * avg + (1 - beta) * loss, smoothed = avg / (1 - beta ** (i + 1)), beta = 0.98."""
    from llm_magics.base.interrupts import StopFlag

    losses = [5.0, 4.0, 4.5, 3.0, 2.0, 2.5, 1.0, 0.5, 0.7, 3.0, 40.0, 400.0, 9000.0]
    beta, average, expected = 0.98, 0.0, []
    for i, loss in enumerate(losses):
        average = beta * average + (1 - beta) * loss
        expected.append(average / (1 - beta ** (i + 1)))
    session = Session()
    session.stop_flag = StopFlag()
    watcher = lr_finder.SweepWatcher(session, 1e-7, 10, len(losses), "valley")
    for step, loss in enumerate(losses, 1):
        watcher({"step": step, "loss": loss}, None)
        best = min(expected[:step])
        # the sweep is stopped once the smoothed loss passes 4x its best, not before
        assert session.stop_flag.requested == any(e > 4 * min(expected[: i + 1]) for i, e in enumerate(expected[:step]))
        assert best == watcher.best
    assert watcher.losses == pytest.approx(expected, rel=1e-12)
    assert watcher.losses[0] == losses[0]  # debiased: the first point is the first loss, not 2% of it
    assert session.stop_flag.requested  # 9000 smoothed is far past 4x the best
    assert watcher.lrs == pytest.approx([1e-7 * 1e8 ** (k / len(losses)) for k in range(len(losses))], rel=1e-12)


# A fixed curve on lrs 10 ** (i - 10), i = 0..19, 20 planned steps: fastai's window is points 2..14.
CURVE = [9.0, 8.0] + [4.0, 6.0, 5.9, 5.8, 5.0, 3.9, 3.8, 3.7, 3.6, 4.5, 6.0, 7.0, 8.0] + [9.0, 10.0, 11.0, 12.0, 13.0]


def test_suggestions_on_a_fixed_curve_equal_the_hand_computed_answers():
    """Worked by hand on the window [4.0, 6.0, 5.9, 5.8, 5.0, 3.9, 3.8, 3.7, 3.6, 4.5, 6.0, 7.0, 8.0]:
    - minimum: the lowest loss 3.6 is window point 8 (sweep point 10, lr 1): suggest 1 / 10;
    - steep: the steepest fall, 5.0 -> 3.9, starts at window point 4 (sweep point 6): lr 1e-4;
    - valley: the longest decreasing run 6.0 .. 3.6 is window points 1..8 (8 long, ending at 8); fastai
      takes start = end - length = 0 and index start + int(8/3) + int(8/3/2) = 3 (sweep point 5): lr 1e-5."""
    lrs = [10.0 ** (i - 10) for i in range(20)]
    suggestions = {name: (lr, *point) for name, (lr, point) in lr_finder.suggest(lrs, CURVE, 20).items()}
    assert suggestions["minimum"] == pytest.approx((0.1, 1.0, 3.6))  # (suggested lr, the marked point)
    assert suggestions["steep"] == pytest.approx((1e-4, 1e-4, 5.0))
    assert suggestions["valley"] == pytest.approx((1e-5, 1e-5, 5.8))
    # a NaN in the window (the 3.6) cuts it there: the lowest loss left is the 3.7 at lr 0.1
    cut = CURVE[:10] + [float("nan")] + CURVE[11:]
    lr, point = lr_finder.suggest(lrs, cut, 20)["minimum"]
    assert (lr, *point) == pytest.approx((1e-2, 1e-1, 3.7))


def _draw_random_numbers():
    """Move every global generator away from any fresh seed, so that 'restored' cannot mean 're-seeded'."""
    torch.rand(7)
    random.random()
    np.random.rand(3)
    if torch.cuda.is_available():
        torch.rand(5, device="cuda")


def test_lr_find_puts_back_the_rng_state_it_found(tiny_config):
    """torch, numpy, Python's random (and CUDA's) after the sweep are exactly as before it, and that state is
    not a freshly seeded one."""
    from transformers import set_seed

    s = Session()
    s.train(text=CORPUS, from_scratch=True, config=tiny_config, steps=1, **SMALL)
    _draw_random_numbers()
    before = _rng()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    s.lr_find(text=CORPUS, config=tiny_config, num_steps=10, **SMALL)
    after = _rng()
    assert torch.equal(before[0], after[0]) and before[1:] == after[1:]
    assert all(torch.equal(a, b) for a, b in zip(cuda, torch.cuda.get_rng_state_all() if cuda else []))
    set_seed(0)
    assert not torch.equal(_rng()[0], before[0]) and _rng()[1:] != before[1:]  # the test can fail


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
    _draw_random_numbers()  # else the state before equals a fresh set_seed(0): a re-seed would pass
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
    _draw_random_numbers()
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
