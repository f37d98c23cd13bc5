"""`python pipeline/main.py …`, the form CI runs under `dagger run`.

Run as a script, Python puts `pipeline/` itself first on sys.path, where our modules would
shadow installed ones of the same name. Swap it for the project root before importing anything.
"""

import gc
import sys
from pathlib import Path

if __name__ == "__main__":
    gc.disable()  # until the command's modules are loaded: see pipeline.cli.run
if __name__ == "__main__" and not __package__:
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from pipeline.cli import run

if __name__ == "__main__":
    run()
