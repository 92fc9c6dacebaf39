"""Scale-out: several processes (gloo on CPU), gradient accumulation, bf16, device placement and throughput.

A step sees batch_size x processes x grad_accum blocks. These tests check that the ways of splitting one
global batch (over processes, over micro-batches) give the weights of one big batch, with the 2d variant so
that the autoencoders' dropout is part of what must match, and with short blocks and an uneven last batch so
that the losses' token means are part of it too.
"""
import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import char_tokenizer, paper_model, paper_train, save_pair, write_domains
from safetensors.torch import load_file

from superpose.cli.commands import build_parser, main

TOKENIZER = char_tokenizer()


def _train_argv(tmp_path, out, *extra):
    return ["train", "--base", str(tmp_path / "base"), "--expert", f"fr={tmp_path / 'expert'}",
            "--train", f"base={tmp_path / 'en.txt'}", "--train", f"fr={tmp_path / 'fr.txt'}",
            "--out", str(tmp_path / out),
            "--preset", "paper", "--variant", "2d", "--ae-layers", "0,1", "--lr-alpha", "1e-2", "--lr-ae", "1e-2",
            "--device", "cpu", *extra]


def _setup(tmp_path, repeat):
    save_pair(tmp_path)
    write_domains(tmp_path, repeat=repeat)


def _block_lengths(tmp_path, block_size):
    from superpose.data.text import load_texts, tokenize_blocks
    return [b.numel() for name in ("en", "fr")
            for b in tokenize_blocks(load_texts(tmp_path / f"{name}.txt"), TOKENIZER, block_size)]


def _assert_same_weights(tmp_path, run_a, run_b, atol=1e-5):
    a, b = (load_file(str(tmp_path / run_a / "superposed.safetensors")),
            load_file(str(tmp_path / run_b / "superposed.safetensors")))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=atol, rtol=0, msg=f"{run_b} differs from {run_a} in {key}")


def _record(tmp_path, run):
    return json.loads((tmp_path / run / "run.json").read_text())


def _launch_forked(argv, processes=2):
    """Run `superpose train` as `processes` forked processes on gloo (accelerate's CPU test launcher)."""
    from accelerate import debug_launcher

    def work():
        if main(argv) != 0:
            raise RuntimeError("superpose train failed in a forked process")

    debug_launcher(work, num_processes=processes)


