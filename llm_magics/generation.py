"""Text generation and chat on a loaded causal LM, with streaming and graceful stop."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, set_seed
from transformers.generation.streamers import BaseStreamer

from .base.checks import check_finite, check_seed
from .base.devices import available_memory, compile_backend
from .base.errors import LLMError, is_out_of_memory
from .base.interrupts import StopFlag, graceful_interrupts
from .loading import LoadedModel, context_length, require_causal
from .options import check_bounds, defaults, split_stop_texts

_D = defaults("generate")  # declared in llm_magics/options.py, with their help and the playground's ranges


@dataclass
class SamplingSettings:
    max_new_tokens: int = _D.max_new_tokens
    temperature: float = _D.temperature
    top_k: int = _D.top_k
    top_p: float = _D.top_p
    repetition_penalty: float = _D.repetition_penalty
    num_return_sequences: int = _D.num_return_sequences
    seed: int | None = _D.seed
    stop: str | list[str] | None = _D.stop  # a text as --stop takes it, or a list of texts, each as it is
    do_sample: bool = _D.do_sample

    def stop_strings(self) -> list[str]:
        """The texts to stop at: a string is split as --stop's value is (comma- or newline-separated, each
        stripped, `\\n` read as a newline); a list's texts are taken as they are (transformers' stop_strings)."""
        if self.stop is None:
            return []
        if isinstance(self.stop, str):
            return split_stop_texts(self.stop)
        return [text for text in self.stop if text]

    def stop_text(self) -> str:
        """The stop texts as one --stop value (the playground's field): comma-separated, newlines as `\\n`."""
        return ",".join(text.replace("\n", "\\n") for text in self.stop_strings())

    def validated(self) -> SamplingSettings:
        check_finite(temperature=self.temperature, top_p=self.top_p, repetition_penalty=self.repetition_penalty)
        check_seed(self.seed)
        check_bounds(self, "generate")  # the bounds declared in options.py
        if not self.do_sample and self.num_return_sequences > 1:  # transformers refuses it deep in generate
            raise LLMError(
                f"--greedy gives one sequence (every sample would be the same): "
                f"drop --greedy or ask for --num-return-sequences 1 (got {self.num_return_sequences})"
            )
        if self.stop is not None and not isinstance(self.stop, str):
            if not isinstance(self.stop, (list, tuple)) or not all(isinstance(text, str) for text in self.stop):
                raise LLMError(f"--stop takes a text or a list of texts; got {self.stop!r}")
        if self.stop is not None and not self.stop_strings():
            raise LLMError("--stop has no text: give texts separated by commas or newlines (a comma cannot be one)")
        return self

    def generate_kwargs(self) -> dict:
        kwargs: dict[str, Any] = dict(
            max_new_tokens=self.max_new_tokens,
            do_sample=self.do_sample,
            repetition_penalty=self.repetition_penalty,
            num_return_sequences=self.num_return_sequences,
        )
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        else:  # greedy: unset the model's own sampling defaults so transformers doesn't warn
            kwargs.update(temperature=None, top_k=None, top_p=None)
        return kwargs


@dataclass
class GenerationResult:
    prompt: str
    texts: list[str]
    settings: SamplingSettings
    new_tokens: int
    seconds: float
    interrupted: bool = False
    token_ids: list[list[int]] = field(default_factory=list, repr=False)
    scores: list | None = field(default=None, repr=False)  # per-step logits when asked for
    compile_warmup: bool = False  # the first --compile call of this model: its time includes compiling
    stopped_at: list = field(default_factory=list)  # per sequence: the --stop text it was cut at, or None
    prompt_ids: list[int] = field(default_factory=list, repr=False)  # what the model was given
    chat: bool = False  # the prompt went through the chat template (as the user's turn)
    system: str | None = None  # the system prompt of a chat

    @property
    def text(self) -> str:
        return self.texts[0]

    @property
    def stop_reason(self) -> str:
        """Why decoding ended: the user, the token budget, or the model's end-of-text token."""
        if self.interrupted:
            return "interrupt"
        if self.stopped_at and self.stopped_at[0] is not None:
            return f"stop sequence {self.stopped_at[0]!r}"
        return "max tokens" if self.new_tokens >= self.settings.max_new_tokens else "EOS"

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "texts": self.texts,
            "settings": asdict(self.settings),
            "new_tokens": self.new_tokens,
            "seconds": self.seconds,
            "interrupted": self.interrupted,
        }


