"""Attention capture against transformers' own eager output_attentions, on both packaged models."""

import re

import numpy as np
import pytest
import torch
import traitlets
from transformers import AutoModel, AutoModelForCausalLM

import llm_magics
from llm_magics import LLMError, Session
from llm_magics.inspect.attention import capture
from llm_magics.views.attention import AttentionView
from support import DEVICE, DTYPE, run, tol

TEXT = "The cat sat on the mat because it was tired."


# SmolLM2 (135M) is the slow one: its tests are in the slow tier; the small encoder's stay in the fast one.
@pytest.fixture(scope="module", params=[pytest.param("default", marks=pytest.mark.slow), "minilm"])
def model_pair(request, default_model_dir):
    """The model on the suite's device and dtype, and transformers' eager attentions computed there in the same
    dtype (handed back on the CPU in float32, where the captured maps are)."""
    s = Session()
    loaded = s.load(request.param, device=str(DEVICE), dtype=str(DTYPE).removeprefix("torch."))
    auto = AutoModelForCausalLM if loaded.kind == "causal" else AutoModel
    eager = auto.from_pretrained(loaded.source, attn_implementation="eager", dtype=loaded.dtype).to(loaded.device)
    with torch.no_grad():
        inputs = loaded.tokenizer(TEXT, return_tensors="pt").to(loaded.device)
        reference = tuple(a.float().cpu() for a in eager(**inputs, output_attentions=True).attentions)
    return s, loaded, reference


def test_capture_equals_eager_output_attentions(model_pair):
    s, loaded, reference = model_pair
    last = len(reference) - 1
    captured = capture(loaded, TEXT, layers=[0, last])
    assert sorted(captured.weights) == [0, last]  # only the asked layers are kept
    for layer in (0, last):
        weights = captured.weights[layer]
        torch.testing.assert_close(weights, reference[layer][0], **tol(1e-5))
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]), **tol(1e-5))
    upper = torch.triu(captured.weights[0], diagonal=1)
    if loaded.kind == "causal":
        assert captured.causal and upper.abs().max() == 0
    else:
        assert not captured.causal and upper.abs().max() > 0.01
    assert loaded.model.config._attn_implementation == "sdpa"  # ordinary runs stay on SDPA


def test_only_asked_heads_are_computed(model_pair):
    s, loaded, reference = model_pair
    captured = capture(loaded, TEXT, layers=1, heads=[0, 2])
    assert captured.weights[1].shape[0] == 2
    torch.testing.assert_close(captured.head(1, 2), reference[1][0, 2], **tol(1e-5))


def test_kept_queries_and_keys_give_every_layer(model_pair):
    s, loaded, reference = model_pair
    captured = capture(loaded, TEXT, keep_queries_keys=True)
    assert sorted(captured.queries_keys) == list(range(len(reference)))
    for layer in range(len(reference)):
        torch.testing.assert_close(captured.layer_weights(layer), reference[layer][0], **tol(1e-5))


def test_explain_detects_and_names_the_sinks(model_pair):
    """Sinks are the positions drawing more than SINK_SHARE of the attention on average (computed here from
    transformers' eager attentions), not a fixed position 0; the rollout row has them dropped, and no
    other token becomes the new sink (the old rollout put 0.99 on the second token)."""
    from llm_magics.inspect.attention import SINK_SHARE, without_sinks

    s, loaded, reference = model_pair
    captured = capture(loaded, TEXT, thumbnails=8, rollout=True)
    layers, heads = len(reference), reference[0].shape[1]
    assert captured.thumbnails.shape == (layers, heads, 8, 8)
    torch.testing.assert_close(captured.rollout.sum(-1), torch.ones(captured.rollout.shape[0]), **tol(1e-4))
    mean = torch.stack([a[0].mean(0) for a in reference]).mean(0)  # (n, n): layers and heads averaged
    n = mean.shape[0]
    if loaded.kind == "causal":
        shares = [mean[j + 1 :, j].mean().item() if j < n - 1 else 0.0 for j in range(n)]
    else:
        shares = [(mean[:, j].sum() - mean[j, j]).item() / (n - 1) for j in range(n)]
    expected = {j for j in range(n) if shares[j] > SINK_SHARE}
    explanation = s.explain(TEXT)
    sinks = explanation["sinks"]
    assert explanation["sink_shares"] == pytest.approx([shares[j] for j in sinks], abs=1e-4)
    assert explanation["sink_tokens"] == [explanation["tokens"][j] for j in sinks]
    row = np.array(explanation["rollout"])
    assert row.sum() == pytest.approx(1.0, abs=1e-4) and all(row[j] == 0 for j in sinks)
    if loaded.kind == "causal":
        assert set(sinks) == expected and 0 in sinks and explanation["target"] == "next token after '.'"
        raw = captured.rollout[-1]
        assert raw.argmax() == 0  # undropped, the sink takes the biggest share
        torch.testing.assert_close(torch.tensor(row, dtype=torch.float32), without_sinks(raw, sinks), **tol(1e-5))
        assert row.max() < 0.9  # no new sink on the second token
        assert sum(explanation["saliency"]) == pytest.approx(1.0, abs=1e-4) and explanation["predicted"]
    else:
        special = {0, n - 1}  # [CLS] and [SEP] are always treated as sinks in an encoder
        assert set(sinks) == expected | special
        assert explanation["target"].startswith("[CLS]")


