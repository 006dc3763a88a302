"""lmforge: train language models end to end from one YAML recipe."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lmforge")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

# bitsandbytes warns at import on CPUs with AVX512-BF16 that it cannot fetch an optional kernel from
# the hub; lmforge never uses that kernel, so the line is only noise in every command's output.
import logging as _logging

_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
