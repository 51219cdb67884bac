"""`%%llm train --from-scratch --tokenizer VALUE`: every documented value trains, with the tokenizer it names."""

import pytest
from transformers import AutoTokenizer, ByT5Tokenizer

from llm_magics.loading import gguf_to_safetensors, packaged_path
from support import DATA, run

pytestmark = pytest.mark.slow

CORPUS = (DATA / "tiny_corpus.txt").read_text()
SAMPLE = "The cat sat on the mat, naïvely."


def expected_tokenizer(value: str):
    """The tokenizer each --tokenizer value means, loaded here without llm_magics' own resolution."""
    if value == "bytes":
        return ByT5Tokenizer()
    if value in ("default", "loaded"):  # "loaded" follows the default model the test loads first
        return AutoTokenizer.from_pretrained(gguf_to_safetensors(packaged_path("default")))
    return AutoTokenizer.from_pretrained(packaged_path("minilm"))


@pytest.mark.parametrize(
    "value, option",
    [
        ("bytes", "--tokenizer bytes"),
        ("default", "--tokenizer default"),
        ("loaded", "--tokenizer loaded"),
        ("DIR", "--tokenizer DIR"),
    ],
)
def test_every_tokenizer_value_trains_with_that_tokenizer(shell, magic_session, value, option):
    option = option.replace("DIR", str(packaged_path("minilm")))
    result = run(
        shell, f"train --from-scratch {option} --steps 2 --batch-size 2 --seq-len 32 --no-widget --no-progress", CORPUS
    )
    assert result.steps_done == 2
    expected = expected_tokenizer(value)
    used = magic_session.tokenizer
    assert len(used) == len(expected)
    assert (
        used(SAMPLE, add_special_tokens=False)["input_ids"] == expected(SAMPLE, add_special_tokens=False)["input_ids"]
    )
    # The fresh model's embedding table covers exactly the tokenizer's ids it was built for.
    assert magic_session.model.get_input_embeddings().num_embeddings >= len(expected)
