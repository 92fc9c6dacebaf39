"""`run_epochs`, the loop every trainer shares: step budget, seeded epoch order, checkpoints, exact resume."""
import json

from superpose.training.loop import LoopState, run_epochs
from superpose.training.settings import TrainSettings


def _run(state: LoopState, settings: TrainSettings, examples: int = 5, global_batch: int = 2):
    seen, saves = [], []

    def step(rows, first, epoch):
        seen.append((epoch, first, tuple(rows)))
        return {"loss": float(sum(rows))}, len(rows)

    def save():
        saves.append(json.loads(json.dumps(state.record())))  # what a checkpoint would hold

    run_epochs(state, examples, global_batch, settings, step=step, save=save, show=False)
    return seen, saves


def test_step_budget_runs_that_many_steps_across_epochs_and_checkpoints_each_epoch():
    seen, saves = _run(LoopState(), TrainSettings(max_steps=7, seed=3))
    assert len(seen) == 7  # 3 steps per epoch (5 examples, batch 2): epochs 0, 1 and one step of epoch 2
    assert [e for e, _, _ in seen] == [0, 0, 0, 1, 1, 1, 2]
    assert sorted(r for _, _, rows in seen[:3] for r in rows) == [0, 1, 2, 3, 4]  # an epoch sees every example once
    assert seen[:3] != seen[3:6]  # each epoch has its own order
    assert [(s["epoch"], s["batch"], s["step"]) for s in saves] == [(1, 0, 3), (2, 0, 6), (2, 1, 7)]


def test_an_interrupted_run_resumed_from_its_checkpoint_sees_what_the_uninterrupted_one_saw():
    whole, _ = _run(LoopState(), TrainSettings(max_steps=8, seed=1))
    first, saves = _run(LoopState(), TrainSettings(max_steps=4, seed=1))
    rest, _ = _run(LoopState.from_record(saves[-1]), TrainSettings(max_steps=8, seed=1))
    assert first + rest == whole


def test_save_every_checkpoints_inside_an_epoch():
    _, saves = _run(LoopState(), TrainSettings(epochs=1, save_every=1, seed=0), examples=6)
    assert [(s["epoch"], s["batch"]) for s in saves] == [(0, 1), (0, 2), (1, 0)]
