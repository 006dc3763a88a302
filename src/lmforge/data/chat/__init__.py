"""Chat templates and loss masks: which template a run uses, rendering it as transformers does, and the exact
token labels of each conversation derived from it (masks.py is the entry point: encode, encode_batch,
generation_prompt)."""