class _CallbackStreamer(BaseStreamer):
    """Hands each new piece of the generated text to a callback as the tokens arrive, decoding incrementally
    (the algorithm of text-generation-inference and vLLM): each step decodes only the tokens since the last
    piece, with the piece before them for context, so a step's cost does not grow with the text.
    transformers' TextStreamer decodes all the text since the last newline at every step (104 us a token at
    512 tokens against 19 at 32 on a 2-core CPU). A piece waits while its last character is an unfinished
    UTF-8 sequence (U+FFFD), so the pieces join into the decoded text."""

    def __init__(self, tokenizer, on_text: Callable[[str], None]):
        self.tokenizer, self.on_text = tokenizer, on_text
        self.ids: list[int] = []
        self.prefix_offset = self.read_offset = 0  # ids[prefix:read]: the last piece's tokens, for context
        self.prompt_skipped = False

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def put(self, value):
        if not self.prompt_skipped:  # generate hands the prompt first
            self.prompt_skipped = True
            return
        self.ids.extend(value.reshape(-1).tolist())  # batch 1: the streamer is only used for one sequence
        self._flush(final=False)

    def end(self):
        self._flush(final=True)

    def _flush(self, final: bool):
        before = self._decode(self.ids[self.prefix_offset : self.read_offset])
        text = self._decode(self.ids[self.prefix_offset :])
        if len(text) > len(before) and (final or not text.endswith("\ufffd")):
            self.on_text(text[len(before) :])
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)


class _UpToStop:
    """Streams the text up to the first stop text, never past it (the result is cut there too, _cut_at_stop):
    an ending that may be the start of a stop text is held back until the next piece tells. `flush()` at the
    end hands over what is held back when no stop text came."""

    def __init__(self, on_text: Callable[[str], None], stops: list[str]):
        self.on_text, self.stops = on_text, stops
        self.held = ""
        self.cut = False

    def __call__(self, piece: str) -> None:
        if self.cut:
            return
        text, stop = _cut_at_stop(self.held + piece, self.stops)
        if stop is not None:
            self.cut, self.held = True, ""
        else:  # hold back the longest ending that begins a stop text
            hold = max((n for s in self.stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
            text, self.held = text[: len(text) - hold], text[len(text) - hold :]
        if text:
            self.on_text(text)

    def flush(self) -> None:
        if self.held and not self.cut:
            self.on_text(self.held)
        self.held = ""


class _StopWhenFlagged(StoppingCriteria):
    def __init__(self, flag: StopFlag):
        self.flag = flag
        self._keep_going = None  # one all-False tensor reused every token: no allocation per step

    def __call__(self, input_ids, scores, **kwargs):
        if self.flag.requested:
            return torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if self._keep_going is None or self._keep_going.shape[0] != input_ids.shape[0]:
            self._keep_going = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return self._keep_going


def generate_ids(
    loaded: LoadedModel,
    inputs: dict,
    prompt: str,
    settings: SamplingSettings,
    on_text: Callable[[str], None] | None = None,
    stop: StopFlag | None = None,
    output_scores: bool = False,
    *,
    compile: bool | str,
) -> GenerationResult:
    """Run model.generate on already-tokenized inputs; stream text when one sequence is asked.
    compile: a static KV cache and a torch.compile'd decoding step (CUDA graphs on a GPU)."""
    settings.validated()
    prompt_length = inputs["input_ids"].shape[1]
    limit = context_length(loaded.model)
    if limit and prompt_length + settings.max_new_tokens > limit:
        raise LLMError(
            f"prompt ({prompt_length} tokens) + --max-new-tokens {settings.max_new_tokens} "
            f"exceeds the model's context of {limit} tokens"
        )
    check_generation_memory(loaded, settings, prompt_length)
    inputs = {k: v.to(loaded.device) for k, v in inputs.items()}
    if settings.seed is not None:
        set_seed(settings.seed)
    stops = settings.stop_strings()
    streamer = up_to_stop = None
    if on_text is not None and settings.num_return_sequences == 1:
        if stops:
            on_text = up_to_stop = _UpToStop(on_text, stops)
        streamer = _CallbackStreamer(loaded.tokenizer, on_text)
    # transformers' own stop_strings: it ends each sequence once its text contains one (it needs the tokenizer)
    stopping = {"stop_strings": stops, "tokenizer": loaded.tokenizer} if stops else {}
    first_compile = bool(compile) and not getattr(loaded.model, "_llm_magics_compiled", False)
    with graceful_interrupts(stop) as flag:
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                output = loaded.model.generate(  # type: ignore[operator]  # GenerationMixin is mixed into each model class
                    **inputs,
                    **settings.generate_kwargs(),
                    **(_compiled_kwargs(loaded, compile) if compile else {}),
                    **stopping,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_StopWhenFlagged(flag)]),
                    pad_token_id=loaded.tokenizer.pad_token_id,
                    return_dict_in_generate=True,
                    output_scores=output_scores,
                )
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
            raise LLMError(
                f"out of memory generating {settings.num_return_sequences} x "
                f"{settings.max_new_tokens} tokens: ask for fewer sequences or tokens"
            ) from None
        seconds = time.perf_counter() - start
    if up_to_stop is not None:
        up_to_stop.flush()
    if first_compile:
        loaded.model._llm_magics_compiled = True  # type: ignore[assignment]  # torch types Module attributes as Tensor | Module
    new_ids = output.sequences[:, prompt_length:]
    texts = loaded.tokenizer.batch_decode(new_ids, skip_special_tokens=True)
    cuts = [_cut_at_stop(text, stops) for text in texts]
    return GenerationResult(
        prompt=prompt,
        texts=[text for text, _ in cuts],
        prompt_ids=inputs["input_ids"][0].tolist(),
        stopped_at=[stop for _, stop in cuts],
        settings=settings,
        new_tokens=int(new_ids.shape[1]),
        seconds=seconds,
        interrupted=flag.requested,
        token_ids=new_ids.tolist(),
        scores=list(output.scores) if output_scores else None,
        compile_warmup=first_compile,
    )


