"""console.quiet_third_party: other libraries' notices hidden by default, shown with -v; lmforge's own kept."""

import subprocess
import sys

PROBE = """
import logging, sys, warnings
from lmforge.console import quiet_third_party
quiet_third_party(asked_verbose=sys.argv[1] == "-v")
warnings.warn_explicit("old api", FutureWarning, "x.py", 1, module="transformers.modeling_utils")
warnings.warn_explicit("mine", FutureWarning, "y.py", 1, module="lmforge.train.run")
warnings.warn_explicit("matters", UserWarning, "z.py", 1, module="torch.utils.checkpoint")
logging.basicConfig(format="%(name)s: %(message)s")
logging.getLogger("DeepSpeed").warning("Setting accelerator to CPU. If you have GPU ...")
logging.getLogger("DeepSpeed").warning("a real problem")
"""


def notices(*flag: str) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE, *flag, "-"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stderr


def test_third_party_notices_are_hidden_unless_verbose():
    quiet, verbose = notices(), notices("-v")
    assert "old api" not in quiet and "Setting accelerator" not in quiet
    assert "old api" in verbose and "Setting accelerator" in verbose
    for kept in ("mine", "matters", "a real problem"):  # lmforge's own, other kinds of warning, other log lines
        assert kept in quiet and kept in verbose