@pytest.mark.slow
def test_explain_gradient_x_input_and_rank_correlation(session):
    """Gradient × input of the predicted token's log-probability, by hand with autograd (the oracle for
    Captum's InputXGradient behind it), on the rollout's scale; ρ against scipy's spearmanr."""
    from scipy.stats import spearmanr

    loaded = session.loaded
    explanation = session.explain(TEXT)
    ids = loaded.tokenizer(TEXT, return_tensors="pt")["input_ids"].to(loaded.device)
    embeddings = loaded.model.get_input_embeddings()(ids).detach().requires_grad_(True)
    with torch.enable_grad():
        logits = loaded.model(inputs_embeds=embeddings).logits[0, -1]
        predicted = int(logits.argmax())
        torch.log_softmax(logits, -1)[predicted].backward()
    raw = (embeddings.grad * embeddings).sum(-1)[0].abs().detach().float().cpu()
    sinks = explanation["sinks"]
    raw[sinks] = 0
    np.testing.assert_allclose(explanation["saliency"], (raw / raw.sum()).numpy(), **tol(1e-4, 1e-7))
    assert explanation["predicted"] == loaded.tokenizer.decode([predicted])
    kept = [i for i in range(len(explanation["tokens"])) if i not in sinks]
    rho = spearmanr([explanation["rollout"][i] for i in kept], [explanation["saliency"][i] for i in kept]).statistic
    assert explanation["agreement"] == pytest.approx(rho, abs=1e-9)
    assert -1 <= rho <= 1


def test_layer_switch_reuses_the_one_forward_pass(model_pair):
    s, loaded, reference = model_pair
    passes = []
    hook = loaded.model.register_forward_hook(lambda *args: passes.append(1))
    try:
        view = AttentionView(loaded, TEXT)
        assert len(passes) == 1
        n = len(view.tokens)
        for layer in range(view.num_layers):
            for head in (-1, 3):
                view.layer, view.head = layer, head
                assert (view.shown_layer, view.shown_head) == (layer, head)  # the data names itself
                expected = reference[layer][0]
                torch.testing.assert_close(view.layer_weights(layer), expected, **tol(1e-5))
                sent = np.frombuffer(view.weights, np.uint8).reshape(-1, n, n)
                maps = expected.mean(0) if head < 0 else expected[head]
                assert view.weight_heads[0] == head
                peaks = np.frombuffer(view.row_peaks, np.float32).reshape(-1, n)[0]
                np.testing.assert_allclose(peaks, maps.max(-1).values.numpy(), **tol(1e-5, 1e-7))
                scaled = (maps / maps.max(-1, keepdim=True).values * 255).round().numpy()
                assert np.abs(sent[0] - scaled).max() <= 1
        assert len(passes) == 1  # no new forward pass for any layer or head
    finally:
        hook.remove()
    # "all heads" in a short text also sends each head for the head view's per-head colours.
    view.head = -1
    assert view.weight_heads == [-1] + list(range(view.num_heads))
    view.view = "model"
    assert len(view.thumbnails) == view.num_layers * view.num_heads * view.thumbnail_size**2
    with pytest.raises(traitlets.TraitError):
        view.layer = 99


def test_saved_notebook_keeps_a_static_picture(model_pair):
    s, loaded, reference = model_pair
    view = AttentionView(loaded, TEXT, layer=1, head=2, view="matrix")
    data, metadata = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data  # the live widget when the kernel runs
    static = data["text/html"]
    assert "<script" not in static and "data:image/png;base64," in static
    assert 'data-layer="1"' in static and "layer 1 · head 2" in static
    for token in ("cat", "mat", "tired"):
        assert re.search(f">·?{token}<", static)  # row and column labels
    assert static.count("llm-row-label") == static.count("llm-col-label") == len(view.tokens)
    if loaded.kind == "causal":
        view.view = "lens"
        lens = view._repr_mimebundle_()[0]["text/html"]
        assert "logit lens" in lens and "llm-lens-static" in lens and "layer 29" in lens


