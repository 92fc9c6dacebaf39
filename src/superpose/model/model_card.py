"""Model cards: the `README.md` that Hugging Face shows for a model folder.

Every folder this package writes for people to use (a `train` run folder, an `export`ed hard merge, a
`distill`ed model) carries one: YAML front matter (`base_model`, `tags`, `library_name`) in Hugging
Face's convention, then the stacks, the settings, the data and, when one exists, the latest evaluation
table. `superpose eval` replaces that table when it scores a folder that carries one of our cards.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

CARD = "README.md"
MARKER = "<!-- written by superpose: the evaluation section is replaced by `superpose eval` -->"
EVAL_START, EVAL_END = "<!-- evaluation: start -->", "<!-- evaluation: end -->"
NO_EVAL = "No evaluation yet: `superpose eval` writes its table here."


def front_matter(base_model: str | list[str] | None, tags: list[str], library_name: str) -> str:
    """Hugging Face's YAML header. `base_model` may list several models (a superposed run holds all of them)."""
    values: dict = {}
    if base_model:
        values["base_model"] = base_model
    values["library_name"] = library_name
    values["tags"] = list(tags)
    return "---\n" + yaml.safe_dump(values, sort_keys=False, allow_unicode=True) + "---\n"


def _code(values: dict) -> str:
    return "```json\n" + json.dumps(values, indent=2, sort_keys=True, default=str) + "\n```"


def render_card(*, title: str, summary: str, base_model: str | list[str] | None, tags: list[str],
                library_name: str, stacks: list[tuple[str, str]], settings: dict, data: dict[str, str],
                evaluation: str | None = None, extra: dict[str, str] | None = None) -> str:
    """The whole card. `stacks`: (name, checkpoint) pairs; `data`: name -> file; `extra`: more sections."""
    lines = [front_matter(base_model, tags, library_name), MARKER, "", f"# {title}", "", summary.strip(), "",
             "## Stacks", "", f"{len(stacks)} stack(s) run per token:", ""]
    lines += [f"* `{name}`: `{path}`" for name, path in stacks]
    lines += ["", "## Settings", "", _code(settings), "", "## Data", ""]
    lines += [f"* `{name}`: `{path}`" for name, path in data.items()] or ["(none recorded)"]
    for heading, body in (extra or {}).items():
        lines += ["", f"## {heading}", "", body.strip()]
    lines += ["", "## Evaluation", "", EVAL_START, _fenced(evaluation) if evaluation else NO_EVAL, EVAL_END, ""]
    return "\n".join(lines)


def _fenced(table: str) -> str:
    return "```\n" + table.strip("\n") + "\n```"


def write_card(folder: str | Path, text: str) -> Path:
    path = Path(folder) / CARD
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def update_evaluation(folder: str | Path, table: str) -> bool:
    """Replace the evaluation section of a card this package wrote; False (nothing written) for any other folder."""
    path = Path(folder) / CARD
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8")
    if MARKER not in text or EVAL_START not in text or EVAL_END not in text:
        return False
    before, rest = text.split(EVAL_START, 1)
    after = rest.split(EVAL_END, 1)[1]
    path.write_text(before + EVAL_START + "\n" + _fenced(table) + "\n" + EVAL_END + after, encoding="utf-8")
    return True


def validation_table(history: list[dict]) -> str | None:
    """The last training record's validation numbers as a small table (None when the run had no --valid)."""
    if not history:
        return None
    last = history[-1]
    values = {k: v for k, v in last.items() if k.startswith("valid_")}
    if not values:
        return None
    width = max(map(len, values))
    rows = [f"validation at step {last.get('step')} (the run's --valid files):"]
    rows += [f"{key.ljust(width)}  {value:.4g}" for key, value in values.items()]
    return "\n".join(rows)


def run_card(run_dir: str | Path, config, train_settings: dict, model_settings: dict, train_files: dict[str, str],
             valid_files: dict[str, str], history: list[dict]) -> str:
    """The card of a `superpose train` run folder (loads with this package only)."""
    stacks = [("base", config.base_model), *[(name, config.experts[name]) for name in config.expert_names]]
    summary = (f"A superposed model ([Superposition in Transformers](https://arxiv.org/abs/2501.00530)): "
               f"{len(stacks)} frozen stacks run side by side and blended layer by layer; only the blend, gates and "
               "autoencoders were trained and are stored here (`superposed.safetensors`). It loads with "
               "`superpose` installed: `SuperposedModel.from_pretrained(folder)`, or "
               "`AutoModelForCausalLM.from_pretrained(folder)` after `import superpose`.")
    return render_card(
        title=f"Superposed model: {' + '.join(name for name, _ in stacks)}", summary=summary,
        base_model=[path for _, path in stacks], tags=["superpose", "superposition", "mixture-of-experts"],
        library_name="superpose", stacks=stacks, settings={"model": model_settings, "train": train_settings},
        data={**{f"train {k}": v for k, v in train_files.items()}, **{f"valid {k}": v for k, v in valid_files.items()}},
        evaluation=validation_table(history))


def write_run_card(run_dir: str | Path) -> Path:
    """Write a run folder's card from what it saved (config.json, run.json)."""
    from superpose.model.superposed import SuperposedConfig

    run_dir = Path(run_dir)
    config = SuperposedConfig.from_pretrained(run_dir)
    record_path = run_dir / "run.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    text = run_card(run_dir, config, record.get("train_settings", {}), config.settings,
                    record.get("train_files", {}), record.get("valid_files", {}), record.get("history", []))
    return write_card(run_dir, text)


def _run_data(run_dir: str | Path | None) -> dict[str, str]:
    """The training files a run folder recorded (empty when unknown)."""
    if run_dir is None or not (Path(run_dir) / "run.json").is_file():
        return {}
    record = json.loads((Path(run_dir) / "run.json").read_text())
    return {f"superposed run's train {k}": v for k, v in record.get("train_files", {}).items()}


def one_stack_card(*, kind: str, run_dir: str | Path | None, config, summary: str, settings: dict,
                   data: dict[str, str], extra: dict[str, str] | None = None, evaluation: str | None = None) -> str:
    """The card of a plain one-stack checkpoint made from a superposed run (`export`, `distill`)."""
    sources = [("base", config.base_model), *[(name, config.experts[name]) for name in config.expert_names]]
    origin = {"superposed run": str(Path(run_dir).resolve()) if run_dir is not None else "(not recorded)",
              **{f"source stack {name}": str(path) for name, path in sources}}
    return render_card(
        title=f"{kind}: one stack from a superposed {' + '.join(n for n, _ in sources)} model", summary=summary,
        base_model=[str(path) for _, path in sources if path], tags=["superpose", kind, "transformers"],
        library_name="transformers", stacks=[("merged" if kind == "hard-merge" else "student", "this folder")],
        settings=settings, data={**data, **_run_data(run_dir)}, extra={"Made from": "\n".join(
            f"* {k}: `{v}`" for k, v in origin.items()), **(extra or {})}, evaluation=evaluation)
