"""Tiny runs for the use-layer tests: a LoRA adapter that changes the outputs, and the logits to compare."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

IDS = torch.tensor([[3, 17, 42, 9]])


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=torch.ones_like(IDS)).logits


def save_lora(base_dir, out_dir, task_type: str = "CAUSAL_LM", head=AutoModelForCausalLM, **options):
    """A LoRA adapter on the model in base_dir whose B matrices are not zero (so it changes the outputs)."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        head.from_pretrained(str(base_dir), **options),
        LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type=task_type),
    )
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)
    model.save_pretrained(str(out_dir))
    return model.eval()
