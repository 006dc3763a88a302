"""The data layer: records in, encoded examples out.

- records.py: the input contract, the canonical records every reader produces (and which kind each stage reads).
- examples.py, rows.py: the output contract, examples as flat arrays, IGNORE_INDEX, the one trained-token count,
  and the rows the trainer reads from them.
- sources/: files and formats to records: files, formats, messages, sharegpt, registry, mixing, problems and rejects.
- chat/: chat templates and loss masks: templates (and the built-in .jinja files), render, masks, token spans,
  turn ends.
- build/: one pipeline for every stage: encode (one encoder per record kind), truncate, workers, stream, text,
  packing, cache, report.

It takes small frozen settings (config/settings.py) and a tokenizer; it imports no model, training, inference or
command code.
"""
