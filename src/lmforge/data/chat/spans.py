"""Token spans: from labelled character spans to token labels, and the {% generation %} cross-check, on token
offsets.

`masks.py` derives which characters of the training text the model must generate; here a token is
labelled when its characters overlap such a span (`label_tokens`), and the labelled tokens are compared
with the ones transformers' assistant mask marks for the template's {% generation %} blocks
(`check_generation`): a token is marked there when it overlaps a block's span, found in one pass over
the tokens.

Both are defined by scans over the tokens in order. Where the offsets run forward (each token's start
and end at or after the previous token's: every tokenizer we know of), the tokens of a span are a
range found by bisection, which gives the same tokens without a Python loop over all of them;
otherwise the scans run as defined. tests/data/chat/test_spans.py checks that both agree.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING

from tokenizers import Tokenizer as RustTokenizer
from transformers import PreTrainedTokenizerBase

try:
    from transformers.tokenization_utils_tokenizers import TokenizersBackend
except ImportError:  # another transformers layout: always go through tokenizer(...)
    TokenizersBackend = None

from lmforge.data.chat.templates import builtin_names
from lmforge.data.examples import IGNORE_INDEX
from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

Offsets = list[tuple[int, int]]
Bounds = tuple[tuple[int, ...], tuple[int, ...]]  # (token starts, token ends)


def tokenize(tokenizer: Tokenizer, texts: list[str], where: str) -> list[tuple[list[int], Offsets]]:
    """(input_ids, character offsets) of each text, in one tokenizer call.

    `tokenizer(texts, add_special_tokens=False, ...)` on a tokenizers-backed tokenizer turns truncation
    and padding off and sets `encode_special_tokens` on its Rust tokenizer, calls its `encode_batch`, then
    copies each encoding into a BatchEncoding. Where the Rust tokenizer is already in that state and the
    class does not change the call, `encode_batch` is called directly and the ids and offsets read from
    its encodings: the same values, without the copies (about a tenth of the tokenising time).
    """
    backend = _direct_backend(tokenizer)
    if backend is not None:
        return [(e.ids, e.offsets) for e in backend.encode_batch(texts, add_special_tokens=False)]
    try:
        enc = tokenizer(
            texts,
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
    except NotImplementedError as err:
        raise LmforgeError(
            f"{where}: masks need character offsets, which this tokenizer cannot give ({err}); use "
            "a fast (tokenizers-backed) tokenizer"
        ) from None
    return list(zip(enc["input_ids"], enc["offset_mapping"]))


def _direct_backend(tokenizer: Tokenizer):
    """The Rust tokenizer when calling it directly gives what `tokenizer(...)` gives (see `tokenize`), else None."""
    backend = getattr(tokenizer, "_tokenizer", None)
    cls = type(tokenizer)
    if TokenizersBackend is None or not (
        isinstance(backend, RustTokenizer)
        and cls._encode_plus is TokenizersBackend._encode_plus
        and cls.__call__ is PreTrainedTokenizerBase.__call__
        and not hasattr(tokenizer, "_switch_to_input_mode")
    ):
        return None
    if (
        backend.truncation is not None
        or backend.padding is not None
        or backend.encode_special_tokens != bool(tokenizer.split_special_tokens)
    ):
        return None  # the call changes this state first: take the call (later batches can then go direct)
    return backend


def forward_bounds(offsets: Offsets) -> Bounds | None:
    """(starts, ends) of the tokens when neither ever decreases, else None."""
    if not offsets:
        return None
    starts, ends = zip(*offsets)
    if sorted(starts) == list(starts) and sorted(ends) == list(ends):
        return starts, ends
    return None


def label_tokens(
    text: str,
    input_ids: list[int],
    offsets: Offsets,
    spans: list[tuple[int, int]],
    where: str,
    bounds: Bounds | None = None,
) -> tuple[list[int], list[tuple[int, int]]]:
    """(labels, each span's token range): each token whose characters overlap a span is labelled, and
    the labelled tokens must cover every span and hold no prompt text besides whitespace."""
    labels = [IGNORE_INDEX] * len(input_ids)
    ranges = []
    for (span_start, span_end), (first, stop, reach) in zip(spans, _span_tokens(offsets, spans, bounds)):
        labels[first:stop] = input_ids[first:stop]
        ranges.append((first, stop))
        if reach < span_end:
            raise LmforgeError(
                f"{where}: the tokenizer's character offsets do not cover the reply at "
                f"characters {span_start}-{span_end} (offsets stop at {reach}); the mask cannot be "
                "derived for this tokenizer"
            )
        if text[offsets[first][0] : span_start].strip():  # a token holding prompt text besides whitespace
            raise LmforgeError(
                f"{where}: token boundary: the token {text[offsets[first][0] : offsets[first][1]]!r} joins the "
                "end of the generation prompt to the reply, so the model would be trained to write part of its "
                "prompt. Remove the reply's leading whitespace, or choose a template whose markers are special "
                "tokens of this tokenizer with model.chat_template"
            )
    return labels, ranges


def _span_tokens(offsets: Offsets, spans: list[tuple[int, int]], bounds: Bounds | None) -> list[tuple[int, int, int]]:
    """(first token, stop token, furthest character reached) of each span, spans in order: from the
    token after the previous span's, skip tokens that end at or before the span's start, then take
    tokens while they start before its end."""
    out = []
    k, n = 0, len(offsets)
    if bounds is not None:
        starts, ends = bounds
        for span_start, span_end in spans:
            first = bisect_right(ends, span_start, k)
            k = bisect_left(starts, span_end, first)
            out.append((first, k, max(span_start, ends[k - 1]) if k > first else span_start))
        return out
    for span_start, span_end in spans:
        while k < n and offsets[k][1] <= span_start:
            k += 1
        first, reach = k, span_start
        while k < n and offsets[k][0] < span_end:
            reach = max(reach, offsets[k][1])
            k += 1
        out.append((first, k, reach))
    return out


def generation_marks(offsets: Offsets, spans: list[tuple[int, int]]) -> list[bool]:
    """The tokens transformers' assistant mask marks for these {% generation %} spans: in one pass over
    tokens and spans in order, a token is marked when it ends after the start of the first span it does
    not start past the end of."""
    marks = [False] * len(offsets)
    j, n_spans = 0, len(spans)
    for k, (start, end) in enumerate(offsets):
        while j < n_spans and start >= spans[j][1]:
            j += 1
        if j == n_spans:
            break
        if end > spans[j][0]:
            marks[k] = True
    return marks


def check_generation(
    tokenizer: Tokenizer,
    where: str,
    input_ids: list[int],
    offsets: Offsets,
    labels: list[int],
    ranges: list[tuple[int, int]],
    spans: list[tuple[int, int]],
    last_only: bool,
    bounds: Bounds | None = None,
) -> None:
    """The labelled tokens must be exactly the ones the {% generation %} spans mark (with last_only: their
    last run of marked tokens)."""
    if bounds is not None and _in_order(spans):
        starts, ends = bounds
        # forward offsets: a span marks the tokens that end after its start and start before its end
        theirs = _runs((bisect_right(ends, start), bisect_left(starts, end)) for start, end in spans)
        if (theirs[-1:] if last_only else theirs) == _runs(ranges):
            return
    compare_marks(tokenizer, where, input_ids, labels, generation_marks(offsets, spans), last_only)


def compare_marks(
    tokenizer: Tokenizer, where: str, input_ids: list[int], labels: list[int], theirs: list[bool], last_only: bool
) -> None:
    """The labelled tokens must be exactly the marked ones (with last_only: the last run of marked tokens)."""
    if last_only and any(theirs):  # keep only their last run of marked tokens
        last = max(k for k, marked in enumerate(theirs) if marked)
        first = next(k for k in range(last, -1, -1) if k == 0 or not theirs[k - 1])
        theirs = [first <= k <= last for k in range(len(theirs))]
    ours = [label != IGNORE_INDEX for label in labels]
    if theirs != ours:
        bad = next(k for k, (a, b) in enumerate(zip(theirs, ours)) if a != b)
        raise LmforgeError(
            f"{where}: the template's {{% generation %}} blocks mark other tokens than the derived mask, first "
            f"at token {bad} ({tokenizer.decode(input_ids[max(bad - 3, 0) : bad + 3])!r}); the generation "
            "blocks should hold exactly each reply and its end-of-turn token. Fix the template or choose another "
            f"with model.chat_template (built-ins: {builtin_names()})"
        )


def _in_order(spans: list[tuple[int, int]]) -> bool:
    """Each span ends at or after its start, and at or before the next one's start."""
    return all(start <= end for start, end in spans) and all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def _runs(ranges) -> list[tuple[int, int]]:
    """The maximal runs of consecutive tokens covered by token ranges given in order of their starts."""
    out: list[tuple[int, int]] = []
    for first, stop in ranges:
        if first >= stop:
            continue
        if out and first <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], stop))
        else:
            out.append((first, stop))
    return out
