"""Preference losses against TRL as the oracle: loss, gradients and logged metrics within 1e-4.

Each TRL test builds the TRL trainer on a tiny Llama and a 2-3 example dataset (no training loop),
takes one batch from TRL's own collator, and compares TRL's `compute_loss` (its loss, the policy's
gradients, the metrics it logs) with lmforge's path on the same batch: model logits ->
`sequence_logps` -> the loss function. Where TRL departs from the paper we follow the paper; the
test of that loss says how the two differ and what is compared instead.
"""

from __future__ import annotations

import copy
import importlib
import os

import pytest
import torch

from lmforge.data.examples import IGNORE_INDEX
from lmforge.data.rows import kl_mismatch_order
from lmforge.errors import LmforgeError
from lmforge.train.preference_losses import (
    chosen_nll,
    dpo_loss,
    kto_loss,
    orpo_loss,
    reward_pairwise_loss,
    sequence_logps,
    simpo_loss,
)

TOL = dict(atol=1e-4, rtol=1e-4)
PAIRS = [
    {"prompt": "what is a", "chosen": " yes", "rejected": " no no"},
    {"prompt": "b?", "chosen": " ok.", "rejected": " x"},
    {"prompt": "say cc", "chosen": " cc cc", "rejected": " dd"},
]


@pytest.fixture(scope="module")
def trl():
    """TRL is a test-only dependency (the `dev` extra): skip without it, except in CI where it must be there."""
    try:
        return importlib.import_module("trl")
    except ImportError:
        message = "trl is not installed; the preference-loss oracle tests need it: pip install -e '.[dev]'"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def tokenizer():
    """One token per character: tokenising prompt + completion never merges across the boundary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<unk>", *"abcdefghijklmnopqrstuvwxyz ?."])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def tiny_model(seed: int, reward: bool = False):
    """A one-layer Llama; a wide initialisation so that log-probs and rewards differ between sequences."""
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.3, pad_token_id=0,
        eos_token_id=1, bos_token_id=None, num_labels=1,
    )  # fmt: skip
    torch.manual_seed(seed)
    return (LlamaForSequenceClassification if reward else LlamaForCausalLM)(config).train()


def trl_args(config_cls, tmp_path, batch_size: int, **kwargs):
    """fp32 throughout: TRL's configs default to bf16, which would run the reference model under autocast. TRL's
    configs also default to gradient checkpointing, under the name transformers 5 deprecates (a FutureWarning on
    every config): set under its current name, and off, as it changes no loss or gradient."""
    return config_cls(
        output_dir=str(tmp_path),
        report_to=[],
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=batch_size,
        activation_checkpointing=False,
        **kwargs,
    )


def one_batch(trainer, rows=None):
    rows = rows if rows is not None else [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    return trainer.data_collator(rows)


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_grads(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    g_ours, g_theirs = grads(ours), grads(theirs)
    assert g_ours.keys() == g_theirs.keys() and g_ours
    for name in g_ours:
        torch.testing.assert_close(g_ours[name], g_theirs[name], **TOL, msg=f"gradient of {name}")


def assert_same_metrics(ours: dict[str, float], theirs: dict[str, list[float]], skip: tuple[str, ...] = ()) -> None:
    for key, value in ours.items():
        if key in skip:
            continue
        assert key in theirs, f"{key} is not a metric TRL logs ({sorted(theirs)})"
        assert value == pytest.approx(theirs[key][-1], **{"abs": TOL["atol"], "rel": TOL["rtol"]}), key


def logps_of(model, input_ids, attention_mask, labels):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return sequence_logps(logits, labels)


def completion_labels(batch: dict, prefix: str = "") -> torch.Tensor:
    return batch[f"{prefix}input_ids"].masked_fill(batch[f"{prefix}completion_mask"] == 0, IGNORE_INDEX)


# --- sequence_logps ------------------------------------------------------------------------------


def test_sequence_logps_sums_shifted_unignored_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 4, IGNORE_INDEX], [IGNORE_INDEX, 1, 2, 6, 0]])
    total, count = sequence_logps(logits, labels)
    log_probs = logits.log_softmax(-1)
    first = log_probs[0, 1, 3] + log_probs[0, 2, 4]
    second = log_probs[1, 0, 1] + log_probs[1, 1, 2] + log_probs[1, 2, 6] + log_probs[1, 3, 0]
    expected = torch.stack([first, second])
    torch.testing.assert_close(total, expected)
    assert count.tolist() == [2, 4]
    bf16_total, _ = sequence_logps(logits.bfloat16(), labels)
    assert bf16_total.dtype == torch.float32
    torch.testing.assert_close(bf16_total, total, atol=0.1, rtol=0.02)


def test_sequence_logps_rejects_mismatched_shapes():
    with pytest.raises(LmforgeError, match="disagree"):
        sequence_logps(torch.zeros(2, 5, 7), torch.zeros(2, 4, dtype=torch.long))


# --- reward model --------------------------------------------------------------------------------


@pytest.mark.parametrize("with_margin", [False, True])
def test_reward_pairwise_loss_matches_trl_reward_trainer(trl, tokenizer, tmp_path, with_margin):
    from datasets import Dataset

    rows = [{"chosen": p["prompt"] + p["chosen"], "rejected": p["prompt"] + p["rejected"]} for p in PAIRS]
    if with_margin:
        rows = [{**r, "margin": m} for r, m in zip(rows, [0.5, 1.0, 0.0])]
    ours = tiny_model(0, reward=True)
    trainer = trl.RewardTrainer(
        model=copy.deepcopy(ours), args=trl_args(trl.RewardConfig, tmp_path, 3),
        train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
    )  # fmt: skip
    batch = one_batch(trainer)
    their_loss = trainer.compute_loss(trainer.model, batch)
    their_loss.backward()

    rewards = ours(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    chosen, rejected = rewards.chunk(2)
    loss, metrics = reward_pairwise_loss(chosen, rejected, batch.get("margin"))
    loss.backward()
    torch.testing.assert_close(loss, their_loss.detach(), **TOL)
    assert_same_grads(ours, trainer.model)
    assert_same_metrics(metrics, trainer._metrics["train"])


# --- DPO -----------------------------------------------------------------------------------------


def dpo_trainer(trl, tokenizer, tmp_path, policy, reference, **config):
    from datasets import Dataset

    return trl.DPOTrainer(
        model=copy.deepcopy(policy), ref_model=copy.deepcopy(reference),
        args=trl_args(trl.DPOConfig, tmp_path, len(PAIRS), **config),
        train_dataset=Dataset.from_list(PAIRS), processing_class=tokenizer,
    )  # fmt: skip


def our_dpo_inputs(policy, reference, batch):
    """Summed log-probs and completion lengths of [chosen..., rejected...] under policy and reference."""
    labels = completion_labels(batch)
    policy_logps, lengths = logps_of(policy, batch["input_ids"], batch["attention_mask"], labels)
    with torch.no_grad():
        reference_logps, _ = logps_of(reference, batch["input_ids"], batch["attention_mask"], labels)
    return (*policy_logps.chunk(2), *reference_logps.chunk(2)), lengths.chunk(2)


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
def test_dpo_loss_matches_trl_dpo_trainer(trl, tokenizer, tmp_path, loss_type):
    """IPO: TRL divides each log-ratio by its completion length (the form the IPO authors ran,
    per TRL's note); the paper's eq. 17 uses the sums. Passing the lengths selects TRL's form, which
    is compared here; the paper's form is checked against the formula below."""
    policy, reference = tiny_model(0), tiny_model(1)
    beta = 0.3
    trainer = dpo_trainer(trl, tokenizer, tmp_path, policy, reference, loss_type=[loss_type], beta=beta)
    batch = one_batch(trainer)
    their_loss = trainer.compute_loss(trainer.model, batch)
    their_loss.backward()

    logps, (chosen_lengths, rejected_lengths) = our_dpo_inputs(policy, reference, batch)
    lengths = dict(chosen_lengths=chosen_lengths, rejected_lengths=rejected_lengths) if loss_type == "ipo" else {}
    loss, metrics = dpo_loss(*logps, beta=beta, loss_type=loss_type, **lengths)
    loss.backward()
    torch.testing.assert_close(loss, their_loss.detach(), **TOL)
    assert_same_grads(policy, trainer.model)
    assert_same_metrics(metrics, trainer._metrics["train"])
    assert 0.0 < metrics["rewards/accuracies"] < 1.0  # the batch exercises both outcomes


def test_dpo_with_an_nll_term_on_chosen_matches_trl_sigmoid_plus_sft(trl, tokenizer, tmp_path):
    """RPO: DPO plus w x the chosen replies' per-token NLL; TRL combines loss_type ["sigmoid", "sft"]
    with loss_weights [1, w]."""
    policy, reference = tiny_model(0), tiny_model(1)
    beta, weight = 0.3, 0.7
    trainer = dpo_trainer(
        trl, tokenizer, tmp_path, policy, reference, loss_type=["sigmoid", "sft"], loss_weights=[1.0, weight], beta=beta
    )
    batch = one_batch(trainer)
    their_loss = trainer.compute_loss(trainer.model, batch)
    their_loss.backward()

    logps, (chosen_lengths, _) = our_dpo_inputs(policy, reference, batch)
    loss, _ = dpo_loss(*logps, beta=beta)
    nll = chosen_nll(logps[0], chosen_lengths)
    total = loss + weight * nll
    total.backward()
    torch.testing.assert_close(total, their_loss.detach(), **TOL)
    assert_same_grads(policy, trainer.model)
    assert nll > 0


def test_conservative_dpo_matches_trl_on_flipped_pairs(trl, tokenizer, tmp_path):
    """cDPO: TRL >= 1 dropped label smoothing from loss_type 'sigmoid' (it lives on only in 'robust',
    which is a different, unbiased estimator). Conservative DPO (Mitchell 2023) is the expected
    sigmoid loss when each label is flipped with probability ε, so TRL's oracle is
    (1-ε) · TRL(pairs) + ε · TRL(pairs with chosen and rejected swapped)."""
    policy, reference = tiny_model(0), tiny_model(1)
    beta, eps = 0.3, 0.1
    trainer = dpo_trainer(trl, tokenizer, tmp_path, policy, reference, loss_type=["sigmoid"], beta=beta)
    rows = [trainer.train_dataset[i] for i in range(len(PAIRS))]
    flipped = [{**r, "chosen_ids": r["rejected_ids"], "rejected_ids": r["chosen_ids"]} for r in rows]
    their_flipped = trainer.compute_loss(trainer.model, one_batch(trainer, flipped))
    batch = one_batch(trainer, rows)
    their_loss = (1 - eps) * trainer.compute_loss(trainer.model, batch) + eps * their_flipped
    their_loss.backward()

    logps, _ = our_dpo_inputs(policy, reference, batch)
    loss, metrics = dpo_loss(*logps, beta=beta, label_smoothing=eps)
    loss.backward()
    torch.testing.assert_close(loss, their_loss.detach(), **TOL)
    assert_same_grads(policy, trainer.model)
    assert_same_metrics(metrics, trainer._metrics["train"])


def test_ipo_without_lengths_is_the_papers_eq_17_on_summed_logratios():
    policy_c, policy_r = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0])
    ref_c, ref_r = torch.tensor([-11.0, -5.0]), torch.tensor([-11.5, -3.5])
    tau = 0.5
    h = (policy_c - ref_c) - (policy_r - ref_r)
    loss, _ = dpo_loss(policy_c, policy_r, ref_c, ref_r, beta=tau, loss_type="ipo")
    torch.testing.assert_close(loss, ((h - 1 / (2 * tau)) ** 2).mean())


