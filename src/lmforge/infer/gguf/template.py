"""The chat template inside a GGUF file (metadata `tokenizer.chat_template`): read back with the `gguf` package's
reader, written where the converter left none, and refused where it differs from the run's, so that llama.cpp
and the tools built on it format prompts as the model was trained."""

from __future__ import annotations

from pathlib import Path

from lmforge.errors import LmforgeError

TEMPLATE_KEY = "tokenizer.chat_template"
BAD_SUFFIX = ".template-mismatch"


def _gguf():
    try:
        import gguf
    except ImportError:
        raise LmforgeError("reading a GGUF needs the gguf package: pip install 'lmforge[gguf]'") from None
    return gguf


def embedded_template(path: Path) -> str | None:
    """The chat template the GGUF at `path` carries, or None."""
    field = _gguf().GGUFReader(str(path)).get_field(TEMPLATE_KEY)
    return None if field is None else field.contents()


def add_template(path: Path, template: str) -> None:
    """Rewrite the GGUF at `path` with `template` as its chat template (every other key and tensor as it was),
    beside it and renamed over it when complete."""
    gguf = _gguf()
    reader = gguf.GGUFReader(str(path))
    partial = path.with_name(f".{path.name}.partial")
    writer = gguf.GGUFWriter(
        str(partial), arch=reader.get_field(gguf.Keys.General.ARCHITECTURE).contents(), endianess=reader.endianess
    )
    for field in reader.fields.values():
        # the writer writes the architecture and the GGUF.* header fields itself
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF.") or field.name == TEMPLATE_KEY:
            continue
        kind = field.types[0]
        sub_kind = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub_kind)
    writer.add_chat_template(template)
    for tensor in reader.tensors:
        writer.add_tensor_info(
            tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    del reader  # its memory map of the old file
    partial.replace(path)


def check_template(path: Path, template: str, final: Path | None = None) -> None:
    """Refuse a GGUF whose embedded template is not `template`: it is renamed to `final` (the name it was
    written for, default `path`) + .template-mismatch, so no tool picks it up as the export."""
    found = embedded_template(path)
    if found == template:
        return
    final = final or path
    bad = final.with_name(final.name + BAD_SUFFIX)
    path.replace(bad)
    if found is None:
        what = "no chat template"
    else:
        what = f"a chat template that differs from the run's ({_first_difference(found, template)})"
    raise LmforgeError(
        f"{final}: the GGUF carries {what}; it is kept as {bad.name} for inspection, not as the export. Export "
        "again; if it repeats, the converter rewrites templates: report it with the llama.cpp version"
    )


def _first_difference(found: str, wanted: str) -> str:
    at = next((i for i, (a, b) in enumerate(zip(found, wanted)) if a != b), min(len(found), len(wanted)))
    return f"first at character {at}: {found[at : at + 20]!r} instead of {wanted[at : at + 20]!r}"
