"""Log-likelihoods of labelled tokens, the one computation under perplexity and multiple choice.

A row is (token ids, labels) as the data layer encodes it: label IGNORE_INDEX where no loss is taken, else the
token itself; each labelled token is predicted from the tokens before it (the causal shift training applies), so
a row's first label is never scored.
"""

from __future__ import annotations

import torch

from lmforge.data.examples import IGNORE_INDEX

Row = tuple[list[int], list[int]]


@torch.no_grad()
def row_logps(model, rows: list[Row], batch_size: int) -> list[float]:
    """The sum of log p(token | tokens before it) over each row's labelled tokens, `batch_size` rows a forward
    pass (right-padded; the padding is masked and unlabelled)."""
    sums: list[float] = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        longest = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([i + [0] * (longest - len(i)) for i, _ in batch], device=model.device)
        labels = torch.tensor([lab + [IGNORE_INDEX] * (longest - len(lab)) for _, lab in batch], device=model.device)
        mask = torch.tensor([[1] * len(i) + [0] * (longest - len(i)) for i, _ in batch], device=model.device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        for row_logits, targets in zip(logits, labels[:, 1:]):  # one row's float32 log-softmax at a time
            scored = targets != IGNORE_INDEX
            logps = torch.log_softmax(row_logits[scored].float(), dim=-1)
            sums.append(logps.gather(-1, targets[scored].unsqueeze(-1)).sum().item())
    return sums
