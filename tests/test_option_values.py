"""Every documented option value that `untested-options` listed, run through the magic the way the README
writes it, with what it promises checked against an oracle computed here: early stopping's rule replayed on
the recorded eval losses, fastai's suggestions on the recorded sweep, Captum's axioms and hand-made
ablations, the one-forward-per-patch reference, the weights on disk, and the trackers' own stores read back."""

import json
import math
import struct
from pathlib import Path

import pytest
import torch
from IPython.utils.capture import capture_output
from test_lr_find import fastai_suggestions
from test_patching import CLEAN, CORRUPTED, reference

import llm_magics
from support import DATA, one_error_line, run

pytestmark = pytest.mark.slow

CORPUS = (DATA / "tiny_corpus.txt").read_text() * 5
QUIET = "--no-widget --no-progress"
TINY = f"--seq-len 16 --batch-size 2 {QUIET}"


# --- early stopping's --min-delta ---------------------------------------------------------------------------


def replayed_stop(evals: list[dict], patience: int, min_delta: float) -> int | None:
    """Keras' rule, written out: the step at which `patience` evaluations in a row were not lower than the
    best by more than min_delta."""
    best, waited = math.inf, 0
    for entry in evals:
        if entry["eval_loss"] < best - min_delta:
            best, waited = entry["eval_loss"], 0
        else:
            waited += 1
            if waited >= patience:
                return entry["step"]
    return None


@pytest.fixture
def english(tmp_path):
    path = tmp_path / "english.txt"
    path.write_text((DATA / "tiny_corpus.txt").read_text()[:600])
    return path


def test_min_delta_decides_when_early_stopping_fires(shell, capsys, english):
    """Trained on 'ab' repeated and evaluated on English, the eval loss first falls by little and then rises.
    --min-delta 0 and a --min-delta larger than any improvement stop where the rule replayed on the recorded
    eval losses says, and the large one stops at the first chance (patience 2 x every 2 steps after step 2)."""
    line = f"train --from-scratch --steps 60 --lr 1e-2 --eval-data {english} --eval-every 2 --early-stopping 2 {TINY}"
    stops = {}
    for delta in ("0", "5"):
        result = run(shell, f"{line} --min-delta {delta}", "ab" * 2000)
        assert result.stopped_early and result.steps_done < 60
        assert result.steps_done == replayed_stop(result.eval_history, 2, float(delta))
        assert result.options["min_delta"] == float(delta)
        stops[delta] = result.steps_done
    assert stops["5"] == 6 < stops["0"]
    # the same for finetune, on the model just trained
    finetuned = run(
        shell,
        f"finetune --steps 60 --lr 1e-2 --eval-data {english} --eval-every 2 --early-stopping 2 --min-delta 5 {TINY}",
        "ab" * 2000,
    )
    assert finetuned.kind == "finetune" and finetuned.steps_done == 6 == replayed_stop(finetuned.eval_history, 2, 5)
    # lr-find has no early stopping: the option is refused, not ignored
    capsys.readouterr()
    run(shell, f"lr-find --num-steps 20 --min-delta 0.1 {TINY}", CORPUS)
    assert (
        one_error_line(capsys) == "llm lr-find: lr-find takes no --min-delta: it sweeps the lr on the training "
        "data only"
    )


# --- lr-find: the sweep's bounds and each suggestion ---------------------------------------------------------


@pytest.mark.parametrize("option", ["--suggestion valley", "--suggestion minimum", "--suggestion steep"])
def test_lr_find_bounds_and_each_suggestion_follow_fastai(shell, capsys, option):
    name = option.split()[1]
    run(shell, f"train --from-scratch --steps 1 {TINY}", CORPUS)
    result = run(shell, f"lr-find --start-lr 1e-5 --end-lr 1 --num-steps 20 {option} {TINY}", CORPUS)
    used = [row["lr_used"] for row in result.history]
    # the sweep runs from --start-lr towards --end-lr: 1e-5 * 1e5 ** (k / 20), every lr inside the bounds
    assert used == pytest.approx([1e-5 * 1e5 ** (k / 20) for k in range(len(used))], rel=1e-9)
    assert 1e-5 == used[0] and max(used) < 1
    expected = fastai_suggestions(used, [row["smoothed_loss"] for row in result.history], 20)
    assert result.suggested_lr == pytest.approx(expected[name], rel=1e-6)
    assert llm_magics.session.suggested_lr == result.suggested_lr
    assert f"suggested lr {result.suggested_lr:.2e} ({name};" in capsys.readouterr().out
    # `--lr suggested` then peaks at the chosen suggestion
    trained = run(shell, f"train --steps 3 --warmup 1 --lr suggested {TINY}", CORPUS)
    assert max(row["lr"] for row in trained.history) == pytest.approx(expected[name], rel=1e-6)


# --- --compare and %llm runs --plot ------------------------------------------------------------------------


def _final_chart(shell, line):
    """Run a training magic with its live chart; the static figure its output ends as (plotly JSON)."""
    with capture_output() as captured:
        result = run(shell, line, CORPUS)
    figures = [
        o.data["application/vnd.plotly.v1+json"] for o in captured.outputs if "application/vnd.plotly.v1+json" in o.data
    ]
    return result, figures[-1]