def test_dpo_loss_rejects_bad_arguments():
    x = torch.zeros(2)
    with pytest.raises(LmforgeError, match="loss_type 'kto' is unknown"):
        dpo_loss(x, x, x, x, loss_type="kto")
    with pytest.raises(LmforgeError, match="label_smoothing applies to loss_type 'sigmoid'"):
        dpo_loss(x, x, x, x, loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(LmforgeError, match="outside"):
        dpo_loss(x, x, x, x, label_smoothing=0.5)
    with pytest.raises(LmforgeError, match="equal shapes"):
        dpo_loss(x, torch.zeros(3), x, x)


# --- SimPO and ORPO (reference-free) -------------------------------------------------------------


def paired_trainer(trainer_cls, config_cls, tokenizer, tmp_path, policy, pairs, **config):
    from datasets import Dataset

    return trainer_cls(
        model=copy.deepcopy(policy), args=trl_args(config_cls, tmp_path, len(pairs), **config),
        train_dataset=Dataset.from_list(pairs), processing_class=tokenizer,
    )  # fmt: skip


def our_average_logps(policy, batch):
    """Length-averaged log-probs of the chosen and rejected completions in a CPO/ORPO-style batch."""
    averages = []
    for side in ("chosen", "rejected"):
        total, count = logps_of(
            policy, batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"], batch[f"{side}_labels"]
        )
        averages.append(total / count)
    return averages


def test_simpo_loss_matches_trl_cpo_trainer(trl, tokenizer, tmp_path):
    """TRL runs SimPO as CPOTrainer(loss_type='simpo') with cpo_alpha=0 (no NLL term, as in the paper)."""
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    policy, beta, gamma = tiny_model(0), 2.0, 0.5
    trainer = paired_trainer(
        CPOTrainer, CPOConfig, tokenizer, tmp_path, policy, PAIRS, loss_type="simpo", cpo_alpha=0.0, beta=beta,
        simpo_gamma=gamma,
    )  # fmt: skip
    batch = one_batch(trainer)
    their_loss = trainer.compute_loss(trainer.model, batch)
    their_loss.backward()

    loss, metrics = simpo_loss(*our_average_logps(policy, batch), beta=beta, gamma=gamma)
    loss.backward()
    torch.testing.assert_close(loss, their_loss.detach(), **TOL)
    assert_same_grads(policy, trainer.model)
    assert_same_metrics(metrics, trainer._stored_metrics["train"])


# One-character prompts and equal-length chosen completions: here TRL's NLL term equals the paper's.
ORPO_ALIGNED_PAIRS = [
    {"prompt": "a", "chosen": " yes", "rejected": " no no"},
    {"prompt": "b", "chosen": " ok.", "rejected": " x"},
    {"prompt": "c", "chosen": " cc.", "rejected": " dd"},
]


def test_orpo_loss_matches_trl_orpo_trainer(trl, tokenizer, tmp_path):
    """ORPO's L_SFT is the chosen completion's mean token NLL, averaged over pairs (paper eqs. 1, 6).
    TRL's ORPOTrainer takes the NLL over prompt + completion and averages it over all tokens of the
    batch. The two agree when the prompt is one token (the first token is never predicted) and the
    chosen completions have one length, so loss and gradients are compared on such a batch; the
    odds-ratio term and every other metric are also compared on the general batch below."""
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    policy, beta = tiny_model(0), 0.2
    trainer = paired_trainer(ORPOTrainer, ORPOConfig, tokenizer, tmp_path, policy, ORPO_ALIGNED_PAIRS, beta=beta)
    batch = one_batch(trainer)
    their_loss = trainer.compute_loss(trainer.model, batch)
    their_loss.backward()

    loss, metrics = orpo_loss(*our_average_logps(policy, batch), beta=beta)
    loss.backward()
    torch.testing.assert_close(loss, their_loss.detach(), **TOL)
    assert_same_grads(policy, trainer.model)
    assert_same_metrics(metrics, trainer._stored_metrics["train"])


def test_orpo_odds_ratio_term_matches_trl_on_a_general_batch(trl, tokenizer, tmp_path):
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    policy, beta = tiny_model(0), 0.2
    trainer = paired_trainer(ORPOTrainer, ORPOConfig, tokenizer, tmp_path, policy, PAIRS, beta=beta)
    batch = one_batch(trainer)
    their_loss = trainer.compute_loss(trainer.model, batch).item()
    theirs = trainer._stored_metrics["train"]

    chosen, rejected = our_average_logps(policy, batch)
    loss, metrics = orpo_loss(chosen, rejected, beta=beta)
    assert_same_metrics(metrics, theirs, skip=("nll_loss",))
    assert metrics["nll_loss"] == pytest.approx(-chosen.mean().item())
    assert metrics["nll_loss"] != pytest.approx(theirs["nll_loss"][-1], abs=1e-3)  # the documented difference
    odds_ratio_term = loss.item() - metrics["nll_loss"]
    assert odds_ratio_term == pytest.approx(their_loss - theirs["nll_loss"][-1], abs=1e-4)


# --- KTO -----------------------------------------------------------------------------------------


KTO_EXAMPLES = [
    {"prompt": "what is a", "completion": " yes", "label": True},
    {"prompt": "b?", "completion": " x", "label": False},
    {"prompt": "say cc", "completion": " cc cc", "label": True},
    {"prompt": "dd", "completion": " no no", "label": False},
]


def test_kto_loss_matches_trl_kto_trainer(trl, tokenizer, tmp_path):
    """The KL reference point comes from the mismatched completions TRL's collator builds
    (KL_input_ids); `kl_mismatch_order` must describe the same pairing."""
    from datasets import Dataset

    policy, reference, beta = tiny_model(0), tiny_model(1), 0.3
    trainer = trl.KTOTrainer(
        model=copy.deepcopy(policy), ref_model=copy.deepcopy(reference),
        args=trl_args(trl.KTOConfig, tmp_path, len(KTO_EXAMPLES), beta=beta, desirable_weight=1.3,
                      undesirable_weight=0.7),
        train_dataset=Dataset.from_list(KTO_EXAMPLES), processing_class=tokenizer,
    )  # fmt: skip
    rows = [trainer.train_dataset[i] for i in range(len(KTO_EXAMPLES))]
    order = kl_mismatch_order(len(rows))
    assert [r["KL_completion_ids"] for r in rows] == [rows[j]["completion_ids"] for j in order]
    batch = one_batch(trainer, rows)
    their_loss = trainer.compute_loss(trainer.model, batch)
    their_loss.backward()

    labels, kl_labels = completion_labels(batch), completion_labels(batch, "KL_")
    policy_logps, _ = logps_of(policy, batch["input_ids"], batch["attention_mask"], labels)
    with torch.no_grad():
        reference_logps, _ = logps_of(reference, batch["input_ids"], batch["attention_mask"], labels)
        policy_kl, _ = logps_of(policy, batch["KL_input_ids"], batch["KL_attention_mask"], kl_labels)
        reference_kl, _ = logps_of(reference, batch["KL_input_ids"], batch["KL_attention_mask"], kl_labels)
    loss, metrics = kto_loss(
        policy_logps, reference_logps, batch["label"], policy_kl, reference_kl, beta=beta, desirable_weight=1.3,
        undesirable_weight=0.7,
    )  # fmt: skip
    loss.backward()
    torch.testing.assert_close(loss, their_loss.detach(), **TOL)
    assert_same_grads(policy, trainer.model)
    assert_same_metrics(metrics, trainer._metrics["train"])
    assert metrics["kl"] > 0  # the reference point is exercised, not clamped to 0


def test_kto_loss_with_one_kind_of_example_and_without_kl():
    logps, ref = torch.tensor([-3.0, -4.0]), torch.tensor([-3.5, -3.0])
    loss, metrics = kto_loss(logps, ref, torch.tensor([True, True]), None, None, beta=0.5, desirable_weight=2.0)
    expected = 2.0 * (1 - torch.sigmoid(0.5 * (logps - ref))).mean()
    torch.testing.assert_close(loss, expected)
    assert metrics["kl"] == 0.0 and "rewards/rejected" not in metrics and "rewards/margins" not in metrics
    with pytest.raises(LmforgeError, match="both"):
        kto_loss(logps, ref, torch.tensor([True, False]), logps, None)


def test_kl_mismatch_order_pairs_each_prompt_with_the_previous_completion():
    assert kl_mismatch_order(4) == [3, 0, 1, 2]
    assert kl_mismatch_order(1) == [0]
