"""Training blocks: code-switched blocks are spread over what a run visits, not where it starts."""
import torch
from helpers import char_tokenizer, write_domains

from superpose.training.blocks import MIXED, load_labelled
from superpose.training.loop import epoch_order


def test_switched_blocks_are_spread_over_the_first_epochs_order(tmp_path):
    en, fr = write_domains(tmp_path, repeat=40)
    for seed in (0, 1):
        data = load_labelled({"base": str(en), "fr": str(fr)}, ["base", "fr"], char_tokenizer(), 16, None,
                             switch_rate=0.25, seed=seed)
        switched = torch.tensor([d == MIXED for d in data.domains])
        assert 0.2 < switched.float().mean() < 0.3
        first = epoch_order(len(data), seed, 0)[: len(data) // 4]  # the first quarter a run visits
        share = switched[first].float().mean()
        assert 0.1 < share < 0.4, (seed, float(share))  # seeded like the order, it was 1.0: all of them first
