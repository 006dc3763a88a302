"""Dataset registry: recipes name datasets (`- name: alpaca_en`) and this module finds what the name means.

`data.registry` points at one of
- a LLaMA-Factory `dataset_info.json`, read as it is (or the directory holding it);
- an lmforge registry, YAML or JSON: a mapping `name -> DataSource fields` (path, hub, subset, split, format,
  columns, tags, and optionally a default weight/ratio/samples).
A file not named dataset_info.json may hold both kinds of entry: an entry with a LLaMA-Factory location key
(file_name, hf_hub_url, ...) is read the LLaMA-Factory way.

Relative paths in a registry are relative to the registry file's folder. What a recipe entry says next to
`name:` wins over the registry: its format, subset and split replace the registry's, its columns and tags are
merged key by key over the registry's, and any of weight/ratio/samples replaces the registry's mixing key.
Only the entries a recipe names are converted, so unsupported features elsewhere in a registry do not matter.
A registry entry is a recipe's dataset entry written elsewhere, so it is validated with the recipe's own schema
(config.recipe.DataSource: the one place the data layer meets pydantic) and handed on as a settings.Source.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lmforge.config.recipe import DataSource
from lmforge.config.settings import MIX_KEYS, Source, source_settings
from lmforge.data.records import KIND_BY_STAGE
from lmforge.errors import LmforgeError

LLAMAFACTORY_FILE = "dataset_info.json"

# LLaMA-Factory keys: where the data lives, what we map, and what we cannot honour (with the reason).
_LF_LOCATIONS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name", "file_name")
_LF_KEYS = {
    *_LF_LOCATIONS,
    "file_sha1",
    "formatting",
    "ranking",
    "subset",
    "split",
    "folder",
    "num_samples",
    "revision",
    "columns",
    "tags",
}
_LF_FORMATS = ("alpaca", "sharegpt")
# LLaMA-Factory column -> our canonical column; which of them each formatting reads.
_LF_COLUMNS = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "history": "history",
    "messages": "conversations",
    "system": "system",
    "tools": "tools",
    "chosen": "chosen",
    "rejected": "rejected",
    "kto_tag": "label",
}
_LF_SHARED_COLUMNS = ("system", "tools", "chosen", "rejected", "kto_tag")
_LF_FORMAT_COLUMNS = {"alpaca": ("prompt", "query", "response", "history"), "sharegpt": ("messages",)}
_LF_MEDIA_COLUMNS = ("images", "videos", "audios")
_LF_TAGS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag")
_UNSUPPORTED_LOCATIONS = {
    "ms_hub_url": "ModelScope hub datasets are not supported; add an hf_hub_url or download the data and use file_name",
    "om_hub_url": "Modelers hub datasets are not supported; add an hf_hub_url or download the data and use file_name",
    "script_url": "loading scripts (load_from: script) are not supported; convert the data to JSON/JSONL/"
    "Parquet/CSV and use file_name",
    "cloud_file_name": "cloud files are not supported; download the file and use file_name",
}


@dataclass
class Registry:
    path: Path
    entries: dict[str, Any]
    llamafactory: bool  # the file is a dataset_info.json: every entry is read the LLaMA-Factory way


def resolve_sources(
    sources: tuple[Source, ...], registry_location: str | None, stage: str | None = None
) -> list[Source]:
    """The train sources with every `name:` replaced by its entry in the registry at `registry_location`
    (data.registry), mixing keys kept.

    `stage` lets LLaMA-Factory entries that cannot give the stage's records be refused once, with the reason.
    """
    registry: Registry | None = None
    resolved = []
    for i, source in enumerate(sources):
        where = f"data.train[{i}] (name: {source.name})" if source.name else f"data.train[{i}]"
        if source.name is None:
            resolved.append(source)
            continue
        if registry is None:
            registry = load_registry(registry_location, where)
        base = lookup(registry, source.name, where, stage)
        resolved.append(_override(base, source, where))
    return resolved


def load_registry(location: str | None, where: str = "data.train") -> Registry:
    """Read the registry file named by `data.registry` (a file, or a directory holding dataset_info.json)."""
    if location is None:
        hint = ""
        if (Path("data") / LLAMAFACTORY_FILE).is_file():
            hint = f"; ./data/{LLAMAFACTORY_FILE} exists here, so `registry: data` may be what you want"
        raise LmforgeError(
            f"{where}: a named dataset needs data.registry, which is not set: set it to a registry file "
            f"(YAML/JSON) or a LLaMA-Factory {LLAMAFACTORY_FILE} or its directory{hint}"
        )
    path = Path(location).expanduser()
    if path.is_dir():
        if not (path / LLAMAFACTORY_FILE).is_file():
            raise LmforgeError(
                f"data.registry: directory {path} holds no {LLAMAFACTORY_FILE}; point data.registry "
                "at a registry file (YAML/JSON) or a directory with a LLaMA-Factory dataset_info.json"
            )
        path = path / LLAMAFACTORY_FILE
    if not path.is_file():
        raise LmforgeError(
            f"data.registry: {path} does not exist; give a registry file (YAML/JSON), a LLaMA-Factory "
            f"{LLAMAFACTORY_FILE} or its directory"
        )
    entries = _parse(path)
    return Registry(path=path, entries=entries, llamafactory=path.name == LLAMAFACTORY_FILE)


def lookup(registry: Registry, name: str, where: str = "data.train", stage: str | None = None) -> Source:
    """The registry entry `name` as a Source; an unknown name raises with the closest names."""
    if name not in registry.entries:
        raise LmforgeError(_unknown_name(registry, name, where))
    entry = registry.entries[name]
    at = f"{registry.path}: dataset {name!r}"
    if not isinstance(entry, dict):
        raise LmforgeError(
            f"{at}: an entry is a mapping of settings (path, format, columns, ...), got {type(entry).__name__}"
        )
    if registry.llamafactory or any(key in entry for key in _LF_LOCATIONS):
        return _from_llamafactory(entry, registry.path.parent, at, stage)
    return _from_lmforge(entry, registry.path.parent, at)


def _parse(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as err:
        raise LmforgeError(f"{path}:{err.lineno}: not valid JSON: {err.msg} (column {err.colno})") from None
    except yaml.YAMLError as err:
        raise LmforgeError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise LmforgeError(
            f"{path}: a dataset registry is a mapping of dataset name -> settings, got {type(raw).__name__}"
        )
    return raw


def _unknown_name(registry: Registry, name: str, where: str) -> str:
    names = sorted(registry.entries)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
    return (
        f"{where}: dataset {name!r} is not in the registry {registry.path}{hint} "
        f"(it has: {shown or 'no datasets'}); add an entry or fix the name"
    )


def _relative_to(folder: Path, path: str) -> str:
    """A registry's relative path, made relative to the registry's folder (kept as the user wrote it if absolute)."""
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else folder / p)


def _from_lmforge(entry: dict[str, Any], folder: Path, at: str) -> Source:
    if "name" in entry:
        raise LmforgeError(f"{at}: a registry entry cannot name another dataset (`name:`); give path or hub")
    fields = dict(entry)
    if isinstance(fields.get("path"), str):
        fields["path"] = _relative_to(folder, fields["path"])
    return _validated(fields, at)


def _validated(fields: dict[str, Any], at: str) -> Source:
    try:
        return source_settings(DataSource.model_validate(fields))
    except ValidationError as err:
        problems = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"])
            problems.append(f"{key}: {e['msg']}" if key else e["msg"])
        raise LmforgeError(f"{at}: invalid entry:\n  " + "\n  ".join(problems)) from None


def _from_llamafactory(entry: dict[str, Any], folder: Path, at: str, stage: str | None) -> Source:
    _check_keys(entry.keys(), _LF_KEYS, at, "key")
    formatting = entry.get("formatting") or "alpaca"
    if formatting not in _LF_FORMATS:
        openai = (
            " (LLaMA-Factory's openai formatting also appends 'detailed thinking off' to system prompts; lmforge "
            "reads such files as they are with format: messages, so give the file as a path instead of a name)"
            if formatting == "openai"
            else ""
        )
        raise LmforgeError(
            f"{at}: formatting {formatting!r} is not supported; LLaMA-Factory formats lmforge reads: "
            f"{', '.join(_LF_FORMATS)}{openai}"
        )
    fields: dict[str, Any] = {**_lf_location(entry, folder, at), "format": formatting}
    if not isinstance(entry.get("ranking", False), bool):
        raise LmforgeError(f"{at}: ranking must be true or false, got {entry['ranking']!r}")
    # ranking: true keeps the format: the reader builds preference pairs from it when the stage asks for them.
    fields["columns"] = _lf_columns(entry.get("columns") or {}, formatting, at)
    fields["tags"] = _lf_tags(entry.get("tags") or {}, formatting, at)
    if entry.get("num_samples") is not None:
        fields["samples"] = entry["num_samples"]
    if stage is not None:
        _check_stage(entry.get("ranking", False), formatting, fields["columns"], stage, at)
    return _validated(fields, at)


def _lf_location(entry: dict[str, Any], folder: Path, at: str) -> dict[str, Any]:
    if entry.get("hf_hub_url"):
        for key, why in (("folder", "a hub folder"), ("revision", "a pinned revision")):
            if entry.get(key):
                raise LmforgeError(f"{at}: {key} ({why}) is not supported; download the dataset and use file_name")
        fields = {"hub": entry["hf_hub_url"], "split": entry.get("split") or "train"}
        if entry.get("subset"):
            fields["subset"] = entry["subset"]
        return fields
    for key, why in _UNSUPPORTED_LOCATIONS.items():
        if entry.get(key):
            raise LmforgeError(f"{at}: {key}: {why}")
    if not entry.get("file_name"):
        raise LmforgeError(f"{at}: no file_name or hf_hub_url; say where the data is")
    return {"path": _relative_to(folder, str(entry["file_name"]))}


def _lf_columns(columns: Any, formatting: str, at: str) -> dict[str, str]:
    if not isinstance(columns, dict):
        raise LmforgeError(f"{at}: columns must be a mapping, got {type(columns).__name__}")
    media = [c for c in _LF_MEDIA_COLUMNS if columns.get(c)]
    if media:
        raise LmforgeError(
            f"{at}: multimodal columns ({', '.join(media)}) are not supported; lmforge trains on "
            "text only, so remove the dataset or those columns"
        )
    allowed = (*_LF_SHARED_COLUMNS, *_LF_FORMAT_COLUMNS[formatting], *_LF_MEDIA_COLUMNS)
    _check_keys(columns.keys(), allowed, f"{at}: columns (formatting {formatting})", "column")
    return {_LF_COLUMNS[key]: value for key, value in columns.items() if value is not None and key in _LF_COLUMNS}


def _lf_tags(tags: Any, formatting: str, at: str) -> dict[str, str]:
    if not isinstance(tags, dict):
        raise LmforgeError(f"{at}: tags must be a mapping, got {type(tags).__name__}")
    if tags and formatting != "sharegpt":
        raise LmforgeError(f"{at}: tags only apply to formatting sharegpt; remove them or set formatting: sharegpt")
    _check_keys(tags.keys(), _LF_TAGS, f"{at}: tags", "tag")
    return {key: value for key, value in tags.items() if value is not None}


def _check_stage(ranking: bool, formatting: str, columns: dict[str, str], stage: str, at: str) -> None:
    """An entry that cannot give the stage's records, refused once here rather than record by record. As in
    LLaMA-Factory, ranking: true goes with the preference stages only; an alpaca entry is read as documents for
    pt (formats.py: instruction, input and output joined by newlines, where LLaMA-Factory keeps the first two)."""
    kind = KIND_BY_STAGE.get(stage)
    if kind == "preference" and not ranking:
        raise LmforgeError(
            f"{at}: stage {stage} trains on preference pairs, and the entry has no ranking: true (LLaMA-Factory "
            "refuses it too); name a dataset of pairs, or set ranking: true if the data holds chosen and rejected"
        )
    if ranking and kind != "preference":
        raise LmforgeError(
            f"{at}: ranking: true marks preference pairs, which stage {stage} does not train on (LLaMA-Factory "
            "refuses it too); use the dataset with stage rm, dpo, simpo or orpo"
        )
    if "label" in columns and kind != "kto":
        raise LmforgeError(
            f"{at}: columns.kto_tag labels each example desirable or not, which stage {stage} does not read: it "
            "would train on the undesirable ones too; use the dataset with stage kto"
        )
    if kind == "text" and formatting != "alpaca":
        raise LmforgeError(
            f"{at}: a sharegpt dataset cannot be used for pre-training (stage pt): LLaMA-Factory would train on "
            "its first user message alone; use an alpaca entry whose columns.prompt is the text column"
        )


def _check_keys(keys: Any, allowed: Any, at: str, what: str) -> None:
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise LmforgeError(f"{at}: unknown {what} {key!r}{hint}; known: {', '.join(sorted(allowed))}")


def _override(base: Source, recipe: Source, where: str) -> Source:
    """The registry entry with what the recipe entry sets next to `name:` laid over it."""
    fields = {key: getattr(base, key) for key in base.given}
    given = recipe.given - {"name"}
    for key in ("format", "subset", "split"):
        if key in given:
            fields[key] = getattr(recipe, key)
    for key in ("columns", "tags"):
        fields[key] = {**getattr(base, key), **getattr(recipe, key)}
    if given & set(MIX_KEYS):
        for key in MIX_KEYS:
            fields.pop(key, None)
            if key in given:
                fields[key] = getattr(recipe, key)
    return _validated(fields, f"{where} (dataset {recipe.name!r})")
