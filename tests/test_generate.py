import pytest

from llm_magics import LLMError, Session


@pytest.mark.slow
def test_same_seed_same_text_and_streaming_matches_result(session):
    chunks = []
    first = session.generate("Once upon a time", max_new_tokens=20, seed=3, on_text=chunks.append)
    second = session.generate("Once upon a time", max_new_tokens=20, seed=3)
    other = session.generate("Once upon a time", max_new_tokens=20, seed=4)
    assert first.text == second.text
    assert first.text != other.text
    assert len(chunks) > 1  # text arrived piece by piece, not at the end
    assert "".join(chunks) == first.text  # the pieces join into exactly the text
    assert first.new_tokens == 20 and first.tokens_per_second > 0


def test_streamed_pieces_join_into_the_decoded_text_at_any_length(session):
    """The streamer decodes incrementally: its pieces, joined, are the tokenizer's decode of all the ids (the
    oracle), accents and emoji split over several byte tokens included, and a step's work does not grow with
    the text (each decode covers the tokens of at most two pieces)."""
    import torch

    from llm_magics.generation import _CallbackStreamer

    tokenizer = session.tokenizer
    ids = tokenizer("A keeper lit the lamp, café 😀 naïve 東京, <|im_end|>\nthe ships passed. " * 40)["input_ids"][:400]
    decoded_lengths = []
    decode = tokenizer.decode
    tokenizer.decode = lambda part, **kwargs: (decoded_lengths.append(len(part)), decode(part, **kwargs))[1]
    try:
        pieces = []
        streamer = _CallbackStreamer(tokenizer, pieces.append)
        streamer.put(torch.tensor([ids[:3]]))  # the prompt, as generate hands it: skipped
        for token in ids[3:]:
            streamer.put(torch.tensor([token]))
        streamer.end()
    finally:
        del tokenizer.decode
    assert "".join(pieces) == decode(ids[3:], skip_special_tokens=True)
    assert len(pieces) > 300 and max(decoded_lengths) <= 8, max(decoded_lengths)


@pytest.mark.slow
def test_greedy_and_several_samples(session):
    greedy = session.generate("The capital of France is", max_new_tokens=8, do_sample=False)
    assert "Paris" in greedy.text
    many = session.generate("My favourite food is", max_new_tokens=12, num_return_sequences=3, seed=0)
    assert len(many.texts) == 3 and len(set(many.texts)) > 1


@pytest.mark.slow
def test_chat_answers_and_keeps_history(session):
    reply = session.chat("What is the capital of France?", do_sample=False, max_new_tokens=30)
    assert "Paris" in reply.text
    session.chat("And what is the capital of Italy?", do_sample=False, max_new_tokens=30)
    assert [m["role"] for m in session.history] == ["user", "assistant", "user", "assistant"]
    assert "Rome" in session.history[-1]["content"]
    session.reset_chat()
    assert session.history == []


@pytest.mark.slow
def test_system_prompt_changes_the_answer(session):
    plain = session.chat("Who are you?", do_sample=False, max_new_tokens=20).text
    session.reset_chat()
    pirate = session.chat(
        "Who are you?", system="You are Captain Hook, a pirate. Always say Arr.", do_sample=False, max_new_tokens=20
    ).text
    assert plain != pirate


def test_bad_generation_input(session):
    with pytest.raises(LLMError, match="prompt is empty"):
        session.generate("   ")
    with pytest.raises(LLMError, match="--temperature"):
        session.generate("hi", temperature=0)
    with pytest.raises(LLMError, match="exceeds the model's context of 8192"):
        session.generate("hi", max_new_tokens=9000)
    with pytest.raises(LLMError, match="no model loaded"):
        Session().generate("hi")
    with pytest.raises(LLMError, match="unknown option"):
        session.generate("hi", temprature=0.5)


def test_encoder_cannot_generate():
    s = Session()
    s.load("minilm")
    with pytest.raises(LLMError, match="needs a causal language model"):
        s.generate("hello")


@pytest.mark.slow
def test_stop_through_the_magic_cuts_each_sample_and_says_why(shell, magic_session, capsys):
    from support import run

    plain = run(shell, "generate --greedy --max-new-tokens 30 Once upon a time")
    stop = plain.text.split()[3]
    cut = run(shell, f"generate --greedy --max-new-tokens 30 --stop 'zzqx, {stop}' Once upon a time")
    assert cut.text == plain.text[: plain.text.find(stop)] and cut.stop_reason == f"stop sequence {stop!r}"
    assert f"stopped at stop sequence {stop!r}]" in capsys.readouterr().out
    # several samples: each is cut at its own first stop text (the oracle: the same samples without --stop)
    samples = run(shell, "generate --max-new-tokens 20 --num-return-sequences 3 --seed 5 Once upon a time")
    line = "generate --max-new-tokens 20 --num-return-sequences 3 --seed 5 --stop ' the ' Once upon a time"
    stopped = run(shell, line)  # each text stripped of the spaces around it: the stop text is "the"
    assert stopped.texts == [t[: t.find("the")] if "the" in t else t for t in samples.texts]
    assert stopped.stopped_at == ["the" if "the" in t else None for t in samples.texts]


def test_the_stream_stops_before_a_stop_text_split_across_pieces():
    from llm_magics.generation import _UpToStop

    seen = []
    stream = _UpToStop(seen.append, ["END", "\n\n"])
    for piece in ["ab", "cE", "N", "Dxyz", "more"]:
        stream(piece)
    stream.flush()
    assert seen == ["ab", "c"]  # "E" and "N" were held back until "D" made them the stop text
    seen.clear()
    stream = _UpToStop(seen.append, ["END"])
    for piece in ["aE", "Nb", "cE"]:
        stream(piece)
    stream.flush()
    assert "".join(seen) == "aENbcE"  # no stop text came: everything, the held-back ending last
