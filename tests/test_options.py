"""Documented options and values that no other test runs: each used the way the README says, with what it
promises checked (gradient accumulation against a bigger batch, the built config, the loaded dtype...)."""

import pytest
import torch

from llm_magics import Session
from llm_magics.magics import PARSER
from support import DATA, run

CORPUS = (DATA / "tiny_corpus.txt").read_text()


def test_grad_accum_takes_the_step_of_a_bigger_batch(tiny_config):
    """--grad-accum 2 x --batch-size 4 learns what --batch-size 8 learns (the OOM message recommends it)."""
    accumulated, whole = Session(), Session()
    common = dict(
        text=CORPUS, from_scratch=True, config=tiny_config, steps=3, seq_len=32, lr=1e-2, progress=False, seed=0
    )
    two = accumulated.train(batch_size=4, grad_accum=2, **common)
    one = whole.train(batch_size=8, **common)
    assert two.tokens == one.tokens == 3 * 8 * 32
    assert [r["loss"] for r in two.history] == pytest.approx([r["loss"] for r in one.history], abs=1e-4)
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(accumulated.model.state_dict()[name], value, atol=1e-5, rtol=0)


def test_grad_accum_in_the_magics(shell, capsys, tiny_config):
    import llm_magics

    result = run(
        shell,
        f"train --from-scratch --config {tiny_config} --steps 2 --batch-size 2 --grad-accum 3 "
        "--seq-len 16 --no-widget --no-progress",
        CORPUS,
    )
    assert result.steps_done == 2 and result.tokens == 2 * 2 * 3 * 16
    pairs = DATA / "instructions.jsonl"
    result = run(
        shell,
        f"finetune --task lm --data {pairs} --steps 2 --batch-size 2 --grad-accum 2 --seq-len 64 "
        "--no-widget --no-progress",
    )
    assert result.steps_done == 2 and result.kind == "finetune" and llm_magics.session.loaded.kind == "causal"
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "line, model_type, sizes",
    [
        ("--config small --arch llama", "llama", (512, 8, 8, 1024)),
        ("--config gpt2-124m --arch gpt2", "gpt2", (768, 12, 12, 1024)),
    ],
)
def test_named_configs_build_the_documented_sizes(line, model_type, sizes):
    """The big named sizes are built on the meta device (no memory, no time): CI cannot train them here,
    but the config the magic resolves and the model it builds are checked."""
    from transformers import AutoModelForCausalLM

    from llm_magics.training import byte_tokenizer, scratch_config

    args = PARSER.parse_args(["train", "--from-scratch", *line.split(), "--steps", "1"])
    config = scratch_config(args.config, args.arch, byte_tokenizer())
    assert config.model_type == model_type
    hidden, layers, heads, context = sizes
    if model_type == "gpt2":
        assert (config.n_embd, config.n_layer, config.n_head, config.n_positions) == sizes
    else:
        assert (
            config.hidden_size,
            config.num_hidden_layers,
            config.num_attention_heads,
            config.max_position_embeddings,
        ) == sizes
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    if model_type == "gpt2":  # GPT-2 small's 124M, with the byte vocabulary instead of its 50,257 tokens
        assert params == pytest.approx(124.44e6 - (50257 - len(byte_tokenizer())) * 768, rel=0.002)
    assert model.config.vocab_size == len(byte_tokenizer())


@pytest.mark.slow
def test_arch_and_tokenizer_choices_train(shell, magic_session):
    """--arch llama|gpt2 build that architecture; --tokenizer bytes is the byte tokenizer, --tokenizer loaded
    the loaded model's (SmolLM2's 49,152 tokens): the new model's vocabulary follows it."""
    import llm_magics

    loaded_vocab = len(magic_session.tokenizer)
    run(
        shell,
        "train --from-scratch --config tiny --arch gpt2 --tokenizer bytes --steps 1 --seq-len 16 "
        "--batch-size 2 --no-widget --no-progress",
        CORPUS,
    )
    model = llm_magics.session.model
    assert type(llm_magics.session.tokenizer).__name__ == "ByT5Tokenizer"
    assert model.config.model_type == "gpt2" and model.config.vocab_size == len(llm_magics.session.tokenizer)
    llm_magics.session.load("default")
    run(
        shell,
        "train --from-scratch --config tiny --arch llama --tokenizer loaded --steps 1 --seq-len 16 "
        "--batch-size 2 --no-widget --no-progress",
        CORPUS,
    )
    model, tokenizer = llm_magics.session.model, llm_magics.session.tokenizer
    assert model.config.model_type == "llama" and model.config.vocab_size == len(tokenizer) == loaded_vocab
    assert tokenizer("The cat")["input_ids"] == magic_session.tokenizer("The cat")["input_ids"]


@pytest.mark.slow
def test_load_device_and_dtype_choices(shell, default_model_dir):
    import llm_magics

    s = llm_magics.session
    run(shell, "load default --device auto --dtype auto")
    if torch.cuda.is_available():
        assert (s.loaded.device.type, s.model.dtype) == ("cuda", torch.bfloat16)
    else:
        assert (s.loaded.device.type, s.model.dtype) == ("cpu", torch.float32)
    run(shell, "load default --device cpu --dtype float32")
    assert (s.loaded.device.type, s.model.dtype) == ("cpu", torch.float32)
    float32 = s.generate("The capital of France is", max_new_tokens=3, do_sample=False).text
    # float16 on a CPU: slow for real work, but it loads and runs
    run(shell, "load default --device cpu --dtype float16")
    assert s.model.dtype == torch.float16 and all(p.dtype == torch.float16 for p in s.model.parameters())
    assert s.generate("The capital of France is", max_new_tokens=3, do_sample=False).new_tokens >= 1
    assert float32.strip()


@pytest.mark.slow
def test_attention_backend_widget_and_view_lens(shell, magic_session):
    shell.user_ns.pop("_llm", None)
    result = shell.run_cell("%llm attention --backend widget --view lens The capital of France is")
    assert result.error_in_exec is None
    view = shell.user_ns["_llm"]
    assert view is not None and type(view).__name__ != "HTML"


@pytest.mark.slow
def test_compile_backend_aot_eager_generates_the_same_greedy_text(shell, tiny_config):
    import llm_magics

    s = llm_magics.session
    s.train(text=CORPUS, from_scratch=True, config=tiny_config, steps=3, seq_len=32, lr=1e-2, progress=False)
    plain = s.generate("The cat", max_new_tokens=6, do_sample=False)
    compiled = run(shell, "generate --greedy --max-new-tokens 6 --compile --compile-backend aot_eager", "The cat")
    assert compiled.token_ids == plain.token_ids and compiled.compile_warmup
