"""The quickstart's own tokenizer and tiny model, built here so that nothing comes from a model hub.

Tokenizer: byte-level BPE (any text encodes, byte by byte at worst) trained on the synthetic task,
with ChatML-style special tokens. `<|im_end|>` is the eos token: it ends every chat turn and every
pretraining document, so the one stop token the model learns is the one generation stops at.
`<|endoftext|>` pads. There is no BOS token.

Model: a Llama-architecture decoder of a few million parameters with random weights, saved with the
tokenizer files so that a recipe can name one directory.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from lmforge.quickstart import synth

IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]
VOCAB_SIZE = 512

# Our ChatML-style template. The reply and its <|im_end|> sit in {% generation %} so that the
# assistant mask transformers derives agrees with the one lmforge derives (data/masks.py checks it).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}\n"
    "{%- if message['role'] == 'assistant' -%}\n"
    "{{- '<|im_start|>assistant\\n' -}}\n"
    "{%- generation -%}{{- message['content'] + '<|im_end|>' -}}{%- endgeneration -%}\n"
    "{{- '\\n' -}}\n"
    "{%- else -%}\n"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}\n"
    "{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# A few million parameters: small enough to pretrain in minutes on two CPU cores.
MODEL_SHAPE = dict(
    hidden_size=256,
    intermediate_size=768,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=512,
    tie_word_embeddings=True,
)


def _training_text(seed: int) -> list[str]:
    """What the BPE merges are learned from: the corpus plus rendered chats (roles, questions)."""
    task = synth.make_task(seed, train_chats=400, docs=300)
    chats = ["\n".join(m["role"] + "\n" + m["content"] for m in chat) for chat in task.train_chats]
    return task.texts + chats


def build_tokenizer(out_dir: Path, seed: int = 0) -> Path:
    """Train the byte-level BPE tokenizer and save it, with the chat template, as a HF tokenizer dir."""
    out_dir = Path(out_dir)
    tokenizer = train_chat_tokenizer(_training_text(seed), VOCAB_SIZE, MODEL_SHAPE["max_position_embeddings"])
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir), save_jinja_files=False)  # template inside tokenizer_config.json
    return out_dir


def train_chat_tokenizer(texts: Iterable[str], vocab_size: int, max_positions: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE learnt from `texts`, with SPECIAL_TOKENS (<|im_end|> ends turns, <|endoftext|> pads)
    and CHAT_TEMPLATE. Also the benchmark's tokenizer (bench/common.py), from its own texts."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START],
        model_max_length=max_positions,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_base_model(out_dir: Path, tokenizer_dir: Path, seed: int = 0, shape: dict | None = None) -> Path:
    """A tiny LlamaForCausalLM from config (random weights, seeded), saved with the tokenizer files.

    shape: the LlamaConfig sizes, MODEL_SHAPE by default (the benchmark passes its own)."""
    out_dir = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **(shape or MODEL_SHAPE),
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir), save_jinja_files=False)
    return out_dir
