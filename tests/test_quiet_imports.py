"""Commands start without the deprecation notices torchao's import logs through torch (issue of
every command's first lines); other messages of that logger still pass."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest


def test_torchao_enum_notices_are_dropped_and_nothing_else():
    pytest.importorskip("torchao")
    code = "import videothinker, transformers.quantizers.auto, torchao; print('loaded')"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "loaded" in run.stdout
    assert "register_constant" not in run.stderr

    import videothinker  # noqa: F401  (installs the filter in this process too)

    logger = logging.getLogger("torch.utils._pytree")
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, "another message", (), None)
    assert logger.filter(record)
    notice = "<enum 'X'> ... Calling register_constant() on Enum subclasses is deprecated"
    assert not logger.filter(logger.makeRecord(logger.name, logging.WARNING, __file__, 1, notice, (), None))
