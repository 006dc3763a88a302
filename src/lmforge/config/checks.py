"""What a recipe's sections must agree on: each check reads a validated recipe and returns what is wrong (with the
key and what to do) or None. `Recipe` runs them in this order and the first problem is its error."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmforge.config.recipe import PREFERENCE_STAGES, DataSpec

if TYPE_CHECKING:
    from lmforge.config.recipe import Recipe

ADAPTER_METHODS = ("lora", "dora", "qlora")


def scratch_needs_full(recipe: Recipe) -> str | None:
    if recipe.model.init == "from_config" and recipe.tuning.method != "full":
        return (
            f"model.init: from_config starts from random weights, so only tuning.method: full can train it (got "
            f"{recipe.tuning.method!r}); pretrain with full first, then adapt the saved model"
        )
    return None


def layout_fits_stage(recipe: Recipe) -> str | None:
    if recipe.stage in PREFERENCE_STAGES and (recipe.data.packing or recipe.data.group_by_length):
        return (
            f"data.packing and data.group_by_length apply to stages pt and sft; stage {recipe.stage!r} batches "
            "chosen and rejected answers together, so set them to false"
        )
    return None


def turn_settings_fit_stage(recipe: Recipe) -> str | None:
    """train_on and split_turns choose which chat turns carry the loss: an SFT matter. Elsewhere a value other than
    the default is an error rather than ignored (a run's saved recipe.yaml holds the defaults)."""
    if recipe.stage == "sft":
        return None
    what = (
        "trains on every token of its text"
        if recipe.stage == "pt"
        else "trains on the final reply of each example, as its stage defines"
    )
    for key in ("train_on", "split_turns"):
        if getattr(recipe.data, key) != DataSpec.model_fields[key].default:
            return f"data.{key} applies to stage sft; stage {recipe.stage!r} {what}, so remove data.{key}"
    return None


def preference_fits_stage(recipe: Recipe) -> str | None:
    pref, method = recipe.preference, recipe.tuning.method
    if pref is None:
        return None
    if recipe.stage not in PREFERENCE_STAGES:
        return (
            f"the preference section is for stages {', '.join(PREFERENCE_STAGES)}, not {recipe.stage!r}; remove "
            "it or change the stage"
        )
    if pref.label_smoothing and pref.loss != "sigmoid":
        return (
            f"preference.label_smoothing applies to loss sigmoid (conservative DPO), not {pref.loss!r}; set it "
            "to 0 or use loss: sigmoid"
        )
    reference = pref.reference_for(method)
    if reference == "adapter" and method not in ADAPTER_METHODS:
        return (
            f"preference.reference: adapter needs an adapter to disable (tuning.method lora, dora or qlora), not "
            f"{method!r}; use reference: copy"
        )
    if reference == "copy" and method == "qlora":
        return (
            "preference.reference: copy would hold a second 4-bit model; with qlora use reference: adapter (the "
            "base with the adapter disabled)"
        )
    return None


CHECKS = (scratch_needs_full, layout_fits_stage, turn_settings_fit_stage, preference_fits_stage)


def problem_across_sections(recipe: Recipe) -> str | None:
    return next((problem for check in CHECKS if (problem := check(recipe))), None)
