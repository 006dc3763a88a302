"""Mixing several datasets into one training set, by weight, ratio or sample count, reproducibly; and the seeded
eval split taken from the mix (`take_eval`).

Each source i has n_i records and at most one mixing key. Its target count t_i is:

- no key: t_i = n_i (the whole dataset, once);
- `weight: w`: t_i = round(w * n_i) — a multiplier of the dataset's own size: 2 = two passes, 0.5 = a random half;
- `samples: s`: t_i = s;
- `ratio: r`: the dataset is the share r of the final mix. Let F be the sum of the targets of the sources without
  a ratio and R the sum of the ratios.
  - every source has a ratio: the ratios must sum to 1 and the mix has as many records as the sources together,
    T = sum n_i;
  - some do not: R must be below 1 and T = round(F / (1 - R)), so that the ratio sources are exactly the share R.
  The T - F ratio records are split in proportion r_i / R by largest remainder (floors first, then one more
  to the largest fractional parts, earlier sources first on ties), so they sum to T - F exactly.
round() is half up. A source with a mixing key whose target is 0, or which is empty, is an error.

Drawing t records from n: floor(t / n) whole copies in file order, then a seeded sample without replacement of
the remaining t mod n records. Each source draws with its own generator seeded by (seed, position), so one
source's draw does not depend on the other sources' sizes. Repeated records are the same objects.

With no mixing key anywhere, the result is the plain concatenation in recipe order. With any key, the drawn
records are shuffled together (seeded), so the datasets are interleaved. The same seed gives the same mix.
"""

from __future__ import annotations

import math
import random
from typing import Any

from lmforge.config.settings import Source
from lmforge.errors import LmforgeError

_EPS = 1e-9


def mix(parts: list[tuple[Source, list]], seed: int) -> tuple[list, dict[str, int]]:
    """(the mixed records, how many records each source contributes, keyed by source label)."""
    sources = [source for source, _ in parts]
    sizes = [len(records) for _, records in parts]
    labels = source_labels(sources)
    if not any(s.mix_key() for s in sources):
        return [r for _, records in parts for r in records], dict(zip(labels, sizes))
    counts = targets(sources, sizes)
    mixed: list = []
    for i, ((_, records), count) in enumerate(zip(parts, counts)):
        mixed.extend(draw(records, count, random.Random(f"lmforge-mix:{seed}:{i}")))
    random.Random(f"lmforge-mix:{seed}:order").shuffle(mixed)
    return mixed, dict(zip(labels, counts))


def targets(sources: list[Source], sizes: list[int]) -> list[int]:
    """How many records each source contributes to the mix (see the module docstring)."""
    counts: list[int | None] = [None if s.ratio is not None else _fixed(s, n) for s, n in zip(sources, sizes)]
    ratio_at = [i for i, s in enumerate(sources) if s.ratio is not None]
    if ratio_at:
        fixed_total = sum(c for c in counts if c is not None)
        pool = _ratio_pool(sources, sizes, ratio_at, fixed_total)
        shares = _largest_remainder(pool, [sources[i].ratio for i in ratio_at])
        for i, share in zip(ratio_at, shares):
            counts[i] = share
    final = [int(c or 0) for c in counts]
    for source, n, count in zip(sources, sizes, final):
        _check_drawable(source, n, count)
    return final


def draw(records: list, count: int, rng: random.Random) -> list:
    """`count` records: whole copies of `records` in order, then a sample without replacement of the rest."""
    if count and not records:
        raise LmforgeError(f"cannot draw {count} records from an empty dataset")
    copies, rest = divmod(count, len(records)) if records else (0, 0)
    picked = sorted(rng.sample(range(len(records)), rest))
    return records * copies + [records[j] for j in picked]


def source_labels(sources: list[Source]) -> list[str]:
    """Each source's label; a label used twice gets ` #2`, ` #3`, ... so counts stay apart."""
    seen: dict[str, int] = {}
    labels = []
    for source in sources:
        label = source.label()
        seen[label] = seen.get(label, 0) + 1
        labels.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return labels


def _round(x: float) -> int:
    return math.floor(x + 0.5 + _EPS)


def _fixed(source: Source, n: int) -> int:
    if source.samples is not None:
        return source.samples
    if source.weight is not None:
        return _round(source.weight * n)
    return n


def _ratio_pool(sources: list[Source], sizes: list[int], ratio_at: list[int], fixed_total: int) -> int:
    """How many records the ratio sources share: T - F (module docstring)."""
    total_ratio = sum(sources[i].ratio for i in ratio_at)
    named = ", ".join(f"{sources[i].label()}={sources[i].ratio:g}" for i in ratio_at)
    if len(ratio_at) == len(sources):
        if abs(total_ratio - 1) > 1e-6:
            raise LmforgeError(
                f"data.train: when every dataset has a ratio, the ratios must sum to 1; they sum to "
                f"{total_ratio:g} ({named})"
            )
        return sum(sizes)
    if total_ratio >= 1 - 1e-6:
        others = ", ".join(s.label() for s in sources if s.ratio is None)
        raise LmforgeError(
            f"data.train: the ratios sum to {total_ratio:g} ({named}), which leaves no room for the "
            f"datasets without a ratio ({others}); lower the ratios below 1 in total, or give "
            "every dataset a ratio"
        )
    return _round(fixed_total / (1 - total_ratio)) - fixed_total


def _largest_remainder(pool: int, ratios: list[Any]) -> list[int]:
    total = sum(ratios)
    exact = [pool * r / total for r in ratios]
    shares = [math.floor(x + _EPS) for x in exact]
    left = pool - sum(shares)
    order = sorted(range(len(ratios)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[: max(left, 0)]:
        shares[i] += 1
    return shares


def _check_drawable(source: Source, n: int, count: int) -> None:
    if not source.mix_key():
        return
    key = source.mix_key()
    setting = f"{key} {getattr(source, key):g}"
    if n == 0:
        raise LmforgeError(f"data.train: {source.label()} has no records, so {setting} cannot draw from it")
    if count == 0:
        raise LmforgeError(
            f"data.train: {source.label()} ({n} records) would contribute 0 records with {setting}; "
            "raise it or remove the dataset"
        )


def eval_indices(n: int, fraction: float, seed: int) -> set[int]:
    """The seeded eval choice: round(n * fraction) indices (at least one), leaving at least one to train."""
    n_eval = max(1, round(n * fraction))
    if n_eval >= n:
        raise LmforgeError(
            f"data.eval.fraction {fraction} of {n} records leaves nothing to "
            "train on; lower the fraction or add records"
        )
    return set(random.Random(seed).sample(range(n), n_eval))


def take_eval(records: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, eval): a seeded random `fraction` of the records (at least one) for eval, keeping their order; no
    copy of an eval record (mixing may repeat records) stays in train."""
    chosen = eval_indices(len(records), fraction, seed)
    evaluation, held = [], set()
    for i in sorted(chosen):
        if id(records[i]) not in held:
            held.add(id(records[i]))
            evaluation.append(records[i])
    train = [r for r in records if id(r) not in held]
    if not train:
        raise LmforgeError(
            f"data.eval.fraction {fraction} takes every distinct record for eval; lower the fraction or add records"
        )
    return train, evaluation
