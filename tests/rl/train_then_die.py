"""`videothinker train` that stops like a killed run right after checkpoint-<DIE_AFTER_STEP> is
written (KeyboardInterrupt on every process), for the kill-and-resume test of a torchrun launch:
``torchrun ... tests/rl/train_then_die.py train ...`` with the environment variable set."""

from __future__ import annotations

import os
import sys

from videothinker.cli import main
from videothinker.rl import trainer

DIE_AFTER = int(os.environ["DIE_AFTER_STEP"])
_save = trainer.Trainer.save


def _save_then_die(self):
    path = _save(self)
    if self.state.step == DIE_AFTER:
        raise KeyboardInterrupt
    return path


trainer.Trainer.save = _save_then_die

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
