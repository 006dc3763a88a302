"""The tokenizer type lmforge's functions take: a transformers tokenizer (a fast, tokenizers-backed one where the
masks need character offsets). Imported for annotations only (`if TYPE_CHECKING:`), so it costs no import."""

from transformers import PreTrainedTokenizerBase

Tokenizer = PreTrainedTokenizerBase
