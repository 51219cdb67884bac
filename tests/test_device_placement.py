"""CPU-only assumptions, caught without a GPU: each entry point runs a tiny model on the fake device of
fake_device.py (values computed on the CPU, tensors reporting `meta`), where a tensor created without
`device=` and mixed with the model's, or a `.numpy()` of a device tensor, raises as it would on CUDA."""

import pytest
import torch

from fake_device import DEVICE, FakeDevice, WrongDevice
from llm_magics import Session
from llm_magics.loading import LoadedModel
from support import TINY_CONFIG

TEXT = "The cat sat on the mat. The dog sat on the rug. " * 4


@pytest.fixture(scope="module")
def tokenizer(default_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir)


@pytest.fixture
def fake():
    with FakeDevice() as mode:
        yield mode


@pytest.fixture
def session(tokenizer, fake, monkeypatch):
    """A Session holding a tiny Llama on the fake device (the loaded model's device is what the package
    reads to place its tensors)."""
    from accelerate import Accelerator
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), **{k: v for k, v in TINY_CONFIG.items() if k != "model_type"})
    model = LlamaForCausalLM(config).eval()
    fake.put(model)
    # training places the model and its batches on accelerate's device: the fake one, as a GPU would be
    monkeypatch.setattr(Accelerator, "device", property(lambda self: DEVICE))
    s = Session()
    s.loaded = LoadedModel(model, tokenizer, "tiny", "", "causal", DEVICE, torch.float32)
    return s


def test_the_fake_device_catches_a_tensor_created_without_device(fake):
    on_device = torch.ones(3, device=DEVICE)
    assert on_device.device == DEVICE and on_device.sum().item() == 3  # real values
    assert (on_device + torch.ones(3, device=on_device.device)).device == DEVICE
    assert (on_device * torch.tensor(2.0)).tolist() == [2.0, 2.0, 2.0]  # a 0-dim CPU scalar mixes, as on CUDA
    with pytest.raises(WrongDevice, match="mixes tensors on the device with CPU tensors"):
        on_device + torch.ones(3)
    with pytest.raises(WrongDevice, match="numpy"):
        on_device.numpy()
    assert on_device.cpu().numpy().tolist() == [1.0, 1.0, 1.0] and on_device.device == DEVICE


def test_generate_chat_and_token_probabilities(session, fake):
    from llm_magics.generation import token_probabilities

    result = session.generate("The cat", max_new_tokens=4, do_sample=False, output_scores=True)
    assert len(result.token_ids[0]) == 4 and fake.calls > 100
    cards = token_probabilities(session.tokenizer, result.token_ids[0], result.scores)  # the playground's cards
    assert len(cards) == 4
    session.generate("The cat", max_new_tokens=3, num_return_sequences=2, top_k=5, seed=1)
    session.chat("Hello", max_new_tokens=3)


def test_train_and_finetune(session, fake):
    result = session.train(text=TEXT, steps=2, batch_size=2, seq_len=16, progress=False)
    assert len(result.history) == 2
    assert all(fake.here(p) for p in session.model.parameters())
    session.finetune(text=TEXT, steps=2, batch_size=2, seq_len=16, lora=True, progress=False)


def test_eval_perplexity(session):
    result = session.eval("perplexity", text=TEXT, seq_len=16, progress=False)
    assert result.value > 1 and not result.partial


def test_attention_and_lens(session):
    session.attention("The cat sat on the mat")
    session.explain("The cat sat on the mat")
    session.lens("The cat sat on the mat", target="mat")


def test_patching(session):
    session.patch("The cat sat on the", "The dog sat on the", answer=" mat", wrong=" rug", progress=False)


@pytest.mark.parametrize("method", ["saliency", "integrated-gradients"])
def test_attribution(session, method):
    session.attribute("The cat sat on the", method=method, max_new_tokens=2, steps=4, progress=False)