def test_head_view_opens_on_the_top_3_heads_by_entropy(model_pair):
    """Not every head into the sink, not 'mean of heads': the layer's 3 most spread-out heads, by the mean
    row entropy of transformers' eager attentions; a layer switch picks that layer's 3."""
    s, loaded, reference = model_pair

    def top3(layer):
        p = reference[layer][0].double()
        entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean(-1)
        return sorted(entropy.argsort(descending=True)[:3].tolist())

    last = len(reference) - 1
    view = AttentionView(loaded, TEXT, view="head")
    assert view.head == -1 and view.head_set == view.entropy_heads == top3(last)
    assert (
        f"head view · layer {last} · heads {', '.join(map(str, top3(last)))} (top 3 by attention entropy)"
        in view.static_html()
    )
    view.layer = 2
    assert view.head_set == top3(2)
    view.head_set = [0, 1]  # a chip toggled: no longer the top 3
    assert "heads 0, 1 ·" in view.static_html()
    assert set(re.findall(r"data-head='(-?\d+)'", view.static_html())) == {"0", "1"}  # only their lines


def test_snapshot_keeps_the_last_view_and_follows_the_theme(model_pair):
    """The saved text/html is the state the user left (view, layer, head, zoom), and its pictures are
    transparent where there is no attention (no white block in a dark theme)."""
    import base64
    import zlib

    s, loaded, reference = model_pair
    view = AttentionView(loaded, TEXT, view="head")
    view.view, view.layer, view.head = "matrix", 3, 4
    view.zoom = [2.0, 1.0, 5.0]
    static = view._repr_mimebundle_()[0]["text/html"]
    assert 'data-view="matrix"' in static and 'data-layer="3"' in static and 'data-head="4"' in static
    assert 'data-zoom="2,1,5"' in static and "zoomed to rows 2..6, columns 1..5" in static
    assert static.count("llm-row-label") == static.count("llm-col-label") == 5
    assert not re.search(r"#fff\b|#ffffff|rgb\(255,\s*255,\s*255\)|:\s*white", static)
    assert "background:transparent" in static and "color:inherit" in static
    png = base64.b64decode(re.search(r"data:image/png;base64,([^\"]+)", static).group(1))
    assert png[25] == 6  # colour type 6: RGBA
    # The picture's alpha is the square root of each cell's share of its row max (the live view's scale).
    idat = png[png.index(b"IDAT") + 4 : png.index(b"IEND") - 8]
    height, width = int.from_bytes(png[20:24], "big"), int.from_bytes(png[16:20], "big")
    pixels = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + 4 * width)[:, 1:]
    alpha = pixels.reshape(height, width, 4)[..., 3]
    shown = reference[3][0, 4].numpy()[2:7, 1:6]
    expected = np.sqrt(shown / shown.max(-1, keepdims=True)) * 255
    np.testing.assert_allclose(alpha, expected, atol=1.01)
    if loaded.kind == "causal":
        assert alpha.min() == 0  # the masked (future) cells: fully transparent
    view.view = "model"
    static = view.static_html()
    assert 'data-view="model"' in static and "llm-model-static" in static
    view.view = "head"
    assert 'data-view="head"' in view.static_html() and "llm-head-static" in view.static_html()


def test_bad_attention_input():
    s = Session()
    loaded = s.load("minilm")
    with pytest.raises(LLMError, match="layer 6 is out of range: this model has layers 0..5"):
        capture(loaded, TEXT, layers=6)
    with pytest.raises(LLMError, match="head 12 is out of range"):
        capture(loaded, TEXT, heads=[12])
    with pytest.raises(LLMError, match="head 12 is out of range: this model has heads 0..11"):
        AttentionView(loaded, TEXT, head=12)
    with pytest.raises(LLMError, match="text is empty"):
        capture(loaded, "  ")
    with pytest.raises(LLMError, match="longer than the model's context of 512"):
        capture(loaded, "word " * 700)


