"""On-disk cache of encoded examples, keyed by everything that decides them.

An entry is a directory `<root>/<key>/` holding `arrays.npz` (the examples as flat int32 arrays plus
their lengths, and any per-example values such as KTO's desirable flag; for each split, one set per part: a
pair's chosen and rejected sides are `<split>.chosen` and `<split>.rejected`), `meta.json` (the report
figures) and `rejects.jsonl` (the records skipped under `on_error: skip`). It holds samples and documents as
encoded, before packing or pretraining blocks, which are laid out after the cache. It is written into a
temporary sibling directory and renamed into place in one step, so a crash leaves either a whole entry or none;
a reader never sees half of one.
A hit maps the arrays from the file read-only (`mapped_arrays`) rather than reading them.

Every file of an entry is checked before its examples are used: `meta.json` records each other file's size and
sha256 at write (and a sha256 of its own content), and a load, in this process or in the ranks that wait for
rank 0 (`wait_for`), compares them. Hashing is one pass over the mapped file, once per run: a load of a 100 MB
entry took 0.15-0.18 s checked against 0.3 ms unchecked (measured on the development machine, 2 shared cores, pages
in memory; sha256 ran at ~750 MB/s there, blake2b slower). An entry that fails (a file changed in place, cut
short, missing, or metadata that cannot be read) is said in one line, rebuilt, and replaced: the new entry is
written beside it, the bad one renamed aside and the new one renamed into its place, so a process that still
maps the old files keeps reading them. Entries written before checksums existed are rebuilt the same way.

The key is the sha256 of the data fingerprint (`fingerprint_parts`: the data's content, the
tokenizer, the chat template, the stage and every data setting that shapes the examples), the cache
format and the lmforge version. Change any of them and the key, so the entry, changes. Old entries are never
reused and never cleaned up: delete the directory to reclaim the space.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmforge import __version__
from lmforge.config.settings import DataSettings, Source
from lmforge.console import say
from lmforge.data.examples import Examples
from lmforge.data.sources.files import resolve_files
from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.data.tokenizer import Tokenizer

FINGERPRINT_VERSION = "lmforge-data-3"  # 3: the report counts screened text (screen.py)
CACHE_FORMAT = "lmforge-cache-2"  # 2: samples and documents before packing and blocks, by part
CACHE_ENV = "LMFORGE_CACHE"
DEFAULT_ROOT = Path("~/.cache/lmforge")
ARRAYS_FILE, META_FILE, REJECTS_FILE = "arrays.npz", "meta.json", "rejects.jsonl"
CHECKSUM = "sha256"  # of each file of an entry, recorded in its meta.json


class DamagedEntry(Exception):
    """What is wrong with a cache entry (its message names the file and the fault)."""


def cache_root(cache_dir: str | None) -> Path:
    """data.cache_dir, else $LMFORGE_CACHE, else ~/.cache/lmforge; entries go in its `data/` folder."""
    base = cache_dir or os.environ.get(CACHE_ENV) or str(DEFAULT_ROOT)
    return Path(base).expanduser() / "data"


def make_key(parts: dict[str, Any]) -> str:
    """sha256 of the named parts (JSON, keys sorted) with the cache format and the lmforge version."""
    payload = {"format": CACHE_FORMAT, "lmforge": __version__, **parts}
    text = json.dumps(payload, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def fingerprint(data: DataSettings, sources: list[Source], tokenizer: Tokenizer) -> str:
    """sha256 of `fingerprint_parts`; the same for the same data, tokenizer, template and settings."""
    parts = fingerprint_parts(data, sources, tokenizer)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint_parts(data: DataSettings, sources: list[Source], tokenizer: Tokenizer) -> dict:
    """Everything that decides the examples (a missing data file raises, as the reader would).

    Data enters by content (file bytes; file names only inside a directory or glob), so moving the
    data keeps the fingerprint; a hub dataset by its id, subset and split. Not in it: workers, cache
    settings, the output directory.
    """
    described = []
    for source in [*sources, *([Source(path=data.eval_path)] if data.eval_path else [])]:
        described.append({"content": source_content(source), **_settings_of(source)})
    return {
        "version": FINGERPRINT_VERSION,
        "stage": data.stage,
        "sources": described,
        "eval_fraction": data.eval_fraction,
        "template": hashlib.sha256((data.template or "").encode("utf-8")).hexdigest(),
        "tokenizer": tokenizer_digest(tokenizer),
        "settings": {
            k: getattr(data, k)
            for k in ("max_length", "packing", "train_on", "split_turns", "truncation", "on_error", "seed")
        },
    }


def _settings_of(source: Source) -> dict[str, Any]:
    """What a source says besides where it is (its location enters by content)."""
    return {
        name: getattr(source, name) for name in Source.__dataclass_fields__ if name not in ("path", "name", "given")
    }


def source_content(source: Source) -> str:
    """sha256 of a source's data: its file's bytes, or the names and bytes of its files (directory, glob)."""
    if source.path is None:
        return "hub"  # keyed by id/subset/split only: delete the cache entry to see a changed hub dataset
    files = resolve_files(source.path)
    if len(files) == 1:
        return file_digest(files[0])
    base = Path(os.path.commonpath([str(f.parent) for f in files]))
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(base)}\0{file_digest(f)}\n".encode())
    return h.hexdigest()


def tokenizer_digest(tokenizer: Tokenizer) -> str:
    """sha256 of what decides token ids: the class, the full backend (vocab, merges, normalizer,
    pre- and post-processing, added tokens) for a fast tokenizer or the vocab for a slow one, and the
    special tokens."""
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode("utf-8"))
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode("utf-8"))
        h.update(json.dumps(sorted(str(t) for t in tokenizer.added_tokens_decoder.values())).encode("utf-8"))
    specials = {k: str(v) for k, v in tokenizer.special_tokens_map.items()}
    h.update(json.dumps(specials, sort_keys=True).encode("utf-8"))
    return h.hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load(root: Path, key: str) -> tuple[dict[str, Examples], dict[str, Any], bytes] | None:
    """(examples by name, meta, rejects bytes) of the entry, or None when there is none or it is damaged (said)."""
    entry = root / key
    try:
        return read_entry(entry)
    except FileNotFoundError:
        return None
    except DamagedEntry as err:
        say(f"lmforge: data: not using the cache entry {entry}: {err}; rebuilding it")
        return None


def read_entry(entry: Path) -> tuple[dict[str, Examples], dict[str, Any], bytes]:
    """The entry's examples, meta and rejects after checking every file against the checksums in its meta.

    Raises FileNotFoundError when there is no entry and DamagedEntry when it cannot be trusted."""
    if not entry.is_dir():
        raise FileNotFoundError(entry)
    meta = _checked_meta(entry)
    files = meta["files"]
    try:
        arrays = mapped_arrays(entry / ARRAYS_FILE, files[ARRAYS_FILE])
        rejects = (entry / REJECTS_FILE).read_bytes()
        _check_file(REJECTS_FILE, rejects, files[REJECTS_FILE])
        splits = {name: _split_from(arrays, name) for name in meta["splits"]}
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
        raise DamagedEntry(f"{type(err).__name__}: {err}") from None
    return splits, meta, rejects


def _checked_meta(entry: Path) -> dict[str, Any]:
    try:
        meta = json.loads((entry / META_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DamagedEntry(f"no {META_FILE}") from None
    except (OSError, ValueError) as err:
        raise DamagedEntry(f"{META_FILE} cannot be read: {err}") from None
    if not isinstance(meta, dict) or "files" not in meta:
        raise DamagedEntry(f"{META_FILE} has no checksums: written by an older lmforge")
    if meta.get(CHECKSUM) != _meta_digest(meta):
        raise DamagedEntry(f"{META_FILE} does not match its checksum")
    return meta


def _meta_digest(meta: dict[str, Any]) -> str:
    """sha256 of the meta without its own checksum, as canonical JSON."""
    rest = {k: v for k, v in meta.items() if k != CHECKSUM}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode("utf-8")).hexdigest()


def _file_sum(data) -> dict[str, Any]:
    return {"bytes": len(data), CHECKSUM: hashlib.sha256(data).hexdigest()}


def _check_file(name: str, data, expected: dict[str, Any]) -> None:
    """Size first (a cut file says so), then the checksum of the bytes."""
    if len(data) != expected["bytes"]:
        raise DamagedEntry(f"{name} has {len(data):,} bytes, {expected['bytes']:,} were written: cut short or grown")
    if hashlib.sha256(data).hexdigest() != expected[CHECKSUM]:
        raise DamagedEntry(f"{name} does not match its checksum: changed since it was written")


def _split_from(arrays, name: str) -> Examples:
    positions, column = f"{name}.position_ids", f"{name}.column."
    return Examples(
        input_ids=arrays[f"{name}.input_ids"],
        labels=arrays[f"{name}.labels"],
        lengths=arrays[f"{name}.lengths"],
        position_ids=arrays[positions] if positions in arrays else None,
        columns={key.removeprefix(column): arrays[key] for key in arrays if key.startswith(column)},
    )


def mapped_arrays(path: Path, expected: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an .npz written by np.savez, memory-mapped read-only instead of read: np.savez stores
    each array uncompressed, so its bytes lie in the file as they are. With `expected` (the file's size and
    checksum from the entry's meta) the mapped bytes are checked first, so the arrays are the ones checked."""
    with path.open("rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(f.fileno()).st_size else None
        if expected is not None:
            _check_file(path.name, mapped if mapped is not None else b"", expected)
        with zipfile.ZipFile(f) as archive:
            members = [(info, _npy_header(f, info)) for info in archive.infolist()]
    out = {}
    for info, (shape, fortran, dtype, offset) in members:
        count = int(np.prod(shape, dtype=np.int64))
        flat = np.frombuffer(mapped, dtype=dtype, count=count, offset=offset) if count else np.zeros(0, dtype)
        out[info.filename.removesuffix(".npy")] = flat.reshape(shape, order="F" if fortran else "C")
    return out


def _npy_header(f, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, offset of the data in the file) of one stored .npy member."""
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{info.filename} is compressed")
    f.seek(info.header_offset)
    local = f.read(30)  # the member's local header: its name and extra field lengths are at bytes 26-29
    if local[:4] != b"PK\x03\x04":
        raise ValueError(f"{info.filename}: no local file header")
    f.seek(info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little"))
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    if dtype.hasobject:
        raise ValueError(f"{info.filename} holds Python objects")
    return shape, fortran, dtype, f.tell()


def wait_for(root: Path, key: str, poll: float = 0.2) -> tuple[dict[str, Examples], dict[str, Any], bytes]:
    """The entry `key` once another process has written it (`save` renames a whole entry into place, so it is
    there complete or not at all). It waits as long as that takes: a launcher such as torchrun ends the waiting
    processes when the writer fails. A damaged entry is checked like `load` does and waited past: the writer
    finds it damaged too and replaces it (it is checked again only once its directory changed)."""
    entry, damaged = root / key, None
    while True:
        seen = _identity(entry)
        if seen is not None and seen != damaged:
            try:
                return read_entry(entry)
            except FileNotFoundError:
                pass
            except DamagedEntry as err:
                if damaged is None:
                    say(f"lmforge: data: not using the cache entry {entry}: {err}; waiting for rank 0 to rebuild it")
                damaged = seen
        time.sleep(poll)


def _identity(entry: Path) -> tuple[int, int] | None:
    try:
        st = entry.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def save(root: Path, key: str, splits: dict[str, Examples], meta: dict[str, Any], rejects: bytes) -> Path:
    """Write the entry atomically (temporary directory, then one rename); returns its directory."""
    entry = root / key
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}-", dir=root))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the entry gets the usual permissions
    except OSError as err:
        raise LmforgeError(
            f"cannot write the data cache in {root} ({err.strerror}); set data.cache_dir (or "
            f"${CACHE_ENV}) to a writable directory, or data.cache: false"
        ) from None
    try:
        arrays = {}
        for name, ex in splits.items():
            arrays.update(
                {f"{name}.input_ids": ex.input_ids, f"{name}.labels": ex.labels, f"{name}.lengths": ex.lengths}
            )
            if ex.position_ids is not None:
                arrays[f"{name}.position_ids"] = ex.position_ids
            arrays.update({f"{name}.column.{column}": values for column, values in ex.columns.items()})
        with (tmp / ARRAYS_FILE).open("wb") as f:
            np.savez(f, **arrays)
        (tmp / REJECTS_FILE).write_bytes(rejects)
        arrays_path = tmp / ARRAYS_FILE
        files = {
            ARRAYS_FILE: {"bytes": arrays_path.stat().st_size, CHECKSUM: file_digest(arrays_path)},
            REJECTS_FILE: _file_sum(rejects),
        }
        meta = {**meta, "splits": list(splits), "files": files}
        (tmp / META_FILE).write_text(json.dumps({**meta, CHECKSUM: _meta_digest(meta)}), encoding="utf-8")
        _fsync_dir_files(tmp)
        _put_in_place(tmp, entry)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return entry


def _put_in_place(tmp: Path, entry: Path) -> None:
    """Rename the written entry to its name. Where an entry is there already, keep it if it checks out (another
    process wrote the same content first), else rename it aside, put the new one in its place and delete it:
    a process that maps its files keeps them until it lets go."""
    for _ in range(3):
        try:
            os.rename(tmp, entry)
            return
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        try:
            read_entry(entry)
            shutil.rmtree(tmp, ignore_errors=True)
            return
        except FileNotFoundError:
            continue  # moved aside by another process just now: try again
        except DamagedEntry:
            pass
        aside = Path(tempfile.mkdtemp(prefix=f".{entry.name[:16]}-damaged-", dir=entry.parent))
        try:
            os.rename(entry, aside)
        except FileNotFoundError:
            pass  # another process moved it aside first
        shutil.rmtree(aside, ignore_errors=True)
    raise OSError(errno.EEXIST, f"the cache entry {entry} kept changing while it was replaced")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir_files(directory: Path) -> None:
    for path in directory.iterdir():
        with path.open("rb") as f:
            os.fsync(f.fileno())


def entry_names(splits: dict[str, dict[str, Examples]]) -> dict[str, Examples]:
    """The examples of each split and part by the name they have in an entry: `train`, `train.chosen`, ..."""
    return {f"{split}.{part}" if part else split: ex for split, parts in splits.items() for part, ex in parts.items()}


def split_names(named: dict[str, Examples]) -> dict[str, dict[str, Examples]]:
    """`entry_names` undone."""
    splits: dict[str, dict[str, Examples]] = {}
    for name, ex in named.items():
        split, _, part = name.partition(".")
        splits.setdefault(split, {})[part] = ex
    return splits