def generation_bytes(config, dtype_bytes: int, sequences: int, prompt_tokens: int, new_tokens: int) -> int | None:
    """Roughly what generating takes beyond the weights: the KV cache (per sequence, per token, per layer, a key
    and a value of kv_heads x head_dim numbers) and one step's logits in float32. None when the config does not
    say its shape."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    shape = [getattr(config, name, None) for name in ("num_hidden_layers", "num_attention_heads", "hidden_size")]
    shape.append(getattr(config, "vocab_size", None))
    if not all(isinstance(n, int) and n > 0 for n in shape):
        return None
    layers, heads, hidden, vocab = (int(n) for n in shape)  # type: ignore[arg-type]  # checked just above
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv_cache = sequences * (prompt_tokens + new_tokens) * layers * 2 * kv_heads * head_dim * dtype_bytes
    logits = sequences * vocab * 4
    return kv_cache + logits


def check_generation_memory(loaded: LoadedModel, settings: SamplingSettings, prompt_tokens: int) -> None:
    """One line, before anything is allocated, when the estimate (generation_bytes) is beyond the memory
    available, with a smaller setting that fits."""
    dtype_bytes = torch.empty((), dtype=loaded.model.dtype).element_size()
    n, new = settings.num_return_sequences, settings.max_new_tokens

    def need(sequences: int, tokens: int) -> int:
        return generation_bytes(loaded.model.config, dtype_bytes, sequences, prompt_tokens, tokens) or 0

    needed, available = need(n, new), available_memory(loaded.device)
    if needed <= available:  # 0: the config does not say its shape
        return
    per_token = need(n, 1) - need(n, 0)  # every sequence one token longer
    tokens_fit = (available - need(n, 0)) // per_token
    sequences_fit = available // need(1, new)
    if tokens_fit >= 1:
        fits = f"--max-new-tokens {tokens_fit} fits"
    elif sequences_fit >= 1:
        fits = f"--num-return-sequences {sequences_fit} fits"
    else:
        fits = "not even one sequence of that length fits"
    raise LLMError(
        f"generating {n} x ({prompt_tokens} + {new}) tokens needs about {_gib(needed)} for the KV cache and "
        f"logits, more than the {_gib(available)} of memory available: {fits}"
    )


def _gib(size: int) -> str:
    return f"{size / 2**30:,.1f} GiB"


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, str | None]:
    """The text up to the first stop text in it, and that stop text (None when there is none)."""
    found = [(text.find(stop), stop) for stop in stops if stop in text]
    if not found:
        return text, None
    at, stop = min(found)
    return text[:at], stop


def _compiled_kwargs(loaded: LoadedModel, compile: bool | str) -> dict:
    """transformers compiles the decoding step itself once the KV cache is static: with inductor, CUDA
    graphs ("reduce-overhead") on a GPU; off the GPU transformers compiles only when asked to."""
    from transformers import CompileConfig

    backend = compile_backend(compile)
    on_gpu = loaded.device.type == "cuda"
    mode = ("reduce-overhead" if on_gpu else "default") if backend == "inductor" else None
    assert backend is not None  # only called with compile set
    config = CompileConfig(backend=backend, mode=mode)  # type: ignore[arg-type]  # None: torch.compile's default mode
    config._compile_all_devices = not on_gpu  # type: ignore[assignment]  # transformers declares it None
    return {"cache_implementation": "static", "compile_config": config}


def generate(
    loaded: LoadedModel | None,
    prompt: str,
    settings: SamplingSettings | None = None,
    on_text: Callable[[str], None] | None = None,
    stop: StopFlag | None = None,
    output_scores: bool = False,
    *,
    compile: bool | str,
    chat: bool,
    system: str | None,
) -> GenerationResult:
    """chat: the prompt is the user's turn of a one-turn chat (after `system`), through the chat template."""
    loaded = require_causal(loaded, "generate", "generate continues a prompt")
    if not prompt or not prompt.strip():
        raise LLMError("the prompt is empty: put it in the cell body (or pass it as text)")
    if chat:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        inputs = chat_inputs(loaded, messages)
    else:
        inputs = dict(loaded.tokenizer(prompt, return_tensors="pt"))
    result = generate_ids(
        loaded, inputs, prompt, settings or SamplingSettings(), on_text, stop, output_scores, compile=compile
    )
    result.chat, result.system = chat, (system or None) if chat else None
    return result


