"""`superpose demo`: the paper's story at small scale, offline, in a few minutes.

Shipped English base + French fine-tune (built from the bundled generated corpus) -> superposed
model -> evaluation against weight merging and the other baselines -> samples -> report.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from superpose.core.loading import load_causal_lm, load_tokenizer, resolve_device
from superpose.core.text_tables import format_table
from superpose.demo.bundled_corpus import generate_documents, write_corpus
from superpose.demo.tiny_experts import ExpertRecipe, build_experts
from superpose.evaluation.evaluate import evaluate, write_json
from superpose.model.settings import ModelSettings
from superpose.model.superposed import SuperposedModel
from superpose.report.eval_tables import BOUND_NOTE, eval_table
from superpose.training.checkpoint import find_checkpoint
from superpose.training.loop import train
from superpose.training.presets import DEFAULT_PRESET, preset_settings

DEMO_EXPERTS = Path(__file__).parent.parent / "assets" / "demo_experts"
DEMO_RECIPE = ExpertRecipe(n_layer=4, n_embd=128, n_head=4, block_size=128, vocab_size=2048, base_steps=600,
                           finetune_steps=300, batch_size=16, seed=0)
PROMPTS = {"base": ["The old fisherman", "On Sunday morning, the baker"],
           "fr": ["Le vieux pêcheur", "Dimanche matin, la boulangère"]}
LANGUAGE = {"base": "English", "fr": "French"}


def build_demo_experts(out_dir: str | Path = DEMO_EXPERTS, progress: bool = True) -> dict[str, Path]:
    """Rebuild the shipped experts from the bundled corpus (same seed, same recipe)."""
    return build_experts(generate_documents("en", "train"), generate_documents("fr", "train"), out_dir, DEMO_RECIPE,
                         "fr", progress=progress)


def _samples(models: dict[str, torch.nn.Module], tokenizer, max_new_tokens: int, seed: int) -> dict:
    samples: dict[str, dict[str, list[str]]] = {}
    for name, model in models.items():
        samples[name] = {}
        for domain, prompts in PROMPTS.items():
            texts = []
            for prompt in prompts:
                torch.manual_seed(seed)
                inputs = tokenizer(prompt, return_tensors="pt").to(next(model.parameters()).device)
                with torch.no_grad():
                    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=True, top_k=40,
                                         temperature=0.8, pad_token_id=tokenizer.pad_token_id)
                texts.append(tokenizer.decode(out[0], skip_special_tokens=True))
            samples[name][domain] = texts
    return samples


def demo_settings(variant: str, n_layers: int) -> ModelSettings:
    """The paper's static blend with one autoencoder after the last layer, and the expert's final norm + head.

    At a few hundred steps, each randomly initialised autoencoder is a bottleneck the model must first
    learn to undo, so the demo keeps one. The base never saw French, so its head has untrained rows for
    French-only tokens; the expert's head was fine-tuned from the base's and still knows English ones.
    (The paper's settings, base head and AEs at 2..11 of 12 layers, are the `paper` preset.)
    """
    return replace(preset_settings("paper")[0], variant=variant, ae_layers=[n_layers - 1], head="first_expert")


def run_demo(
    out_dir: str | Path = "superpose-demo",
    variant: str | None = None,
    rebuild: bool = False,
    steps: int = 150,
    eval_blocks: int = 48,
    analysis: bool = True,
    seed: int = 0,
    progress: bool = True,
    analysis_samples: int = 16,
    generations: int = 4,
    device: str | None = "cpu",
) -> dict:
    """Train, evaluate, sample and report; every output goes under `out_dir`.

    `device` None picks cuda when available, else cpu (the command line's default)."""
    started = time.perf_counter()
    device = resolve_device(device)
    out_dir = Path(out_dir)
    if rebuild:
        build_demo_experts(progress=progress)
    if not (DEMO_EXPERTS / "base" / "config.json").is_file():
        raise FileNotFoundError(f"demo experts missing under {DEMO_EXPERTS}: run `superpose demo --rebuild`")
    corpus = {f"{lang}/{split}": str(path) for (lang, split), path in write_corpus(out_dir / "corpus").items()}
    files = {split: {"base": corpus[f"en/{split}"], "fr": corpus[f"fr/{split}"]}
             for split in ("train", "valid", "test")}
    base_path, expert_path = str(DEMO_EXPERTS / "base"), str(DEMO_EXPERTS / "fr")
    placement = None if device.type == "cpu" else device
    base, expert = load_causal_lm(base_path, device_map=placement), load_causal_lm(expert_path, device_map=placement)
    tokenizer = load_tokenizer(base_path)
    torch.manual_seed(seed)
    settings, preset_train = preset_settings(DEFAULT_PRESET)  # what `superpose train` does without --preset
    if variant is not None:
        settings = replace(settings, variant=variant)
    model = SuperposedModel.from_models(base, {"fr": expert}, settings, base_path, {"fr": expert_path})
    run_dir = out_dir / "run"
    train_settings = replace(preset_train, epochs=1, max_steps=steps, batch_size=16, block_size=128, lr_blend=2e-3,
                             lr_ae=1e-3, seed=seed, max_valid_blocks=16, device=str(device))
    if find_checkpoint(run_dir) is not None:
        import shutil
        shutil.rmtree(run_dir)  # a demo always starts from scratch, so reruns give identical numbers
    history = train(model, tokenizer, files["train"], files["valid"], run_dir, train_settings,
                    progress=progress).history
    model.eval()
    result = evaluate(model, tokenizer, files["test"], baselines=None, select_data=files["valid"],
                      train_files=files["train"], block_size=128, batch_size=8, max_blocks=eval_blocks,
                      seed=seed, progress=progress)
    result["training_history"] = history
    eval_path = write_json(result, out_dir / "eval.json")
    samples = _samples({"base": base, "expert:fr": expert, "superposed": model}, tokenizer, 30, seed)
    (out_dir / "samples.json").write_text(json.dumps(samples, indent=2, ensure_ascii=False), encoding="utf-8")
    report = None
    if analysis:
        report = _analysis_and_report(run_dir, files["test"], eval_path, out_dir, seed, progress,
                                      analysis_samples, generations, device)
    seconds = time.perf_counter() - started
    summary = summary_table(result)
    print(eval_table(result))
    print()
    print(summary)
    for name, per_domain in samples.items():
        for domain, texts in per_domain.items():
            print(f"[{name} | {LANGUAGE[domain]}] {texts[0]}")
    print(f"\ndemo finished in {seconds / 60:.1f} min; outputs under {out_dir}"
          + (f"; report: {report}" if report else ""))
    return {"result": result, "samples": samples, "seconds": seconds, "report": report, "summary": summary}


def _analysis_and_report(run_dir, test_files, eval_path, out_dir, seed, progress, samples, generations, device):
    from superpose.report.analysis.run import analyze
    from superpose.report.run_report import build_report

    analyze(run_dir, test_files, out_dir / "analysis", samples=samples, block_size=64, method="tsne",
            generations=generations, max_new_tokens=24, seed=seed, progress=progress, device=device)
    return build_report(run_dir, out_dir / "report", str(eval_path), str(out_dir / "analysis"),
                        title="superpose demo: English base + French fine-tune")


def summary_table(result: dict) -> str:
    """Models × languages: the superposed model next to both experts and the strongest simple alternatives."""
    models = result["models"]
    best = result.get("best", {})
    bounds = set(result.get("reads_answer", []))
    compute = result.get("stacks_per_token", {})
    keep = ["base", "expert:fr", "superposed", best.get("linear", "linear:0.5"), "ensemble:0.5", "bayes",
            best.get("fixed_share", "fixed_share:0.02"), "fixed_share_mix", "router", "oracle", "oracle_token"]
    rows = []
    for name in dict.fromkeys(k for k in keep if k in models):
        per = models[name]
        rows.append([name + (" †" if name in bounds else ""), per["base"]["ppl"], per["fr"]["ppl"],
                     per["base"]["accuracy"], per["fr"]["accuracy"], compute.get(name, float("nan"))])
    table = format_table(["model", "English PPL", "French PPL", "English acc", "French acc", "stacks"], rows,
                         title="demo summary (test split of the bundled corpus)")
    return table + (f"\n{BOUND_NOTE}" if bounds & set(keep) else "")
