"""`superpose distill`: one stack learns the superposed model's next-token distributions.

Each test compares against something that cannot share the bug: a float64 loop over the vocabulary, the
live teacher, a copy of the very stack the teacher switches to, plain `transformers` loading the output,
an uninterrupted run.
"""
import math

import pytest
import torch
from helpers import kill_at_first_checkpoint, paper_model, tiny_model

from superpose.core.settings import SettingsError
from superpose.model.superposed import SuperposedModel
from superpose.training.distill import (
    DistillSettings,
    distill_kl,
    distill_loss,
    make_student,
    merged_model,
    save_student,
    topk_kl,
)
from superpose.training.teacher_cache import build_topk_cache, kept_mass, tempered_log_probs, top_k_entries

PAD = 0


def _one_hot_run(arch: str = "gpt2", stack: int = 1) -> SuperposedModel:
    """A two-expert superposed model whose every layer and head is exactly stack `stack`."""
    experts = {"fr": tiny_model(arch, seed=1, init=0.5), "de": tiny_model(arch, seed=2, init=0.5)}
    model = SuperposedModel.from_models(tiny_model(arch, seed=0, init=0.5), experts,
                                        paper_model(head="mixture", ae_layers=[], graph="parallel"))
    with torch.no_grad():
        model.blend.set_stack(stack)
    return model.eval()


def _reference_kl(student_logits, teacher_logits, labels, temperature):
    """float64, position by position and token by token: T² Σ_v p_v log(p_v / q_v), averaged over scored positions."""
    s, t = student_logits.double() / temperature, teacher_logits.double() / temperature
    total, count = 0.0, 0
    for b in range(s.shape[0]):
        for pos in range(s.shape[1] - 1):
            if labels[b, pos + 1] == -100:
                continue
            p = torch.exp(t[b, pos] - torch.logsumexp(t[b, pos], 0))
            log_q = s[b, pos] - torch.logsumexp(s[b, pos], 0)
            total += sum(float(p[v]) * (math.log(float(p[v])) - float(log_q[v])) for v in range(p.numel()))
            count += 1
    return temperature**2 * total / count


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_kl_term_equals_a_float64_reference(temperature):
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 6, 11, generator=g) * 3, torch.randn(2, 6, 11, generator=g) * 3
    labels = torch.randint(0, 11, (2, 6), generator=g)
    labels[1, 4:] = -100  # padding is not scored
    ours = distill_kl(student, tempered_log_probs(teacher, temperature), labels, temperature)
    assert float(ours) == pytest.approx(_reference_kl(student, teacher, labels, temperature), rel=1e-5)


def test_topk_kl_is_the_kl_over_the_kept_tokens_and_the_rest():
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(2, 5, 9, generator=g) * 2, torch.randn(2, 5, 9, generator=g) * 2
    labels = torch.randint(0, 9, (2, 5), generator=g)
    log_p = tempered_log_probs(teacher, 1.0)
    indices, kept, rest = top_k_entries(log_p, 3)
    ours = topk_kl(student, indices, kept, rest, labels)
    # float64: the k kept outcomes and one outcome "any other token", for both distributions
    p, q = log_p.double().exp(), torch.softmax(student.double(), -1)
    total = 0.0
    for b in range(2):
        for pos in range(4):
            keep = indices[b, pos].tolist()
            others = [v for v in range(9) if v not in keep]
            pk, qk = p[b, pos, keep], q[b, pos, keep]
            pr, qr = p[b, pos, others].sum(), q[b, pos, others].sum()
            total += float((pk * (pk / qk).log()).sum() + pr * (pr / qr).log())
    assert float(ours) == pytest.approx(total / 8, rel=1e-5)
    assert float(ours) <= float(distill_kl(student, log_p, labels)) + 1e-6  # merging outcomes never adds KL
    # with every token kept, the truncated KL is the full one
    full = top_k_entries(log_p, 8)
    assert float(topk_kl(student, *full, labels)) == pytest.approx(float(distill_kl(student, log_p, labels)), rel=1e-4)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("lora", [None, 4])
