"""Superposition in Transformers: a frozen base LM and N frozen fine-tunes run side by side, their states
blended layer by layer, so that one model keeps every skill.

The packages, lowest first; each imports only the packages above it in this list:

* `core/`: what settings share, checkpoint loading, metrics, log-space mixtures, text tables.
* `data/`: text files to token blocks; code-switched lines.
* `model/`: the superposed model: its settings, architectures, blend weights and gates, evidence, autoencoders,
  cache, the two forward graphs, speculative decoding, model cards.
* `compare/`: what the model is compared with: weight merges, output mixtures, routers, oracles; the hard-merge
  export.
* `evaluation/`: the one held-out scoring loop, and `evaluate` (the model against every comparison).
* `training/`: training settings and the presets, the training loop, checkpoints and resume, data-parallel
  processes, distillation.
* `report/`: evaluation tables, run info, gate views, the paper's analyses, HTML.
* `demo/`: the offline demo, its tiny experts and bundled corpus.
* `cli/`: the `superpose` command.

`__main__` runs the command line (`python -m superpose`).
"""
from superpose.model.settings import ModelSettings
from superpose.model.superposed import SuperposedConfig, SuperposedModel
from superpose.training.loop import train
from superpose.training.presets import preset_settings
from superpose.training.settings import TrainSettings

__all__ = ["SuperposedConfig", "SuperposedModel", "ModelSettings", "TrainSettings", "preset_settings", "train"]
__version__ = "0.1.0"
