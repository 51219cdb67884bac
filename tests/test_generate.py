import pytest

from llm_magics import LLMError, Session


def test_same_seed_same_text_and_streaming_matches_result(session):
    chunks = []
    first = session.generate("Once upon a time", max_new_tokens=20, seed=3, on_text=chunks.append)
    second = session.generate("Once upon a time", max_new_tokens=20, seed=3)
    other = session.generate("Once upon a time", max_new_tokens=20, seed=4)
    assert first.text == second.text
    assert first.text != other.text
    assert len(chunks) > 1  # text arrived piece by piece, not at the end
    assert "".join(chunks).strip() == first.text.strip()
    assert first.new_tokens == 20 and first.tokens_per_second > 0


def test_greedy_and_several_samples(session):
    greedy = session.generate("The capital of France is", max_new_tokens=8, do_sample=False)
    assert "Paris" in greedy.text
    many = session.generate("My favourite food is", max_new_tokens=12, num_return_sequences=3, seed=0)
    assert len(many.texts) == 3 and len(set(many.texts)) > 1


def test_chat_answers_and_keeps_history(session):
    reply = session.chat("What is the capital of France?", do_sample=False, max_new_tokens=30)
    assert "Paris" in reply.text
    session.chat("And what is the capital of Italy?", do_sample=False, max_new_tokens=30)
    assert [m["role"] for m in session.history] == ["user", "assistant", "user", "assistant"]
    assert "Rome" in session.history[-1]["content"]
    session.reset_chat()
    assert session.history == []


def test_system_prompt_changes_the_answer(session):
    plain = session.chat("Who are you?", do_sample=False, max_new_tokens=20).text
    session.reset_chat()
    pirate = session.chat("Who are you?", system="You are Captain Hook, a pirate. Always say Arr.",
                          do_sample=False, max_new_tokens=20).text
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