def test_compare_auto_overlays_the_previous_run_and_none_overlays_nothing(shell, tmp_path):
    where = f"--runs-dir {tmp_path} --seq-len 16 --batch-size 2 --steps 4 --widget --no-progress"
    first, chart = _final_chart(shell, f"train --from-scratch --lr 1e-3 {where}")
    assert not [t for t in chart["data"] if t.get("meta") == "llm-compare"]  # nothing earlier to show
    second, chart = _final_chart(shell, f"train --from-scratch --lr 2e-3 --compare auto {where}")
    overlays = [t for t in chart["data"] if t.get("meta") == "llm-compare"]
    assert [t["name"] for t in overlays] == ["lr=0.001"] and list(overlays[0]["x"]) == [1, 2, 3, 4]
    smoothed, average = [], 0.0  # TensorBoard's debiased EMA (0.9) of the first run's recorded losses
    for t, row in enumerate(first.history, 1):
        average = 0.9 * average + 0.1 * row["loss"]
        smoothed.append(average / (1 - 0.9**t))
    assert list(overlays[0]["y"]) == pytest.approx(smoothed)
    _, chart = _final_chart(shell, f"train --from-scratch --lr 3e-3 --compare none {where}")
    assert not [t for t in chart["data"] if t.get("meta") == "llm-compare"]
    assert second.record_id != first.record_id


def test_runs_plot_eval_loss_and_lr_draw_those_series(shell, tmp_path):
    runs = [
        run(
            shell,
            f"train --from-scratch --steps 4 --lr {lr} --eval-data {DATA / 'tiny_corpus.txt'} "
            f"--eval-every 2 --runs-dir {tmp_path} {TINY}",
            CORPUS,
        )
        for lr in ("1e-3", "2e-3")
    ]
    ids = " ".join(r.record_id for r in runs)
    bundle = run(shell, f"runs --plot eval_loss --runs-dir {tmp_path} {ids}")
    traces = bundle["application/vnd.plotly.v1+json"]["data"]
    assert [t["name"] for t in traces] == [f"{runs[0].record_id}: lr=0.001", f"{runs[1].record_id}: lr=0.002"]
    for trace, result in zip(traces, runs):
        assert list(trace["x"]) == [2, 4]
        assert list(trace["y"]) == [e["eval_loss"] for e in result.eval_history]
    assert bundle["application/vnd.plotly.v1+json"]["layout"]["yaxis"]["title"]["text"] == "eval_loss"
    bundle = run(shell, f"runs --plot lr --runs-dir {tmp_path} {ids}")
    traces = bundle["application/vnd.plotly.v1+json"]["data"]
    for trace, result in zip(traces, runs):
        assert list(trace["x"]) == [1, 2, 3, 4] and list(trace["y"]) == [row["lr"] for row in result.history]


# --- attribution methods through the magic -------------------------------------------------------------------

PROMPT = "The cat"


def _log_prob(model, target, **inputs):
    with torch.no_grad():
        return float(torch.log_softmax(model(**inputs).logits[0, -1].float(), -1)[target])


@pytest.fixture(scope="module")
def tiny_trained(shell):
    """A tiny byte-level model trained for a step in the magics' session (fast to attribute)."""
    run(shell, f"train --from-scratch --steps 1 {TINY}", CORPUS)
    return llm_magics.session.loaded