def test_loss_is_zero_when_the_student_is_the_stack_a_one_hot_teacher_runs(arch, lora):
    teacher = _one_hot_run(arch, stack=1)
    student = make_student(teacher.stack_models[1], DistillSettings(lora=lora))
    ids = torch.randint(1, 90, (3, 12), generator=torch.Generator().manual_seed(3))
    labels = ids.clone()
    with torch.no_grad():
        log_p = tempered_log_probs(teacher(ids).logits, 1.0)
        losses = distill_loss(student(input_ids=ids).logits, labels, 1.0, 1.0, teacher_log_probs=log_p)
        other = make_student(teacher.stack_models[2], DistillSettings(lora=lora))
        away = distill_loss(other(input_ids=ids).logits, labels, 1.0, 1.0, teacher_log_probs=log_p)
    assert float(losses["loss"]) == pytest.approx(0.0, abs=1e-5)
    assert float(away["loss"]) > 0.1  # another stack is far from this teacher: the zero is not vacuous


def test_replay_is_the_lm_loss_and_runs_no_teacher():
    g = torch.Generator().manual_seed(4)
    logits, labels = torch.randn(2, 5, 7, generator=g), torch.randint(0, 7, (2, 5), generator=g)
    losses = distill_loss(logits, labels, 0.0, 1.0, teacher_log_probs=None)
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1))
    assert float(losses["loss"]) == pytest.approx(float(expected), rel=1e-6)


def test_settings_are_validated():
    for bad in (dict(teacher_weight=1.5), dict(temperature=0), dict(lora=0), dict(lora_alpha=8.0),
                dict(top_k=8, teacher_weight=0.0), dict(batch_size=0)):
        with pytest.raises(SettingsError):
            DistillSettings(**bad)


