import pytest
from transformers.trainer_pt_utils import LengthGroupedSampler

from lmforge.config.load import validate_recipe
from lmforge.train.collate import Collator
from lmforge.train.run import training_arguments
from lmforge.train.trainer import LmforgeTrainer


def recipe(tmp_path, **data):
    return validate_recipe(
        {
            "stage": "sft",
            "model": {"path": "unused"},
            "output": str(tmp_path / "out"),
            "data": {"train": [{"path": "unused.jsonl"}], **data},
        }
    )


def test_group_by_length_uses_a_length_grouped_sampler(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    args = training_arguments(recipe(tmp_path, group_by_length=True), has_eval=False)
    assert args.train_sampling_strategy == "group_by_length"
    examples = [{"input_ids": [1] * n, "labels": [1] * n} for n in (3, 30, 5, 28, 4, 31, 6, 29)]
    trainer = LmforgeTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
        args=args,
        train_dataset=examples,
        data_collator=Collator(pad_token_id=0),
    )
    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)


def test_group_by_length_reads_lmforge_rows_lengths_without_building_rows(tmp_path, tiny_model_dir, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM

    from lmforge.data.examples import Examples
    from lmforge.data.rows import ExampleRows

    lengths = (3, 30, 5, 28, 4, 31, 6, 29)
    dicts = [{"input_ids": list(range(n)), "labels": list(range(n))} for n in lengths]
    rows = ExampleRows(Examples.from_dicts(dicts))
    args = training_arguments(recipe(tmp_path, group_by_length=True), has_eval=False)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    theirs = LmforgeTrainer(
        model=model, args=args, train_dataset=dicts, data_collator=Collator(pad_token_id=0)
    )._get_train_sampler()
    monkeypatch.setattr(ExampleRows, "_row", lambda self, k: pytest.fail("a row was built to read its length"))
    ours = LmforgeTrainer(
        model=model, args=args, train_dataset=rows, data_collator=Collator(pad_token_id=0)
    )._get_train_sampler()
    assert isinstance(ours, LengthGroupedSampler) and ours.lengths == theirs.lengths == list(lengths)
    assert ours.batch_size == theirs.batch_size
    torch.manual_seed(0)
    order = list(theirs)
    torch.manual_seed(0)
    assert list(ours) == order  # the same grouping as transformers' own sampler


def test_extra_rejects_unknown_training_arguments(tmp_path):
    from lmforge.errors import LmforgeError

    r = recipe(tmp_path)
    r.train.extra = {"not_an_option": 1}
    with pytest.raises(LmforgeError, match="not_an_option"):
        training_arguments(r, has_eval=False)
