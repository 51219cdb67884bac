"""Issue 27: every declared range is enforced through the Session's keywords as through the magics (a value just
outside is one line naming the flag, the range and the value; a value just inside passes the check); generation
is refused before it starts when its KV cache and logits would not fit in memory; a reversed range (--layers
5-2) is refused instead of selecting nothing; `stop` takes a list of texts and --stop can be repeated."""

import hashlib

import pytest
import torch

from llm_magics import Session, options
from llm_magics.base.errors import LLMError
from llm_magics.generation import generation_bytes
from support import one_error_line, run, tiny_causal_model

CORPUS = "The cat sat on the mat. The dog sat on the log. " * 20


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, default_model_dir):
    return tiny_causal_model(tmp_path_factory.mktemp("tiny") / "model", default_model_dir)


@pytest.fixture
def tiny(tiny_dir):
    s = Session()
    s.load(str(tiny_dir), device="cpu")
    return s


def weights_hash(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# How each command is called through the Session: the keywords it needs besides the option under test.
TINY_RUN = {"steps": 1, "seq_len": 16, "progress": False}
TINY_ATTRIBUTION = {"max_new_tokens": 1, "progress": False}
CALLS = {
    "generate": lambda s, kw: s.generate("Hello", **{"max_new_tokens": 2, **kw}),
    "train": lambda s, kw: s.train(text=CORPUS, from_scratch=True, **{**TINY_RUN, **kw}),
    "finetune": lambda s, kw: s.finetune(text=CORPUS, lora=True, **{**TINY_RUN, **kw}),
    "attribute": lambda s, kw: s.attribute(
        "The cat", method="saliency", **{"max_new_tokens": 1, "progress": False, **kw}
    ),
}


def _near(bounds: options.Bounds, kind) -> list[tuple[object, bool]]:
    """(value, accepted) just outside and just inside each bound."""
    step = 1 if kind is int else 0.01
    values: list[tuple[object, bool]] = []
    if bounds.low is not None:
        values.append((kind(bounds.low) if bounds.low_open else kind(bounds.low - step), False))
        values.append((kind(bounds.low + step) if bounds.low_open else kind(bounds.low), True))
    if bounds.high is not None:
        values += [(kind(bounds.high + step), False), (kind(bounds.high), True)]
    return values


CASES = [
    (command, o, value, accepted)
    for command in CALLS
    for o in options.options(command)
    if o.bounds is not None
    for value, accepted in _near(o.bounds, o.type if o.type in (int, float) else float)
]


def test_the_walk_covers_every_bounded_option_of_the_registry():
    declared = {o for c in options.COMMANDS for o in options.options(c) if o.bounds is not None}
    assert declared == {o for _, o, _, _ in CASES}


@pytest.mark.parametrize("command, option, value, accepted", CASES, ids=[f"{c}{o.flag}={v}" for c, o, v, _ in CASES])
def test_every_declared_range_is_enforced_through_the_session(tiny, command, option, value, accepted):
    problem = option.bounds.problem(option.flag, value)
    if accepted:
        assert problem is None
        options.check_bounds({option.name: value}, command)  # the check the commands run lets it through
        return
    assert problem is not None
    before = weights_hash(tiny.loaded.model)
    with pytest.raises(LLMError) as raised:
        CALLS[command](tiny, {option.api_name: value})
    message = str(raised.value)
    assert message == problem, message
    assert message.startswith(f"{option.flag} must be ") and message.endswith(f"; got {value!r}")
    assert "\n" not in message
    assert weights_hash(tiny.loaded.model) == before


def test_ten_thousand_sequences_are_one_line_and_the_model_is_untouched(shell, capsys, tiny_dir):
    import llm_magics

    s = Session()
    s.load(str(tiny_dir), device="cpu")
    before = weights_hash(s.loaded.model)
    expected = "--num-return-sequences must be in [1, 64]; got 10000"
    with pytest.raises(LLMError, match=r"^--num-return-sequences must be in \[1, 64\]; got 10000$"):
        s.generate("Hi", num_return_sequences=10000)
    assert weights_hash(s.loaded.model) == before

    llm_magics.session.load(str(tiny_dir), device="cpu")
    before = weights_hash(llm_magics.session.loaded.model)
    run(shell, "generate --num-return-sequences 10000 Hi")
    assert one_error_line(capsys) == f"llm generate: {expected}"
    assert weights_hash(llm_magics.session.loaded.model) == before


# --- the memory estimate ---


def test_the_estimate_is_the_kv_cache_and_the_logits():
    from transformers import GPT2Config, LlamaConfig

    llama = LlamaConfig(
        hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, vocab_size=1000
    )
    # 5 sequences of 7 + 11 tokens, 3 layers, key and value, 2 kv heads of 16 numbers, 2 bytes; logits in fp32
    assert generation_bytes(llama, 2, 5, 7, 11) == 5 * 18 * 3 * 2 * 2 * 16 * 2 + 5 * 1000 * 4
    gpt2 = GPT2Config(n_embd=48, n_layer=2, n_head=3, vocab_size=500)  # no kv heads: every head has its own
    assert generation_bytes(gpt2, 4, 1, 3, 2) == 1 * 5 * 2 * 2 * 3 * 16 * 4 + 500 * 4


@pytest.fixture(scope="module")
def long_context_dir(tmp_path_factory, default_model_dir):
    """A tiny llama whose context allows 2**40 tokens: only the memory estimate can refuse a long generation."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from support import TINY_CONFIG

    folder = tmp_path_factory.mktemp("long") / "model"
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    config = LlamaConfig(
        **{k: v for k, v in TINY_CONFIG.items() if k not in ("model_type", "max_position_embeddings")},
        max_position_embeddings=2**40,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_generation_beyond_the_memory_is_refused_with_what_fits(shell, capsys, long_context_dir):
    import re

    import psutil

    import llm_magics

    s = Session()
    s.load(str(long_context_dir), device="cpu")
    before = weights_hash(s.loaded.model)
    config = s.loaded.model.config
    prompt_tokens = len(s.loaded.tokenizer("Hi")["input_ids"])
    tokens = 2**39
    # the test's own figure: 2 sequences x (prompt + tokens) x layers x (key, value) x kv heads x head dim x 4 bytes
    head_dim = config.hidden_size // config.num_attention_heads
    per_token = config.num_hidden_layers * 2 * config.num_key_value_heads * head_dim * 4
    needed = 2 * (prompt_tokens + tokens) * per_token + 2 * config.vocab_size * 4
    assert needed > psutil.virtual_memory().available
    with pytest.raises(LLMError) as raised:
        s.generate("Hi", max_new_tokens=tokens, num_return_sequences=2)
    message = str(raised.value)
    assert message.startswith(f"generating 2 x ({prompt_tokens} + {tokens}) tokens needs about "), message
    assert f"{needed / 2**30:,.1f} GiB" in message
    fits = int(re.search(r"--max-new-tokens (\d+) fits$", message).group(1))
    available = psutil.virtual_memory().available
    # what it offers fits (give or take what other processes took meanwhile), and is not far below the limit
    assert 2 * (prompt_tokens + fits) * per_token + 2 * config.vocab_size * 4 <= available * 1.1
    assert 2 * (prompt_tokens + fits) * per_token > available * 0.5
    assert weights_hash(s.loaded.model) == before

    llm_magics.session.load(str(long_context_dir), device="cpu")
    run(shell, f"generate --max-new-tokens {tokens} --num-return-sequences 2 Hi")
    line = one_error_line(capsys)
    assert line.startswith("llm generate: generating 2 x ") and re.search(r"--max-new-tokens \d+ fits$", line), line


# --- reversed ranges ---


def test_a_reversed_layer_range_is_refused(tiny, shell, capsys, tiny_dir):
    import llm_magics

    with pytest.raises(LLMError, match=r"^--layers 5-2: the range is reversed; write 2-5$"):
        tiny.patch("The cat sat", "The dog sat", layers="5-2", progress=False)
    with pytest.raises(LLMError, match=r"^--layers names no layer"):
        tiny.patch("The cat sat", "The dog sat", layers=[], progress=False)
    llm_magics.session.load(str(tiny_dir), device="cpu")
    run(shell, "patch --layers 0,5-2", "The cat sat\nThe dog sat")
    assert one_error_line(capsys) == "llm patch: --layers 5-2: the range is reversed; write 2-5"
    # an ascending range as text, through the Session, selects those layers (this model has one)
    result = tiny.patch("The cat sat", "The dog sat", answer=" cat", wrong=" dog", layers="0-0", progress=False)
    assert not torch.isnan(result.scores[0]).any()


# --- stop texts ---


COUNT = "1, 2, 3, 4, 5,"


def test_stop_takes_a_list_of_texts(session):
    full = session.generate(COUNT, max_new_tokens=12, do_sample=False).text
    assert full.startswith(" 6, 7, 8"), full  # SmolLM2 counts on
    result = session.generate(COUNT, max_new_tokens=12, do_sample=False, stop=["7"])
    assert result.text == " 6, "
    assert result.stopped_at == ["7"] and result.new_tokens < 12
    # a list's texts are taken as they are: a comma is a text like any other
    assert session.generate(COUNT, max_new_tokens=12, do_sample=False, stop=["zz", ","]).text == " 6"
    assert session.generate(COUNT, max_new_tokens=12, do_sample=False, stop="zz,8").text == " 6, 7, "
    with pytest.raises(LLMError, match=r"^--stop takes a text or a list of texts; got \[1\]$"):
        session.generate(COUNT, stop=[1])
    with pytest.raises(LLMError, match=r"^--stop has no text"):
        session.generate(COUNT, stop=[])


def test_stop_can_be_repeated_in_the_magic(shell, magic_session):
    result = run(shell, "generate --greedy --max-new-tokens 12 --stop zzzq,qqqz --stop 8 --stop 9 " + COUNT)
    assert result.text == " 6, 7, "
    assert result.stopped_at == ["8"]
    assert result.settings.stop_strings() == ["zzzq", "qqqz", "8", "9"]


def test_stop_lists_reach_the_chat_and_the_playground(session):
    from llm_magics.generation import SamplingSettings
    from llm_magics.views.playground import SamplingPanel

    reply = session.chat("Count from 1 to 10, separated by commas.", max_new_tokens=30, do_sample=False, stop=["5"])
    assert reply.stopped_at == ["5"] and "5" not in reply.text, reply.text
    panel = SamplingPanel(session, COUNT, SamplingSettings(stop=["8", "\n"], do_sample=False, max_new_tokens=12))
    assert panel.stop.value == "8,\\n"  # the field reads back as the same texts
    assert panel.settings().stop_strings() == ["8", "\n"]
    panel.generate()
    assert panel.runs[-1].text == " 6, 7, "
