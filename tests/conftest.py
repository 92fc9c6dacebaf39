import sys
from pathlib import Path

import torch

# Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP spinning makes them ~50x slower.
torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent))