@pytest.mark.slow
def test_attention_magic(shell, capsys, magic_session):
    view = run(shell, "attention --layer 2 --head 1 The cat sat on the mat")
    assert isinstance(view, AttentionView) and view.layer == 2 and view.head == 1
    assert view.tokens[-1].strip() == "mat"
    capsys.readouterr()
    for line, expected in [
        ("attention --head 99 The cat", "llm attention: head 99 is out of range: this model has heads 0..8"),
        ("attention --layer 99 The cat", "llm attention: layer 99 is out of range: this model has layers 0..29"),
    ]:
        run(shell, line)
        err = capsys.readouterr().err
        assert err.strip() == expected  # one line, no traceback
    view = run(shell, "attention --backend bertviz --layer 1 --view head", "The cat sat")
    assert isinstance(view, AttentionView) and view.layer == 1  # our view, not a blank box
    assert "cdnjs" in capsys.readouterr().out  # ... and one line saying why
    # --explain: rollout and gradient x input side by side (one table, one scale), sinks named, and rho.
    from IPython.core import display_functions

    shown = []
    original = display_functions.publish_display_data
    display_functions.publish_display_data = lambda data, **kwargs: shown.append(data)
    try:
        shell.run_cell("%%llm attention --explain\nThe cat sat on the mat")
    finally:
        display_functions.publish_display_data = original
    assert isinstance(shell.user_ns["_llm"], AttentionView)
    html = [d["text/html"] for d in shown if "llm-explain" in d.get("text/html", "")]
    assert len(html) == 1
    html = html[0]
    assert "why: next token after &#x27;mat&#x27;" in html and "linear-gradient" in html
    assert 'data-name="attention rollout"' in html and 'data-name="gradient × input"' in html
    assert "attention sinks (dropped from both rows, struck through): The (0," in html
    assert re.search(r"Spearman rank correlation ρ = -?[01]\.\d\d over the 5 non-sink tokens", html)
    result = run(shell, "generate --greedy --max-new-tokens 4 --attention", "The capital of France is")
    assert result is llm_magics.last and result.new_tokens == 4