def test_cached_top_k_teacher_equals_the_live_teacher_on_the_kept_entries(tmp_path):
    teacher = _one_hot_run("gpt2", stack=1)
    with torch.no_grad():
        for param in teacher.blend.parameters():  # a real mixture, not one stack
            param.normal_(0, 1.0)
    g = torch.Generator().manual_seed(5)
    blocks = [torch.randint(1, 90, (n,), generator=g) for n in (12, 12, 7, 12, 3)]
    needed = [3, 0, 2, 4]  # the order of first use; block 1 is never needed
    cache = build_topk_cache(teacher, blocks, needed, tmp_path, k=5, temperature=2.0, fingerprint={"test": 1},
                             batch_size=2, pad_id=PAD, device=torch.device("cpu"), progress=False)
    assert len(cache) == 4 and 1 not in cache
    indices, kept, rest = cache.lookup([2, 3], 12)
    for row, block in enumerate([2, 3]):
        n = blocks[block].numel()
        with torch.no_grad():
            live = tempered_log_probs(teacher(blocks[block][None]).logits, 2.0)[0]  # (n, V)
        torch.testing.assert_close(kept[row, :n], live.gather(-1, indices[row, :n]), atol=1e-5, rtol=0)
        assert torch.equal(indices[row, :n], live.topk(5, -1).indices)
        torch.testing.assert_close(rest[row, :n].exp() + kept[row, :n].exp().sum(-1), torch.ones(n), atol=1e-5, rtol=0)
    mass = kept_mass(cache)
    assert 0 < mass["min"] <= mass["mean"] < 1 and mass["positions"] == 12 + 7 + 12 + 3
    # a rebuild reuses the shards; another temperature is refused
    again = build_topk_cache(teacher, blocks, needed, tmp_path, k=5, temperature=2.0, fingerprint={"test": 1},
                             batch_size=2, pad_id=PAD, device=torch.device("cpu"), progress=False)
    assert len(again) == 4
    with pytest.raises(SettingsError, match="other settings"):
        build_topk_cache(teacher, blocks, needed, tmp_path, k=5, temperature=1.0, fingerprint={"test": 1},
                         batch_size=2, pad_id=PAD, device=torch.device("cpu"), progress=False)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_lora_result_merges_and_reloads_with_plain_transformers(tmp_path, arch):
    from transformers import AutoModelForCausalLM

    stack = tiny_model(arch, seed=1)
    student = make_student(stack, DistillSettings(lora=4))
    trainable = [n for n, p in student.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():  # a trained-looking adapter: B starts at zero, which would make the merge vacuous
        for name, param in student.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    ids = torch.randint(1, 90, (2, 10), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        adapted = student(input_ids=ids).logits
        assert not torch.allclose(adapted, stack(ids).logits, atol=1e-3)
    save_student(student, tmp_path / "out", None, torch.float32)
    assert not (tmp_path / "out" / "adapter_config.json").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert type(reloaded) is type(stack)
    assert not any("lora" in n for n, _ in reloaded.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, adapted, atol=1e-4, rtol=0)
    assert merged_model(student) is not student  # the student keeps its adapter


# ---- whole runs -----------------------------------------------------------------------------------------


def _teacher_run(tmp_path):
    """A saved two-expert superposed run (dynamic-like: parallel graph, token gates, mixture head) + text files."""
    from helpers import ENGLISH, FRENCH, char_tokenizer

    tokenizer = char_tokenizer()
    paths = {}
    for name, seed in (("base", 0), ("fr", 1), ("de", 2)):
        tiny_model("gpt2", seed=seed, init=0.3).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
        paths[name] = str(tmp_path / name)
    from superpose.core.loading import load_causal_lm

    torch.manual_seed(0)
    model = SuperposedModel.from_models(
        load_causal_lm(paths["base"]), {n: load_causal_lm(paths[n]) for n in ("fr", "de")},
        paper_model(graph="parallel", head="mixture", gate="token", gate_evidence="fixed_share", ae_layers=[]),
        paths["base"], expert_paths={"fr": paths["fr"], "de": paths["de"]})
    with torch.no_grad():
        for param in model.blend.parameters():
            param.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "run")
    tokenizer.save_pretrained(tmp_path / "run")
    text = tmp_path / "text.txt"
    text.write_text("\n".join((ENGLISH + FRENCH) * 6), encoding="utf-8")
    valid = tmp_path / "valid.txt"
    valid.write_text("\n".join(["the dog is on the mat", "LA FILLE EST À LA MER", "we walk in the sun"] * 3),
                     encoding="utf-8")
    return tmp_path / "run", text, valid


def test_short_distillation_lowers_the_kl_to_the_teacher_on_held_out_blocks(tmp_path):
    import json

    from transformers import AutoModelForCausalLM

    from superpose.cli.commands import main

    run, text, valid = _teacher_run(tmp_path)
    out = tmp_path / "student"
    assert main(["distill", str(run), "--train", str(text), "--valid", f"held={valid}", "--out", str(out),
                 "--start", "fr", "--max-steps", "25", "--batch-size", "4", "--block-size", "24", "--lr", "5e-3",
                 "--teacher-weight", "1"]) == 0
    teacher = SuperposedModel.from_pretrained(run)
    from superpose.core.loading import load_tokenizer
    from superpose.data.text import load_texts, tokenize_blocks
    from superpose.training.distill import evaluate_student

    blocks = {"held": tokenize_blocks(load_texts(valid), load_tokenizer(str(run)), 24)}
    before = evaluate_student(teacher.stack_models[1], teacher, blocks, PAD, 4, torch.device("cpu"))["held"]
    student = AutoModelForCausalLM.from_pretrained(out).eval()  # transformers alone
    after = evaluate_student(student, teacher, blocks, PAD, 4, torch.device("cpu"))["held"]
    assert after["kl_to_teacher"] < 0.75 * before["kl_to_teacher"], (before, after)
    record = json.loads((out / "distill.json").read_text())
    assert record["evaluation"]["held"]["kl_to_teacher"] == pytest.approx(after["kl_to_teacher"], rel=1e-4)
    assert record["evaluation"]["held"]["gap_to_teacher"] == pytest.approx(after["student_ppl"] / after["teacher_ppl"],
                                                                           rel=1e-4)
    card = (out / "README.md").read_text()
    assert card.startswith("---\nbase_model:") and "library_name: transformers" in card and "kl_to_teacher" in card
    assert "gap_to_teacher" in card
    assert (out / "tokenizer.json").is_file() and not list(out.glob("*.bin"))


def test_sigkilled_distillation_resumes_to_the_same_weights(tmp_path):
    ("""A distill process killed (SIGKILL) after a step checkpoint, then resumed, ends where an uninterrupted """
     """run ends.""")
    from safetensors.torch import load_file

    from superpose.cli.commands import main

    run, text, _ = _teacher_run(tmp_path)
    steps = 60

    def argv(out, *more):
        return ["distill", str(run), "--train", str(text), "--out", str(out), "--start", "fr", "--max-steps",
                str(steps), "--batch-size", "3", "--grad-accum", "2", "--block-size", "16", "--save-every", "3",
                "--top-k", "6", "--teacher-weight", "0.7", "--temperature", "2", *more]

    killed = tmp_path / "killed"
    saved_step = kill_at_first_checkpoint(argv(killed), killed / ".superpose")
    assert 0 < saved_step < steps and not (killed / "model.safetensors").exists()
    assert main(argv(killed)) == 2  # a checkpoint without --resume is refused
    assert main(argv(killed, "--resume")) == 0
    assert main(argv(tmp_path / "whole")) == 0
    import json

    record = json.loads((killed / "distill.json").read_text())
    assert record["steps"] == steps and record["steps_this_session"] == steps - saved_step
    assert sorted(p.name for p in killed.iterdir()) == sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert not (killed / ".superpose").exists()  # checkpoints and cache removed after the run
    resumed, whole = (load_file(str(killed / "model.safetensors")),
                      load_file(str(tmp_path / "whole" / "model.safetensors")))
    assert resumed.keys() == whole.keys()
    for key, value in whole.items():
        torch.testing.assert_close(resumed[key], value, atol=1e-6, rtol=0, msg=key)
    assert json.loads((killed / "distill.json").read_text())["history"] == \
        json.loads((tmp_path / "whole" / "distill.json").read_text())["history"]


def test_bad_input_stops_before_any_compute_with_a_clear_error(tmp_path, capsys):
    from superpose.cli.commands import main

    run, text, _ = _teacher_run(tmp_path)
    common = ["--out", str(tmp_path / "out"), "--max-steps", "1", "--block-size", "16"]
    capsys.readouterr()
    assert main(["distill", str(run), "--train", str(text), "--start", "es", *common]) == 2
    assert "--start 'es' names no stack of the run: use one of ['base', 'fr', 'de']" in capsys.readouterr().err
    assert main(["distill", str(run), "--train", str(tmp_path / "missing.txt"), *common]) == 2
    assert "data file not found" in capsys.readouterr().err
    assert main(["distill", str(run), "--train", str(text), "--teacher-weight", "2", *common]) == 2
    assert "teacher_weight" in capsys.readouterr().err
    assert main(["distill", str(run), "--train", str(text), *common, "--block-size", "500"]) == 2
    assert "exceeds the model's 128 positions" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_first_step_of_a_run_from_a_one_hot_teachers_own_stack_has_zero_loss(tmp_path):
    from superpose.training.distill import distill

    run, text, _ = _teacher_run(tmp_path)
    teacher = SuperposedModel.from_pretrained(run)
    with torch.no_grad():
        teacher.blend.set_stack(2)  # every layer and the mixture head on the `de` stack
    result = distill(run, {"text": str(text)}, None, tmp_path / "out",
                     DistillSettings(start="de", max_steps=1, batch_size=4, block_size=16, teacher_weight=1.0),
                     progress=False,
                     teacher=teacher)
    assert result.history[0]["train_kl"] == pytest.approx(0.0, abs=1e-5)
    assert result.history[0]["train_loss"] == pytest.approx(0.0, abs=1e-5)


def test_two_torchrun_processes_and_grad_accum_equal_one_big_batch(tmp_path):
    """`torchrun -m superpose distill` with 2 x batch 2, and 1 process with batch 2 x --grad-accum 2, end with the
    weights of one process with batch 4 (LoRA, a top-k cache and λ = 0.5 together)."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    from superpose.cli.commands import main

    run, text, _ = _teacher_run(tmp_path)

    def argv(out, *more):  # `--start-stack`: torchrun would take `--start` for its own --start-method
        return ["distill", str(run), "--train", str(text), "--out", str(tmp_path / out), "--start-stack", "fr",
                "--max-steps", "5", "--block-size", "16", "--device", "cpu", "--top-k", "5", "--teacher-weight", "0.5",
                "--lora", "4", *more]

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    launched = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               "-m", "superpose", *argv("two", "--batch-size", "2")],
                              env=env, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert main(argv("one", "--batch-size", "4")) == 0
    assert main(argv("accum", "--batch-size", "2", "--grad-accum", "2")) == 0
    one = load_file(str(tmp_path / "one" / "model.safetensors"))
    for other in ("two", "accum"):
        weights = load_file(str(tmp_path / other / "model.safetensors"))
        for key, value in one.items():
            torch.testing.assert_close(weights[key], value, atol=1e-5, rtol=0, msg=f"{other}: {key}")
    assert launched.stdout.count("distillation (") == 1  # only the main process reports


# ---- nothing lost, nothing silently different ------------------------------------------------------------


def _files(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _distill_argv(run, text, out, *more):
    return ["distill", str(run), "--train", str(text), "--out", str(out), "--start", "fr", "--max-steps", "2",
            "--batch-size", "4", "--block-size", "16", *more]


def test_out_folders_holding_other_work_are_never_written_into(tmp_path, capsys):
    """An expert's own folder, the run's folder, a finished distillation: refused (bytes unchanged) without
    --overwrite; the run's and the stacks' folders even with it."""
    from superpose.cli.commands import main

    run, text, _ = _teacher_run(tmp_path)
    expert = tmp_path / "fr"
    before = _files(expert)
    assert main(_distill_argv(run, text, expert)) == 2
    assert "pick a new folder" in capsys.readouterr().err
    assert main(_distill_argv(run, text, expert, "--overwrite")) == 2  # a stack's own folder, always
    assert main(_distill_argv(run, text, run, "--overwrite")) == 2
    assert _files(expert) == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main(_distill_argv(run, text, other)) == 2
    assert "other files (keep.txt)" in capsys.readouterr().err
    assert main(_distill_argv(run, text, other, "--overwrite")) == 0
    assert (other / "keep.txt").read_text() == "mine" and (other / "model.safetensors").is_file()
    assert main(_distill_argv(run, text, other)) == 2  # now a finished distillation: still refused
    assert "a finished distillation" in capsys.readouterr().err


def test_resume_with_nothing_to_resume_is_an_error(tmp_path, capsys):
    from superpose.cli.commands import main

    run, text, _ = _teacher_run(tmp_path)
    assert main(_distill_argv(run, text, tmp_path / "new", "--resume")) == 2
    assert "no distillation checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_the_run_and_start_are_checked_before_any_text_is_read(tmp_path, capsys):
    from superpose.cli.commands import main

    run, _, _ = _teacher_run(tmp_path)
    missing = tmp_path / "missing.txt"  # would fail the text loading if it came first
    assert main(["distill", str(run), "--train", str(missing), "--out", str(tmp_path / "o"), "--start", "es"]) == 2
    assert "--start 'es'" in capsys.readouterr().err
    assert main(["distill", str(tmp_path / "fr"), "--train", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert "is not a superposed run folder" in capsys.readouterr().err


def test_a_bad_top_k_leaves_no_cache_and_the_corrected_rerun_works(tmp_path):
    from superpose.cli.commands import main

    run, text, _ = _teacher_run(tmp_path)
    out = tmp_path / "out"
    assert main(_distill_argv(run, text, out, "--top-k", "500")) == 2
    assert not list(out.rglob("meta.json"))
    assert main(_distill_argv(run, text, out, "--top-k", "8")) == 0


def test_the_top_k_cache_fills_what_a_longer_or_reseeded_run_needs(tmp_path):
    """A cache built for 2 steps serves a resumed run to 30 steps, and a rerun with another seed and batch:
    only the missing blocks are computed, into new shards."""
    from superpose.cli.commands import main
    from superpose.training import teacher_cache

    run, text, _ = _teacher_run(tmp_path)
    out = tmp_path / "out"
    topk = ["--top-k", "6", "--keep-work"]
    assert main(_distill_argv(run, text, out, *topk)) == 0
    shards = lambda: sorted(p.name for p in (out / ".superpose" / teacher_cache.CACHE_DIR).glob("shard-*"))  # noqa
    first = shards()
    assert main(_distill_argv(run, text, out, *topk, "--resume", "--max-steps", "30")) == 0
    assert shards()[: len(first)] == first and len(shards()) > len(first)
    assert main(_distill_argv(run, text, out, *topk, "--overwrite", "--seed", "3", "--batch-size", "5",
                              "--max-steps", "40")) == 0


def test_a_top_k_cache_never_serves_other_blocks(tmp_path, capsys):
    """Other block sizes (or other switched blocks) are other tokens: the cache built for them is refused."""
    from superpose.cli.commands import main

    run, text, _ = _teacher_run(tmp_path)
    out = tmp_path / "out"
    assert main(_distill_argv(run, text, out, "--top-k", "6", "--keep-work")) == 0
    capsys.readouterr()
    assert main([*_distill_argv(run, text, out, "--top-k", "6", "--keep-work", "--overwrite"),
                 "--block-size", "12"]) == 2
    assert "teacher cache for other settings" in capsys.readouterr().err


def test_the_cache_and_checkpoints_belong_to_the_runs_weights(tmp_path, capsys):
    """Retraining the run's gates changes its outputs: a kept checkpoint or cache of the old weights is refused."""
    from superpose.cli.commands import main

    run, text, _ = _teacher_run(tmp_path)
    out = tmp_path / "out"
    assert main(_distill_argv(run, text, out, "--top-k", "6", "--keep-work")) == 0
    teacher = SuperposedModel.from_pretrained(run)
    with torch.no_grad():
        for param in teacher.blend.parameters():
            param.add_(0.1)
    teacher.save_pretrained(run)
    capsys.readouterr()
    assert main(_distill_argv(run, text, out, "--top-k", "6", "--resume", "--max-steps", "4")) == 2
    assert "teacher" in capsys.readouterr().err
    assert main(_distill_argv(run, text, out, "--top-k", "6", "--overwrite")) == 2
    assert "teacher cache for other settings" in capsys.readouterr().err


def test_resume_compares_the_learning_rate_used_not_the_flag(tmp_path, capsys):
    """A run at the default rate resumes with that rate spelt out, and is refused with another (a default that moved
    between versions would otherwise change a resumed run's steps without a word)."""
    from superpose.cli.commands import main

    run, text, _ = _teacher_run(tmp_path)
    out = tmp_path / "out"
    assert main(_distill_argv(run, text, out, "--keep-work")) == 0
    default = DistillSettings().resolved_lr
    capsys.readouterr()
    assert main(_distill_argv(run, text, out, "--resume", "--max-steps", "3", "--keep-work", "--lr", str(default))) == 0
    assert main(_distill_argv(run, text, out, "--resume", "--max-steps", "4", "--lr", str(default / 2))) == 2
    assert f"'lr': {default / 2!r}" in capsys.readouterr().err  # the difference is named


def test_the_cache_belongs_to_the_runs_settings_too(tmp_path, capsys):
    """Output temperatures change the teacher's targets and no weight: a cache built before the change is refused."""
    import json

    from superpose.cli.commands import main

    run, text, _ = _teacher_run(tmp_path)
    out = tmp_path / "out"
    assert main(_distill_argv(run, text, out, "--top-k", "6", "--keep-work")) == 0
    config = json.loads((run / "config.json").read_text())
    config["settings"]["output_temperatures"] = [] if config["settings"].get("output_temperatures") else [1.0, 1.5]
    (run / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(_distill_argv(run, text, out, "--top-k", "6", "--overwrite")) == 2
    assert "teacher cache for other settings" in capsys.readouterr().err


class _Unusable(torch.nn.Module):
    def forward(self, *args, **kwargs):
        raise AssertionError("replay ran the teacher")


def test_replay_runs_no_teacher_and_loads_only_the_start_stack(tmp_path):
    import shutil

    from superpose.training.distill import distill

    run, text, _ = _teacher_run(tmp_path)
    teacher = SuperposedModel.from_pretrained(run)
    teacher.forward = _Unusable().forward  # any teacher pass fails the run
    settings = DistillSettings(start="fr", teacher_weight=0.0, max_steps=2, batch_size=4, block_size=16)
    result = distill(run, {"text": str(text)}, {"v": str(text)}, tmp_path / "a", settings, progress=False,
                     teacher=teacher)
    assert result.steps == 2 and "teacher_ppl" not in result.evaluation["v"]
    for gone in ("base", "de"):  # from disk: the other stacks need not even exist
        shutil.rmtree(tmp_path / gone)
    assert distill(run, {"text": str(text)}, None, tmp_path / "b", settings, progress=False).steps == 2


def test_the_student_is_saved_in_the_start_stacks_dtype(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from superpose.training.distill import distill

    run, text, _ = _teacher_run(tmp_path)
    fr = AutoModelForCausalLM.from_pretrained(tmp_path / "fr").to(torch.bfloat16)
    fr.save_pretrained(tmp_path / "fr")
    settings = DistillSettings(start="fr", teacher_weight=0.0, max_steps=1, batch_size=4, block_size=16)
    distill(run, {"text": str(text)}, None, tmp_path / "out", settings, progress=False)
    assert {t.dtype for t in load_file(str(tmp_path / "out" / "model.safetensors")).values()} == {torch.bfloat16}
    explicit = DistillSettings(**{**settings.__dict__, "dtype": "float32"})
    distill(run, {"text": str(text)}, None, tmp_path / "f32", explicit, progress=False)
    assert {t.dtype for t in load_file(str(tmp_path / "f32" / "model.safetensors")).values()} == {torch.float32}


def test_the_teacher_runs_as_served_even_inside_the_students_autocast(tmp_path):
    from superpose.training.teacher_cache import teacher_logits

    teacher = _one_hot_run("gpt2", stack=1)
    ids = torch.randint(1, 90, (2, 10), generator=torch.Generator().manual_seed(8))
    mask = torch.ones_like(ids)
    served = teacher_logits(teacher, ids, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = teacher_logits(teacher, ids, mask)
    assert inside.dtype == served.dtype == torch.float32
    torch.testing.assert_close(inside, served, atol=0, rtol=0)


def test_lora_merge_equals_w_plus_scaled_b_a_by_hand():
    """alpha / r scaling, checked against the formula, not against PEFT's own forward."""
    stack = tiny_model("llama", seed=1)
    rank, alpha = 4, 12.0
    student = make_student(stack, DistillSettings(lora=rank, lora_alpha=alpha))
    with torch.no_grad():
        for name, param in student.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    parts = dict(student.named_parameters())
    name = next(n for n in parts if n.endswith("q_proj.lora_A.default.weight"))
    prefix = name.removesuffix("lora_A.default.weight")
    a, b = parts[name], parts[prefix + "lora_B.default.weight"]
    w = parts[prefix + "base_layer.weight"]
    expected = w + (alpha / rank) * b @ a
    merged = dict(merged_model(student).named_parameters())
    plain = prefix.replace("base_model.model.", "") + "weight"
    torch.testing.assert_close(merged[plain], expected, atol=1e-6, rtol=0)
    assert not torch.allclose(merged[plain], w + b @ a, atol=1e-4)  # the scale matters here


def test_topk_kl_ignores_padded_rows_and_minus_infinity_entries():
    """A padded row (labels -100) adds nothing; kept entries of -inf (a teacher with < k possible tokens) add
    no 0 * inf NaN."""
    from superpose.training.distill import topk_kl

    g = torch.Generator().manual_seed(9)
    logits = torch.randn(2, 6, 11, generator=g)
    labels = torch.randint(0, 11, (2, 6), generator=g)
    teacher = torch.log_softmax(torch.randn(2, 6, 11, generator=g), -1)
    teacher[..., 7:] = float("-inf")  # only 7 possible tokens
    teacher = torch.log_softmax(teacher, -1)
    indices, kept, rest = top_k_entries(teacher, 9)  # k > possible: -inf kept entries, rest = -inf
    assert torch.isinf(kept).any() and torch.isinf(rest).all()
    one = topk_kl(logits[:1], indices[:1], kept[:1], rest[:1], labels[:1])
    padded_labels = labels.clone()
    padded_labels[1] = -100
    both = topk_kl(logits, indices, kept, rest, padded_labels)
    assert torch.isfinite(both) and float(both) == pytest.approx(float(one), rel=1e-6)
    full = distill_kl(logits[:1], teacher[:1], labels[:1])
    assert float(one) == pytest.approx(float(full), rel=1e-5)  # nothing outside the kept tokens: the full KL


def test_switched_blocks_reach_the_student_scored_by_the_teacher(tmp_path):
    """--switch-rate: a share of the blocks alternate between the --train files (English lower case, French
    upper case here), built from the training files only, and the teacher scores exactly what the student reads."""
    from helpers import ENGLISH, FRENCH, char_tokenizer

    from superpose.training.distill import distill

    run, _, _ = _teacher_run(tmp_path)
    files = {}
    for name, lines in (("en", ENGLISH), ("fr", FRENCH)):
        files[name] = tmp_path / f"{name}.txt"
        files[name].write_text("\n".join(lines * 6), encoding="utf-8")
    tokenizer = char_tokenizer()
    lower = {tokenizer.convert_tokens_to_ids(c) for c in "abcdefghijklmnopqrstuvwxyz"}
    upper = {tokenizer.convert_tokens_to_ids(c) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}

    def mixed_rows(switch_rate: float) -> int:
        teacher = SuperposedModel.from_pretrained(run)
        forward, seen = teacher.forward, []

        def recording(input_ids, *args, **kwargs):
            seen.extend(row[mask.bool()].tolist() for row, mask in zip(input_ids, kwargs["attention_mask"]))
            return forward(input_ids, *args, **kwargs)

        teacher.forward = recording
        settings = DistillSettings(start="fr", max_steps=6, batch_size=4, block_size=24, switch_rate=switch_rate)
        distill(run, {k: str(v) for k, v in files.items()}, None, tmp_path / f"out-{switch_rate}", settings,
                progress=False, teacher=teacher)
        return sum(bool(set(row) & lower) and bool(set(row) & upper) for row in seen)

    assert mixed_rows(0.0) == 0
    assert mixed_rows(0.5) >= 4


def test_a_lora_student_with_switched_blocks_merges_and_reloads_with_plain_transformers(tmp_path):
    from helpers import ENGLISH, FRENCH
    from transformers import AutoModelForCausalLM

    from superpose.cli.commands import main

    run, _, _ = _teacher_run(tmp_path)
    trains = []
    for name, lines in (("en", ENGLISH), ("fr", FRENCH)):
        (tmp_path / f"{name}.txt").write_text("\n".join(lines * 6), encoding="utf-8")
        trains += ["--train", f"{name}={tmp_path / f'{name}.txt'}"]
    out = tmp_path / "lora"
    assert main(["distill", str(run), *trains, "--out", str(out), "--start", "fr", "--lora", "4", "--switch-rate",
                 "0.5", "--max-steps", "3", "--batch-size", "4", "--block-size", "24"]) == 0
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not any("lora" in name for name, _ in reloaded.named_parameters())
    fr = AutoModelForCausalLM.from_pretrained(tmp_path / "fr").eval()
    ids = torch.randint(1, 90, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        moved = reloaded(ids).logits
        assert torch.isfinite(moved).all() and not torch.allclose(moved, fr(ids).logits, atol=1e-4)


def test_the_default_start_is_the_first_expert(tmp_path):
    import json

    from superpose.training.distill import distill

    run, text, _ = _teacher_run(tmp_path)
    settings = DistillSettings(teacher_weight=0.0, max_steps=1, batch_size=4, block_size=16)
    distill(run, {"text": str(text)}, None, tmp_path / "out", settings, progress=False)
    assert json.loads((tmp_path / "out" / "distill.json").read_text())["start"] == "fr"
