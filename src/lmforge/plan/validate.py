"""What `lmforge plan` checks before estimating: the tokenizer and chat template load, every training file reads
(each record parsed, as training parses it), and the first records render and mask with the real tokenizer
through the data layer's own encoders. Problems raise the same errors `lmforge train` would raise, before any
model weight is read."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.config.recipe import Recipe
from lmforge.config.settings import data_settings
from lmforge.data.build.encode import EncodeSettings, encode_samples
from lmforge.data.build.text import tokenize_documents
from lmforge.data.examples import trained_tokens
from lmforge.data.sources.read import read_source
from lmforge.data.sources.registry import resolve_sources
from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import LmforgeError
from lmforge.model.load import load_tokenizer, run_template

FIRST_RECORDS = 8  # records rendered and masked per plan


@dataclass(frozen=True)
class Checked:
    """What the checks saw."""

    tokenizer: Tokenizer
    template: str | None
    records: int  # records read from every training source
    rendered: int  # records rendered and masked
    longest: int  # the longest rendered sample in tokens (each side of a pair)
    trained: int  # loss-bearing tokens of the rendered samples
    tokens: int  # tokens of the rendered samples


def check_recipe(recipe: Recipe) -> Checked:
    """Load the tokenizer and template, read every training record, render and mask the first few."""
    tokenizer = load_tokenizer(recipe.model)
    template = run_template(recipe.model, recipe.stage, tokenizer)
    data = data_settings(recipe, template)
    records = []
    for source in resolve_sources(data.sources, data.registry, data.stage):
        records.extend(read_source(source, data.stage, on_error=data.on_error).records)
    first = records[:FIRST_RECORDS]
    if recipe.stage == "pt":
        sides = [(ids, ids) for ids in tokenize_documents(tokenizer, [r.text for r in first])]
    else:
        sides = []
        for outcome in encode_samples(tokenizer, first, EncodeSettings.of(data)):
            if isinstance(outcome, LmforgeError):
                if data.on_error == "strict":
                    raise LmforgeError(f"{outcome}; or set data.on_error: skip to leave such records out") from None
                continue
            sides.extend((enc.input_ids, enc.labels) for sample in outcome for enc in sample.sides)
    return Checked(
        tokenizer=tokenizer,
        template=template,
        records=len(records),
        rendered=len(first),
        longest=max((len(ids) for ids, _ in sides), default=0),
        trained=sum(trained_tokens(labels) for _, labels in sides),
        tokens=sum(len(ids) for ids, _ in sides),
    )