def test_two_processes_launched_by_torchrun_equal_one_process_with_the_same_global_batch(tmp_path):
    """`torchrun -m superpose train` with 2 x batch 4 ends with the weights of one process with batch 8."""
    _setup(tmp_path, repeat=1)
    lengths = _block_lengths(tmp_path, 20)
    assert len(set(lengths)) > 1 and len(lengths) % 8 > 4  # short blocks, and a last step split 4 + (1..3)
    steps = 4  # two epochs of two steps
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "superpose",
         *_train_argv(tmp_path, "two", "--batch-size", "4", "--block-size", "20", "--max-steps", str(steps))],
        env=env, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert main(_train_argv(tmp_path, "one", "--batch-size", "8", "--block-size", "20", "--max-steps", str(steps))) == 0
    _assert_same_weights(tmp_path, "one", "two")
    assert launched.stdout.count("training summary") == 1  # only the main process logs
    one, two = _record(tmp_path, "one"), _record(tmp_path, "two")
    assert (two["throughput_this_session"]["processes"] == 2
            and len(two["throughput_this_session"]["peak_memory_mb"]) == 2)
    assert two["throughput_this_session"]["tokens"] == one["throughput_this_session"]["tokens"]  # the same blocks
    assert two["throughput_this_session"]["tokens"] == sum(lengths) * 2  # two epochs, each block once per epoch
    assert two["throughput_this_session"]["tokens_per_second"] > 0
    for a, b in zip(one["history"], two["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
    assert two["train_settings"]["batch_size"] == 4  # per process


def test_grad_accum_2_with_batch_b_equals_batch_2b(tmp_path):
    _setup(tmp_path, repeat=2)
    lengths = _block_lengths(tmp_path, 16)
    assert len(set(lengths)) > 1 and 0 < len(lengths) % 8 < 4  # the last step is one short micro-batch
    common = ("--block-size", "16", "--max-steps", "7", "--valid", f"fr={tmp_path / 'fr.txt'}")
    assert main(_train_argv(tmp_path, "big", "--batch-size", "8", *common)) == 0
    assert main(_train_argv(tmp_path, "accum", "--batch-size", "4", "--grad-accum", "2", *common)) == 0
    _assert_same_weights(tmp_path, "big", "accum")
    big, accum = _record(tmp_path, "big"), _record(tmp_path, "accum")
    for a, b in zip(big["history"], accum["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["valid_loss"] == pytest.approx(a["valid_loss"], rel=1e-6)
    assert accum["throughput_this_session"]["global_batch"] == 8


def test_resumed_two_process_run_equals_an_uninterrupted_one(tmp_path):
    """2 processes x batch 2 x 2 accumulated micro-batches: stopped after 3 steps and resumed, it ends where the
    uninterrupted run (and one process with batch 8) ends; resuming with another process count is refused."""
    _setup(tmp_path, repeat=2)
    common = ("--block-size", "16", "--batch-size", "2", "--grad-accum", "2", "--valid", f"base={tmp_path / 'en.txt'}")
    _launch_forked(_train_argv(tmp_path, "whole", *common, "--max-steps", "7"))
    _launch_forked(_train_argv(tmp_path, "split", *common, "--max-steps", "3"))
    assert _record(tmp_path, "split")["steps"] == 3
    _launch_forked(_train_argv(tmp_path, "split", *common, "--max-steps", "7", "--resume"))
    _assert_same_weights(tmp_path, "whole", "split", atol=1e-6)
    whole, split = _record(tmp_path, "whole")["history"], _record(tmp_path, "split")["history"]
    assert [h["step"] for h in split] == [3, 5, 7] and [h["step"] for h in whole] == [5, 7]
    for a, b in zip(whole, split[1:], strict=True):  # the same losses, validation sharded over the processes
        assert b == pytest.approx(a, rel=1e-6)
    assert main(_train_argv(tmp_path, "single", "--block-size", "16", "--batch-size", "8", "--max-steps", "7")) == 0
    _assert_same_weights(tmp_path, "single", "whole")


def test_resume_in_one_process_refuses_a_two_process_checkpoint(tmp_path, capsys):
    _setup(tmp_path, repeat=1)
    common = ("--block-size", "20", "--batch-size", "4", "--max-steps", "2")
    _launch_forked(_train_argv(tmp_path, "run", *common))
    capsys.readouterr()
    assert main(_train_argv(tmp_path, "run", *common[:-1], "4", "--resume")) == 2
    assert "processes (checkpoint 2, now 1) (launch as many processes" in capsys.readouterr().err
    assert main(_train_argv(tmp_path, "run", *common[:-1], "4", "--resume", "--grad-accum", "2")) == 2
    assert "grad_accum (checkpoint 1, now 2)" in capsys.readouterr().err


def test_bf16_run_on_cpu_trains_and_its_loss_decreases(tmp_path):
    _setup(tmp_path, repeat=2)
    valid = ("--valid", f"base={tmp_path / 'en.txt'}", "--valid", f"fr={tmp_path / 'fr.txt'}")
    assert main(_train_argv(tmp_path, "bf16", "--dtype", "bfloat16", "--batch-size", "8", "--block-size", "16",
                            "--epochs", "4", "--lr-alpha", "3e-2", "--lr-ae", "3e-2", *valid)) == 0
    record = _record(tmp_path, "bf16")
    losses = [h["valid_loss"] for h in record["history"]]
    assert len(losses) == 4 and losses[-1] < losses[0] * 0.9, losses
    assert record["train_settings"]["dtype"] == "bfloat16"
    assert record["train_settings"]["mixed_precision"] == "no"  # no autocast on CPU unless asked for
    assert all(v.dtype == torch.float32 for v in load_file(str(tmp_path / "bf16" / "superposed.safetensors")).values())


def test_bf16_autocast_keeps_alpha_states_and_losses_float32():
    """Under bf16 autocast (the CUDA default; asked for here on CPU) the forward's matmuls run in bf16, while
    alpha, the running blended state, the gradients of the trainable parts and every loss stay float32."""
    from helpers import tiny_pair

    from superpose.data.text import collate
    from superpose.model.superposed import SuperposedModel
    from superpose.training.losses import compute_losses
    from superpose.training.step import autocast as _autocast
    from superpose.training.step import resolve_mixed_precision

    torch.manual_seed(0)
    model = SuperposedModel.from_models(*tiny_pair("gpt2"), paper_model(variant="1d", ae_layers=[0]))
    settings = paper_train(mixed_precision="bf16").resolved("1d")
    assert resolve_mixed_precision(settings, torch.device("cpu"), torch.float32) == "bf16"
    assert resolve_mixed_precision(paper_train(), torch.device("cpu"), torch.bfloat16) == "no"
    batch = collate([torch.arange(3, 19), torch.arange(5, 15)], [0, 1])
    alphas = model.alphas()
    with _autocast("bf16", torch.device("cpu")):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16  # autocast is on
        assert torch.equal(model.alphas(), alphas)  # not rounded through bf16: small steps of alpha stay visible
        states = model(batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True).hidden_states
        losses = compute_losses(model, batch, settings)
    assert all(state.dtype == torch.float32 for state in states)
    assert all(losses[k].dtype == torch.float32 for k in ("loss", "recon", "lm", "blend_reg"))
    losses["loss"].backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)


def test_stacks_dispatched_by_a_device_map_train_like_plain_ones(tmp_path):
    """A base whose second layer is offloaded to disk runs through accelerate's hooks (weights move in per
    forward): the only device-map placement this CPU-only machine can exercise. It trains to the same weights."""
    from transformers import AutoModelForCausalLM

    from superpose.model.superposed import SuperposedModel
    from superpose.training.loop import train

    _setup(tmp_path, repeat=1)
    files = {"base": str(tmp_path / "en.txt"), "fr": str(tmp_path / "fr.txt")}
    placement = {"transformer.wte": "cpu", "transformer.wpe": "cpu", "transformer.drop": "cpu",
                 "transformer.h.0": "cpu", "transformer.h.1": "disk", "transformer.ln_f": "cpu", "lm_head": "cpu"}
    settings = paper_train(max_steps=3, batch_size=4, block_size=16, lr_blend=1e-2, lr_ae=1e-2, device="cpu")
    results = {}
    for name, device_map in (("plain", None), ("dispatched", placement)):
        base = AutoModelForCausalLM.from_pretrained(tmp_path / "base", device_map=device_map,
                                                    offload_folder=str(tmp_path / "offload"))
        expert = AutoModelForCausalLM.from_pretrained(tmp_path / "expert")
        torch.manual_seed(0)
        model = SuperposedModel.from_models(base, {"fr": expert}, paper_model(variant="2d", ae_layers=[1]))
        train(model, TOKENIZER, files, files, tmp_path / name, settings, progress=False)
        results[name] = model
    assert hasattr(results["dispatched"].base.transformer.h[1], "_hf_hook")
    assert results["dispatched"].base.transformer.h[1].attn.c_attn.weight.device.type == "meta"  # still offloaded
    _assert_same_weights(tmp_path, "plain", "dispatched", atol=1e-6)


@pytest.mark.parametrize("device_map", ["auto", "cpu"])
def test_cli_device_map_loads_and_trains(tmp_path, device_map):
    """On this CPU-only machine `auto` places everything on the CPU: it must load and train like no map."""
    _setup(tmp_path, repeat=1)
    common = ("--batch-size", "4", "--block-size", "20", "--max-steps", "3")
    assert main(_train_argv(tmp_path, "mapped", "--device-map", device_map, *common)) == 0
    assert main(_train_argv(tmp_path, "plain", *common)) == 0
    _assert_same_weights(tmp_path, "plain", "mapped", atol=1e-6)
    assert main(["generate", str(tmp_path / "mapped"), "--prompt", "the", "--max-new-tokens", "3", "--device", "cpu",
                 "--device-map", device_map]) == 0


def test_device_map_needs_one_process(tmp_path, capfd):
    _setup(tmp_path, repeat=1)
    with pytest.raises(Exception, match="superpose train failed"):
        _launch_forked(_train_argv(tmp_path, "run", "--device-map", "auto", "--max-steps", "1"))
    assert ("--device-map spreads one copy of the stacks over the devices: run it as one process"
            in capfd.readouterr().err)


def _watch_dtype_changes(monkeypatch) -> list[str]:
    """Record every module conversion (`.to(dtype)`, `.float()`, ...) that changes a parameter's dtype."""
    real, changed = torch.nn.Module._apply, []

    def spy(self, fn, *args, **kwargs):
        before = {id(p): p.dtype for p in self.parameters()}
        out = real(self, fn, *args, **kwargs)
        if any(before.get(id(p), p.dtype) != p.dtype for p in self.parameters()):
            changed.append(type(self).__name__)
        return out

    monkeypatch.setattr(torch.nn.Module, "_apply", spy)
    return changed


def test_loading_a_run_in_bf16_never_converts_an_fp32_stack(tmp_path, monkeypatch):
    """The stacks are read straight into bf16: no fp32 model is built and then cast down."""
    from superpose.model.superposed import SuperposedModel

    _setup(tmp_path, repeat=1)
    assert main(_train_argv(tmp_path, "run", "--batch-size", "4", "--block-size", "20", "--max-steps", "1")) == 0
    changed = _watch_dtype_changes(monkeypatch)
    model = SuperposedModel.from_pretrained(tmp_path / "run", dtype="bfloat16", device="cpu")
    assert model.base.dtype == next(iter(model.experts.values())).dtype == torch.bfloat16
    assert model.blend.spline.control.dtype == torch.float32
    assert main(_train_argv(tmp_path, "again", "--batch-size", "4", "--block-size", "20", "--max-steps", "1",
                            "--dtype", "bfloat16")) == 0
    assert changed == []
    model.base.float()  # the spy sees a real conversion
    assert changed


@pytest.mark.parametrize("command", ["train", "eval", "generate", "analyze", "report", "demo"])
def test_every_command_takes_a_device(command):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    options = {o for action in sub.choices[command]._actions for o in action.option_strings}
    assert "--device" in options


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_unavailable_device_gives_a_clear_error(tmp_path, capsys):
    _setup(tmp_path, repeat=1)
    assert main(_train_argv(tmp_path, "run", "--batch-size", "4", "--block-size", "20", "--max-steps", "1")) == 0
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "run"), "--prompt", "the", "--device", "cuda"]) == 2
    assert "--device cuda: CUDA is not available" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "run"), "--prompt", "the", "--device", "gpu0"]) == 2
    assert "is not a torch device" in capsys.readouterr().err
