"""lmforge: train language models end to end from one YAML recipe."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lmforge")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
