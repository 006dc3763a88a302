from transformers.trainer_pt_utils import LengthGroupedSampler

from lmforge.config.load import validate_recipe
from lmforge.train.collate import Collator
from lmforge.train.run import training_arguments
from lmforge.train.trainer import LmforgeTrainer


def recipe(tmp_path, **data):
    return validate_recipe({
        "stage": "sft", "model": {"path": "unused"}, "output": str(tmp_path / "out"),
        "data": {"train": [{"path": "unused.jsonl"}], **data},
    })


def test_group_by_length_uses_a_length_grouped_sampler(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    args = training_arguments(recipe(tmp_path, group_by_length=True), has_eval=False)
    assert args.train_sampling_strategy == "group_by_length"
    examples = [{"input_ids": [1] * n, "labels": [1] * n} for n in (3, 30, 5, 28, 4, 31, 6, 29)]
    trainer = LmforgeTrainer(model=AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), args=args,
                             train_dataset=examples, data_collator=Collator(pad_token_id=0))
    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)


def test_extra_rejects_unknown_training_arguments(tmp_path):
    import pytest

    from lmforge.errors import LmforgeError

    r = recipe(tmp_path)
    r.train.extra = {"not_an_option": 1}
    with pytest.raises(LmforgeError, match="not_an_option"):
        training_arguments(r, has_eval=False)
