"""The `lmforge data ...` commands: they load what a recipe names (its tokenizer, through model/) and hand it to
the data layer, then show the result. The `lmforge` command line (cli.py) parses and calls one function here."""
