"""The RunSpec the registry builds for a train or finetune run: what a Session keyword reaches, what it
refuses, and the record (run.json) it keeps. Expected values are written out by hand."""

import dataclasses

import pytest

from llm_magics import Session
from llm_magics.base.errors import LLMError
from llm_magics.options import RunSpec, TrainOptions


def test_every_keyword_lands_in_its_part():
    spec = RunSpec.build(
        "train",
        dict(lr=1e-3, batch_size=3, from_scratch=True, config="small", data="a.txt", num_proc=2, processes=2),
    )
    assert (spec.train.lr, spec.train.batch_size, spec.train.steps) == (1e-3, 3, 100)
    assert (spec.model.from_scratch, spec.model.config, spec.model.arch) == (True, "small", "llama")
    assert (spec.data.data, spec.data.num_proc, spec.data.text) == ("a.txt", 2, None)
    assert spec.engine.processes == 2 and spec.several


def test_unset_lr_and_steps_go_by_kind():
    assert RunSpec.build("train", {"lr": None, "steps": None}).train.lr == 3e-4
    assert RunSpec.build("train", {"from_scratch": True}).train.lr == 3e-3
    assert RunSpec.build("finetune", {"lora": True}).train.lr == 2e-4
    assert RunSpec.build("finetune", {}).train.steps is None  # from --epochs over the data


def test_a_line_s_labels_are_split():
    assert RunSpec.build("finetune", {"task": "classify", "labels": " pos, neg ,"}).model.labels == ["pos", "neg"]


@pytest.mark.parametrize(
    "command, keyword",
    [("train", "bogus"), ("finetune", "config"), ("finetune", "num_proc"), ("train", "lora")],
)
def test_an_option_the_kind_does_not_take_is_one_line(command, keyword):
    with pytest.raises(LLMError, match=rf"^{command} got unknown option\(s\): {keyword}$"):
        RunSpec.build(command, {keyword: 1})
    with pytest.raises(LLMError, match=rf"^{command} got unknown option\(s\): {keyword}$"):
        getattr(Session(), command)(text="hello", **{keyword: 1})


def test_the_record_keeps_its_shape():
    """Saved runs are read back by the Session's keyword names: the kind's own arguments (none of them a
    display setting), then every training option in its declared order."""
    record = RunSpec.build("finetune", {"lora": True, "labels": "a,b"}).record()
    training = [field.name for field in dataclasses.fields(TrainOptions)]
    own = list(record)[: len(record) - len(training)]
    assert list(record)[len(own) :] == training
    expected = "data eval_data lora lora_r lora_alpha task labels text_field sample_docs processes"
    assert own == expected.split()  # the kind's own arguments, in the order saved runs have them
    assert record["lora"] is True
    assert record["labels"] == ["a", "b"] and record["lr"] == 2e-4 and "weight_decay" in record
    assert "config" not in record and "progress" not in record and "text" not in record
    train = RunSpec.build("train", {}).record()
    assert {"from_scratch", "config", "arch", "tokenizer", "max_tokens"} <= set(train) and "lora" not in train
