import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lmforge.data.examples import IGNORE_INDEX, trained_tokens
from lmforge.train.collate import Collator, additive_mask, block_causal_mask


def test_dynamic_padding_pads_to_longest():
    batch = Collator(pad_token_id=0)(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_pad_to_multiple():
    batch = Collator(pad_token_id=0, pad_to_multiple_of=4)([{"input_ids": [1, 2, 3, 4, 5], "labels": [1] * 5}])
    assert batch["input_ids"].shape == (1, 8)


def test_block_mask_separates_documents_and_is_causal():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0]])
    real = torch.tensor([[True, True, True, True, True, False]])
    mask = block_causal_mask(positions, real)[0, 0]
    assert mask[2].tolist() == [True, True, True, False, False, False]
    assert mask[4].tolist() == [False, False, False, True, True, False]
    assert mask[1, 2].item() is False  # causal
    assert mask[5].tolist() == [False] * 5 + [True]  # padding sees only itself: no empty softmax row


def test_trained_tokens_of_a_batch_use_the_shift():
    labels = torch.tensor([[5, -100, 7, 8], [-100, -100, -100, 9]])
    assert trained_tokens(labels) == 3


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_row_matches_documents_run_alone(attn):
    """The test of record: a packed row gives each document the logits it gets alone."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        attn_implementation=attn,
    )
    model = LlamaForCausalLM(config).eval()
    doc_a, doc_b = [3, 9, 4, 22, 7], [11, 5, 30]
    row = {"input_ids": doc_a + doc_b, "labels": doc_a + doc_b, "position_ids": list(range(5)) + list(range(3))}
    batch = Collator(pad_token_id=0)([row])
    mask = additive_mask(batch["attention_mask"], torch.float32)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=mask).logits
        alone_a = model(input_ids=torch.tensor([doc_a])).logits
        alone_b = model(input_ids=torch.tensor([doc_b])).logits
    torch.testing.assert_close(packed[0, :5], alone_a[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(packed[0, 5:], alone_b[0], atol=1e-5, rtol=0)
