"""The next token of each row of a decode step, each row with its own settings: greedy where the temperature is
0, else sampled from the temperature-scaled distribution cut to its top-p mass, with the row's own seeded
generator (so a seeded request repeats whatever else is in the batch). Log-probabilities, where asked, are the
model's own (before temperature and top-p), read from the same step's logits."""

from __future__ import annotations

import torch

from lmforge.serve.sequence import Sequence, TokenLogprob


def pick(logits: torch.Tensor, rows: list[Sequence]) -> list[tuple[int, TokenLogprob | None]]:
    """For a [rows, vocab] tensor of last-position logits, each row's token and its log-probabilities."""
    logits = logits.float()
    chosen = logits.argmax(dim=-1).tolist()
    for i, seq in enumerate(rows):
        if seq.settings.temperature > 0:
            chosen[i] = _sample(logits[i], seq)
    wanted = [i for i, seq in enumerate(rows) if seq.settings.top_logprobs is not None]
    logprobs: list[TokenLogprob | None] = [None] * len(rows)
    if wanted:
        table = torch.log_softmax(logits[wanted], dim=-1)
        for row, i in zip(table, wanted):
            logprobs[i] = _logprob(row, chosen[i], rows[i].settings.top_logprobs or 0)
    return list(zip(chosen, logprobs))


def _sample(logits: torch.Tensor, seq: Sequence) -> int:
    probs = torch.softmax(logits / seq.settings.temperature, dim=-1)
    if seq.settings.top_p < 1:
        ordered, order = probs.sort(descending=True)
        before = ordered.cumsum(0) - ordered  # the mass of the likelier tokens
        ordered[before >= seq.settings.top_p] = 0
        probs = torch.zeros_like(probs).scatter_(0, order, ordered)
    return int(torch.multinomial(probs, 1, generator=seq.generator))


def _logprob(row: torch.Tensor, token: int, top: int) -> TokenLogprob:
    best = row.topk(top) if top else None
    pairs = tuple(zip(best.indices.tolist(), best.values.tolist())) if best is not None else ()
    return TokenLogprob(token, float(row[token]), pairs)