def require_chat_template(loaded: LoadedModel) -> None:
    if not getattr(loaded.tokenizer, "chat_template", None):
        raise LLMError(f"{loaded.name} has no chat template: use `%%llm generate` without --chat or --system")


def chat_inputs(loaded: LoadedModel, messages: list[dict]) -> dict:
    """The messages through the model's chat template, ready for the assistant's turn."""
    require_chat_template(loaded)
    inputs = loaded.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    return dict(inputs)  # type: ignore[arg-type]  # return_dict=True: a BatchEncoding


def chat_turn(
    loaded: LoadedModel | None,
    history: list[dict],
    message: str,
    system: str | None,
    settings: SamplingSettings | None = None,
    on_text: Callable[[str], None] | None = None,
    stop: StopFlag | None = None,
) -> GenerationResult:
    """One user turn: the reply is appended to `history` (the caller owns it)."""
    loaded = require_causal(loaded, "chat", "chat answers with next tokens")
    if not message or not message.strip():
        raise LLMError("the chat message is empty: write it in the cell body")
    settings = replace(settings or SamplingSettings(), num_return_sequences=1)
    messages = (
        ([{"role": "system", "content": system}] if system else []) + history + [{"role": "user", "content": message}]
    )
    result = generate_ids(loaded, chat_inputs(loaded, messages), message, settings, on_text, stop, compile=False)
    result.chat, result.system = True, system
    history.append({"role": "user", "content": message})
    history.append({"role": "assistant", "content": result.text.strip()})
    return result


SCORED_STEPS_AT_ONCE = 64  # token_probabilities' softmax block: 64 x a 49k vocabulary is 12.6 MB of float32


def token_probabilities(
    tokenizer, token_ids: list[int], scores: list[torch.Tensor], row: int = 0, top_k: int = 5
) -> list[dict]:
    """For each generated token: its probability under the sampling distribution, its rank in it (1: the
    likeliest) and the top-k alternatives, from the scores `generate(output_scores=True)` returned (no
    second pass). Only real alternatives are listed: no token the sampler ruled out (p = 0) and no special
    token. The steps go through softmax, top-k and rank a block at a time (one op per block, not per token:
    per token this cost the playground ~1 ms, 2% of a decoding step on a 2-core CPU), each id decoded once."""
    special = set(tokenizer.all_special_ids)
    steps = min(len(token_ids), len(scores))
    decoded: dict[int, str] = {}

    def decode(i: int) -> str:
        if i not in decoded:
            decoded[i] = tokenizer.decode([i])
        return decoded[i]

    tokens = []
    for first in range(0, steps, SCORED_STEPS_AT_ONCE):
        block = range(first, min(steps, first + SCORED_STEPS_AT_ONCE))
        probs = torch.softmax(torch.stack([scores[step][row] for step in block]).float(), dim=-1)
        chosen_ids = torch.tensor([token_ids[step] for step in block], device=probs.device)
        chosen = probs.gather(1, chosen_ids[:, None])
        ranks = ((probs > chosen).sum(-1) + 1).tolist()
        top = torch.topk(probs, min(top_k + len(special), probs.shape[-1]), dim=-1)
        for values, indices, token_id, prob, rank in zip(
            top.values.tolist(), top.indices.tolist(), chosen_ids.tolist(), chosen[:, 0].tolist(), ranks
        ):
            alternatives = [
                (decode(i), p) for p, i in zip(values, indices) if p > 0 and (i not in special or i == token_id)
            ][:top_k]
            tokens.append({"token": decode(token_id), "id": token_id, "prob": prob, "rank": rank, "top": alternatives})
    return tokens