@pytest.mark.parametrize(
    "line",
    [
        "attribute --method integrated-gradients --steps 16 --target e",
        "attribute --method layer-integrated-gradients --steps 16 --target e",
        "attribute --method occlusion --target e",
        "attribute --method feature-ablation --target e",
        "attribute --method shapley-sampling --steps 3 --target e",
    ],
)
def test_attribution_methods_through_the_magic(shell, tiny_trained, line):
    """Each method's scores of the prompt tokens, checked by its definition with plain forward passes:
    occlusion and feature ablation token by token, Shapley sampling and integrated gradients by completeness
    (the scores add up to f(input) - f(baseline); IG up to its reported delta)."""
    loaded = llm_magics.session.loaded
    assert loaded is tiny_trained
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    result = run(shell, f"{line} {PROMPT}")
    method = line.split()[2]
    assert result.method == method and result.targets == ["e"]
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    target = tokenizer("e", add_special_tokens=False)["input_ids"][0]
    scores = torch.as_tensor(result.scores[0, : ids.shape[1]]).double()
    f = _log_prob(model, target, input_ids=ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    embeds = model.get_input_embeddings()(ids).detach()
    if method in ("occlusion", "feature-ablation"):
        for i in range(ids.shape[1]):
            if method == "occlusion":  # the token's embedding replaced by zeros
                cut = embeds.clone()
                cut[0, i] = 0
                expected = f - _log_prob(model, target, inputs_embeds=cut)
            else:  # the token replaced by the baseline (pad) token
                cut = ids.clone()
                cut[0, i] = pad
                expected = f - _log_prob(model, target, input_ids=cut)
            assert float(scores[i]) == pytest.approx(expected, abs=1e-5), i
        return
    if method == "integrated-gradients":
        baseline = _log_prob(model, target, inputs_embeds=torch.zeros_like(embeds))
    else:
        baseline = _log_prob(model, target, input_ids=torch.full_like(ids, pad))
    delta = abs(result.deltas[0]) if result.deltas and result.deltas[0] is not None else 0.0
    assert float(scores.sum()) == pytest.approx(f - baseline, abs=delta + 1e-4)


# --- patching sites through the magic -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory, default_model_dir):
    """test_patching's tiny random Llama with SmolLM2's tokenizer, saved as a model folder to `%llm load`."""
    from test_patching import tiny_model
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    folder = tmp_path_factory.mktemp("tiny_llama")
    tiny_model("llama", tokenizer).model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("line", ["patch --site residual", "patch --site attention", "patch --site heads"])
def test_patch_sites_through_the_magic_equal_the_reference(shell, tiny_llama_dir, line):
    run(shell, f"load {tiny_llama_dir} --device cpu --dtype float32")
    loaded = llm_magics.session.loaded
    result = run(shell, f"{line} --layers 1-2 --answer ' Paris' --wrong ' Rome'", f"{CLEAN}\n{CORRUPTED}\n")
    site = line.split()[-1]
    assert result.site == site
    ids = loaded.tokenizer([" Paris", " Rome"], add_special_tokens=False)["input_ids"]
    expected, clean_ld, corrupted_ld = reference(loaded, site, ids[0][0], ids[1][0], [1, 2])
    assert result.clean_ld == pytest.approx(clean_ld, abs=1e-4)
    assert result.corrupted_ld == pytest.approx(corrupted_ld, abs=1e-4)
    for (layer, index), score in expected.items():
        assert float(result.scores[layer, index]) == pytest.approx(score, abs=1e-4), (layer, index)
    assert torch.isnan(result.scores[0]).all()  # layer 0 was not asked for


# --- --quantize none ----------------------------------------------------------------------------------------


def test_quantize_none_loads_the_exact_weights_after_a_quantized_load(shell, default_model_dir):
    from safetensors.torch import load_file

    from llm_magics.quantization import is_quantized

    run(shell, "load default --quantize int8-dynamic")
    assert is_quantized(llm_magics.session.model)
    run(shell, "load default --quantize none")
    model = llm_magics.session.model
    assert not is_quantized(model) and llm_magics.session.status()["quantization"].startswith("none")
    on_disk = {}
    for file in Path(default_model_dir).glob("*.safetensors"):
        on_disk.update(load_file(file))
    state = model.state_dict()
    assert on_disk and all(torch.equal(state[name].cpu().to(value.dtype), value) for name, value in on_disk.items())


# --- trackers: wandb offline and mlflow's local store, read back ---------------------------------------------


def wandb_history(folder: Path) -> list[dict]:
    """The history rows of an offline wandb run, read from its .wandb file: a ':W&B' header (7 bytes), then
    LevelDB log records (crc32, length, type) in 32 KiB blocks, each a wandb protobuf Record."""
    from wandb.proto import wandb_internal_pb2

    (path,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    data, rows, chunk, position, block = path.read_bytes(), [], b"", 7, 32768
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        length, kind = struct.unpack("<HB", data[position + 4 : position + 7])
        chunk += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 0:
            break
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            if record.WhichOneof("record_type") == "history":
                rows.append(
                    {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                )
    return rows


def test_track_wandb_runs_offline_and_logs_the_history(shell, monkeypatch, tmp_path):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login: offline mode
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = run(shell, f"train --from-scratch --steps 4 --track wandb {TINY}", CORPUS)
    rows = wandb_history(Path(result.run_dir) / "trackers")
    assert [row["_step"] for row in rows] == [1, 2, 3, 4]
    assert [row["loss"] for row in rows] == [row["loss"] for row in result.history]
    assert [row["lr"] for row in rows] == [row["lr"] for row in result.history]


def test_track_mlflow_writes_the_run_folder_and_a_second_run_its_own(shell, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from mlflow.tracking import MlflowClient

    for _ in range(2):  # the second run's store is its own folder, not the first's
        result = run(shell, f"train --from-scratch --steps 4 --lr 2e-3 --track mlflow {TINY}", CORPUS)
        store = Path(result.run_dir) / "trackers" / "mlruns"
        client = MlflowClient(tracking_uri=store.as_uri())
        (experiment,) = [e for e in client.search_experiments() if e.name == "llm_magics"]
        (logged,) = client.search_runs([experiment.experiment_id])
        losses = sorted(client.get_metric_history(logged.info.run_id, "loss"), key=lambda m: m.step)
        assert [m.step for m in losses] == [1, 2, 3, 4]
        assert [m.value for m in losses] == pytest.approx([row["loss"] for row in result.history], rel=1e-12)
        lrs = sorted(client.get_metric_history(logged.info.run_id, "lr"), key=lambda m: m.step)
        assert [m.value for m in lrs] == pytest.approx([row["lr"] for row in result.history], rel=1e-12)
        assert logged.data.params["lr"] == "0.002"