@pytest.mark.slow
def test_block_by_block_overview_equals_the_whole_capture(model_pair):
    """What a long text gets lazily, one block of query rows at a time (the shown map, the head entropies,
    the thumbnails, the sink shares and the rollout row, read top-down), equals the whole-matrix capture and
    transformers' eager attentions at a short text, with blocks smaller than the text."""
    from llm_magics.inspect import attention

    s, loaded, reference = model_pair
    whole = capture(loaded, TEXT, thumbnails=4, rollout=True)
    kept = capture(loaded, TEXT, layers=[], keep_queries_keys=True)
    assert kept.weights == {}  # nothing of size n² kept by the widget's pass
    n = len(kept.tokens)
    block, attention.ROW_BLOCK = attention.ROW_BLOCK, 3  # several blocks, the last one short
    try:
        for layer in (0, len(reference) - 1):
            eager = reference[layer][0]
            for head in (-1, 2):
                shown = attention.layer_map(kept.queries_keys[layer], head)
                torch.testing.assert_close(shown, eager.mean(0) if head < 0 else eager[head], **tol(1e-5))
            p = eager.double()
            expected = -(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean(-1)
            entropy = attention.head_entropies(kept.queries_keys[layer])
            torch.testing.assert_close(entropy.double(), expected, **tol(1e-4))
        position = n - 1 if kept.causal else 0
        thumbnails, shares, row = attention.layer_overview(kept, 4, position)
    finally:
        attention.ROW_BLOCK = block
    torch.testing.assert_close(thumbnails, whole.thumbnails, **tol(1e-5))
    torch.testing.assert_close(shares, whole.shares, **tol(1e-5))
    torch.testing.assert_close(row, whole.rollout[position], **tol(1e-5))
    view = AttentionView(loaded, TEXT, view="matrix")
    assert view.thumbnails == b"" and view.rollout == []  # not computed until a view needs them
    view.view = "head"
    assert view.sinks == whole.sinks
    np.testing.assert_allclose(view.rollout, whole.rollout_row().numpy(), **tol(1e-5, 1e-7))
    assert len(view.thumbnails) == view.num_layers * view.num_heads * min(24, n) ** 2


def _pooled_oracle(exact: torch.Tensor, r0: int, c0: int, span: int, f: int) -> np.ndarray:
    """Rows scaled to their max over all keys, the box cut out, then max-pooled in f × f blocks (zero-padded),
    with numpy's reshape: computed independently of llm_magics' block-by-block code."""
    scaled = (exact / exact.max(-1, keepdim=True).values).numpy()[r0 : r0 + span, c0 : c0 + span]
    side = -(-span // f)
    padded = np.zeros((side * f, side * f), np.float32)
    padded[:span, :span] = scaled
    return padded.reshape(side, f, side, f).max(axis=(1, 3))


@pytest.mark.slow
def test_layer_image_pools_and_tiles_like_the_eager_map(model_pair):
    """The long-text matrix picture (rows scaled to their max, max-pooled; or an exact box) equals the same
    thing computed from transformers' eager attentions, with row blocks smaller than the box."""
    from llm_magics.inspect import attention

    s, loaded, reference = model_pair
    kept = capture(loaded, TEXT, layers=[], keep_queries_keys=True)
    n = len(kept.tokens)
    block, attention.ROW_BLOCK = attention.ROW_BLOCK, 3  # blocks straddle the pooled rows unless aligned
    try:
        for layer, head in ((0, -1), (len(reference) - 1, 2)):
            eager = reference[layer][0]
            exact = eager.mean(0) if head < 0 else eager[head]
            for box, pixels in (((0, 0, n), 4), ((0, 0, n), n), ((1, 2, 7), 3), ((2, 1, 5), 5)):
                image, peaks, f = attention.layer_image(kept.queries_keys[layer], head, box, pixels)
                r0, c0, span = box
                assert f == -(-span // pixels) and image.shape == (-(-span // f),) * 2
                np.testing.assert_allclose(image.numpy(), _pooled_oracle(exact, r0, c0, span, f), **tol(1e-5, 1e-7))
                np.testing.assert_allclose(
                    peaks.numpy(), exact.max(-1).values[r0 : r0 + span].numpy(), **tol(1e-5, 1e-7)
                )
    finally:
        attention.ROW_BLOCK = block


@pytest.mark.slow
def test_long_matrix_sends_a_pooled_overview_and_exact_tiles(model_pair, monkeypatch):
    """Past MATRIX_PIXELS tokens the matrix view sends the pooled overview, never the n² map; a zoom gets the
    square in sight as an exact tile (its rows only), a layer switch recomputes both, and the head view
    (which needs every cell) gets the exact map back."""
    from llm_magics.views import attention as views

    s, loaded, reference = model_pair
    monkeypatch.setattr(views, "MATRIX_PIXELS", 4)  # a short text plays the long one
    view = AttentionView(loaded, TEXT, view="matrix", layer=1)
    n, f = len(view.tokens), -(-len(view.tokens) // 4)
    side = -(-n // f)
    assert view.weights_pool == f and len(view.weights) == side * side and view.tile_box == []
    exact = reference[1][0].mean(0)
    sent = np.frombuffer(view.weights, np.uint8).reshape(side, side) / 255
    assert np.abs(sent - _pooled_oracle(exact, 0, 0, n, f)).max() <= 0.5 / 255 + 1e-6
    np.testing.assert_allclose(
        np.frombuffer(view.row_peaks, np.float32), exact.max(-1).values.numpy(), **tol(1e-5, 1e-7)
    )

    view.zoom = [2.0, 1.0, 4.0]  # what the browser sends once a zoom gesture settles
    assert view.tile_box == [1, -1, 2, 1, 4, 1]
    tile = np.frombuffer(view.tile, np.uint8).reshape(4, 4) / 255
    assert np.abs(tile - _pooled_oracle(exact, 2, 1, 4, 1)).max() <= 0.5 / 255 + 1e-6
    np.testing.assert_allclose(
        np.frombuffer(view.tile_peaks, np.float32), exact.max(-1).values[2:6].numpy(), **tol(1e-5, 1e-7)
    )
    static = view.static_html()
    assert "zoomed to rows 2..5, columns 1..4" in static and static.count("llm-row-label") == 4

    view.layer, view.head = 3, 2  # both pictures follow the selection
    assert view.tile_box == [3, 2, 2, 1, 4, 1] and (view.shown_layer, view.shown_head) == (3, 2)
    exact = reference[3][0][2]
    tile = np.frombuffer(view.tile, np.uint8).reshape(4, 4) / 255
    assert np.abs(tile - _pooled_oracle(exact, 2, 1, 4, 1)).max() <= 0.5 / 255 + 1e-6
    view.zoom = []
    assert view.tile_box == []

    view.view = "head"  # the head view draws lines from every cell: the exact map again
    assert view.weights_pool == 1 and len(view.weights) == n * n
    view.view = "matrix"
    assert view.weights_pool == f and len(view.weights) == side * side
