"""Command line: thin wrappers that parse, validate settings, call one library function, print a summary."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from superpose.core.settings import DTYPES, SettingsError, field_choices, field_type, load_yaml, torch_dtype
from superpose.data.code_switch import SEGMENTS
from superpose.model.settings import RENAMED_VALUES, VARIANTS, ModelSettings
from superpose.training.presets import DEFAULT_PRESET, MODEL_KEYS, PRESETS, TRAIN_KEYS, split_settings
from superpose.training.settings import RENAMED_SETTINGS, TrainSettings


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per settings field (`lr_blend` -> `--lr-blend`), help from the field's metadata, choices
    from its `Literal` type."""
    from dataclasses import fields

    g = parser.add_argument_group("settings (flags win over --config, which wins over --preset)")
    g.add_argument("--preset", choices=sorted(PRESETS),
                   help=f"named starting settings (default {DEFAULT_PRESET}: the best measured; "
                        "paper: the reference's)")
    g.add_argument("--config", help="YAML file of settings (may name a preset); unknown keys are an error")
    for cls in (ModelSettings, TrainSettings):
        for f in fields(cls):
            flag, options = "--" + f.name.replace("_", "-"), dict(dest=f.name, default=None,
                                                                  help=f.metadata.get("help"))
            if f.type in (bool, "bool"):  # `--ae-residual` alone means true; `--ae-residual false` turns it off
                g.add_argument(flag, nargs="?", const="true", **options)
                continue
            kind = field_type(cls, f.name) or str  # lists (ae_layers) arrive as text and are parsed by the dataclass
            choices = field_choices(cls, f.name)
            if choices and any(name == f.name for name, _ in RENAMED_VALUES):  # old values pass, with a notice
                options["metavar"], choices = "{" + ",".join(choices) + "}", None
            g.add_argument(flag, type=kind, choices=choices, **options)
    for old, new in RENAMED_SETTINGS.items():  # old flags still work, with a notice
        g.add_argument("--" + old.replace("_", "-"), dest=new, type=float, action=_RenamedFlag, help=argparse.SUPPRESS)


class _RenamedFlag(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        print(f"superpose: {option_string} is deprecated: use --{self.dest.replace('_', '-')}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_dtype_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="dtype the frozen stacks are loaded in (default float32); trainable parts stay float32")


def add_device_flags(parser: argparse.ArgumentParser, device_map: bool = True) -> None:
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    if device_map:
        parser.add_argument("--device-map", help="spread the frozen stacks over the available devices: auto, "
                                                 "balanced, balanced_low_0 or sequential (Hugging Face / accelerate)")


def settings_from_args(args: argparse.Namespace):
    """(ModelSettings, TrainSettings, extras) of `superpose train`'s flags over its --config over its --preset
    (default: the dynamic preset, whose values are the dataclass defaults)."""
    values = load_yaml(args.config) if args.config else {}
    if args.preset is not None:
        values["preset"] = args.preset
    if "preset" not in values:
        values["preset"] = DEFAULT_PRESET
        print(f"superpose: settings start from the default preset '{DEFAULT_PRESET}' (--preset paper for the "
              "reference's)", file=sys.stderr)
    for key in MODEL_KEYS | TRAIN_KEYS:
        flag = getattr(args, key, None)
        if flag is not None:
            values[key] = flag
    return split_settings(values)


def cmd_train(args: argparse.Namespace) -> None:
    import torch

    from superpose.core.loading import load_causal_lm, load_tokenizer, resolve_model_path
    from superpose.data.text import parse_named_paths
    from superpose.model.superposed import SuperposedModel
    from superpose.training.distributed import setup_processes
    from superpose.training.loop import UNLABELLED, is_unlabelled, train

    model_settings, train_settings, _ = settings_from_args(args)
    experts = parse_named_paths(args.expert, default_name="expert" if len(args.expert) == 1 else None, flag="--expert")
    for name in experts:
        if name == "base" or is_unlabelled(name):
            raise SettingsError(f"an expert cannot be named {name!r} (that name is the base model's domain or "
                                "marks unlabelled text)")
    base_source = resolve_model_path(args.base)
    expert_sources = {name: resolve_model_path(path) for name, path in experts.items()}
    dtype = torch_dtype(train_settings.dtype)
    processes = setup_processes(train_settings.device)  # joins the processes of `accelerate launch` / `torchrun`
    try:
        # straight into the dtype and onto this process's device (or spread by --device-map): no fp32/CPU copy
        placement = train_settings.device_map or (None if processes.device.type == "cpu" else processes.device)
        base = load_causal_lm(base_source, dtype, placement)
        expert_models = {name: load_causal_lm(source, dtype, placement) for name, source in expert_sources.items()}
        torch.manual_seed(train_settings.seed)  # the trainable parts' initialisation is part of the run's seed
        model = SuperposedModel.from_models(base, expert_models, model_settings, base_source,
                                            expert_paths=expert_sources)
        result = train(
            model, load_tokenizer(base_source),
            parse_named_paths(args.train, flag="--train", unnamed=UNLABELLED),
            parse_named_paths(args.valid, flag="--valid", unnamed=UNLABELLED),
            args.out, train_settings, resume=args.resume,
        )
    finally:
        processes.finish()
    if processes.is_main:
        from superpose.model.model_card import write_run_card

        write_run_card(args.out)
        print(result.summary())
        print(f"{result.steps} steps in {result.seconds:.1f} s; saved to {args.out} (model card: README.md)")


def _speculative_flag(text: str) -> str:
    if text != "auto" and not (text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of drafted tokens >= 0; got {text!r}")
    return text


def cmd_generate(args: argparse.Namespace) -> None:
    import torch

    from superpose.core.loading import load_tokenizer
    from superpose.model.superposed import SuperposedModel

    model = SuperposedModel.from_pretrained(args.run_dir, dtype=torch_dtype(args.dtype), device=args.device,
                                            device_map=args.device_map)
    tokenizer = load_tokenizer(args.run_dir)
    if args.temperature < 0:
        raise SettingsError("--temperature must be >= 0 (0 = greedy)")
    if not args.prompt.strip():
        raise SettingsError("--prompt must not be empty")
    torch.manual_seed(args.seed)
    inputs = tokenizer(args.prompt, return_tensors="pt").to(model.device)
    sampling = args.temperature > 0
    options = dict(max_new_tokens=args.max_new_tokens, do_sample=sampling, pad_token_id=tokenizer.pad_token_id)
    if sampling:
        options.update(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    speculative = "auto" if args.speculative == "auto" else int(args.speculative)
    tick = time.perf_counter()
    with torch.no_grad():
        output = model.generate(**inputs, **options, speculative=speculative)
    seconds = time.perf_counter() - tick
    print(tokenizer.decode(output[0], skip_special_tokens=True))
    if args.verbose:
        new_tokens = output.shape[1] - inputs["input_ids"].shape[1]
        stats = model.speculation_stats
        rate = stats.acceptance_rate if stats is not None else None
        print(f"{new_tokens} new tokens in {seconds:.2f} s: {new_tokens / seconds:.1f} tokens/s; acceptance rate "
              f"{'n/a' if rate is None else f'{rate:.1%}'}; {stats.summary() if stats else 'dense decoding'}",
              file=sys.stderr)


def cmd_info(args: argparse.Namespace) -> None:
    from superpose.report.info import describe

    print(describe(args.run_dir))


def _run_record(run_dir: str) -> dict:
    from superpose.training.loop import RUN_FILE

    path = Path(run_dir) / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def cmd_eval(args: argparse.Namespace) -> None:
    from superpose.core.loading import load_causal_lm, load_tokenizer, resolve_device
    from superpose.data.text import parse_named_paths
    from superpose.evaluation.evaluate import evaluate, write_json
    from superpose.model.superposed import SuperposedModel
    from superpose.report.eval_tables import eval_table

    dtype, device = torch_dtype(args.dtype), resolve_device(args.device)
    model = SuperposedModel.from_pretrained(args.run_dir, dtype=dtype, device=device)
    tokenizer = load_tokenizer(args.run_dir)
    record = _run_record(args.run_dir)
    data = parse_named_paths(args.data, flag="--data")
    select = parse_named_paths(args.select, flag="--select") or None
    if select is None and record.get("valid_files"):
        reported = {str(Path(p).resolve()) for p in data.values()}
        if not reported & {str(Path(p).resolve()) for p in record["valid_files"].values()}:
            select = record["valid_files"]  # the run's validation files pick the sweeps' best points
        else:
            print("superpose eval: the reported data include the run's --valid files, so no sweep point is chosen "
                  "(pass --select NAME=FILE with other held-out text)", file=sys.stderr)
    placement = None if device.type == "cpu" else device
    extra_paths = parse_named_paths(args.model, flag="--model")
    extra = {name: load_causal_lm(path, dtype, placement) for name, path in extra_paths.items()}
    block_size = args.block_size or record.get("train_settings", {}).get("block_size", 128)
    result = evaluate(model, tokenizer, data, baselines=args.baselines, select_data=select, extra_models=extra,
                      train_files=record.get("train_files", {}), block_size=block_size, batch_size=args.batch_size,
                      max_blocks=args.max_blocks, seed=args.seed, agreement=args.agreement,
                      every_point=args.every_point)
    print(eval_table(result))
    if args.json:
        print(f"wrote {write_json(result, args.json)}")
    from superpose.model.model_card import update_evaluation

    # the latest evaluation goes into the model cards this package wrote (the run's, exports', distilled models')
    updated = [folder for folder in [args.run_dir, *extra_paths.values()]
               if update_evaluation(folder, eval_table(result))]
    if updated:
        print(f"evaluation table written into the model card (README.md) of {', '.join(map(str, updated))}")


def cmd_export(args: argparse.Namespace) -> None:
    from superpose.compare.hard_merge import export_hard_merge, layer_weights
    from superpose.core.loading import load_tokenizer
    from superpose.model.superposed import SuperposedModel

    model = SuperposedModel.from_pretrained(args.run_dir).eval()
    out = export_hard_merge(model, args.out, load_tokenizer(args.run_dir), run_dir=args.run_dir)
    per_layer = "; ".join("/".join(f"{w:.2f}" for w in weights) for weights in layer_weights(model))
    print(f"hard merge written to {out} (per-layer weights of {'/'.join(model.stack_names)}: {per_layer}); "
          "autoencoders are not part of it")


def _add_distill_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per DistillSettings field (`teacher_weight` -> `--teacher-weight`), help and choices from it."""
    from dataclasses import fields

    from superpose.training.distill import DistillSettings

    for f in fields(DistillSettings):
        # torchrun reads any prefix of its own --start-method: `--start-stack` passes through it
        aliases = ["--start-stack"] if f.name == "start" else []
        parser.add_argument("--" + f.name.replace("_", "-"), *aliases, dest=f.name, default=None,
                            type=field_type(DistillSettings, f.name) or str,
                            choices=field_choices(DistillSettings, f.name),
                            help=(f.metadata.get("help") or "").replace("%", "%%"))


def cmd_distill(args: argparse.Namespace) -> None:
    from dataclasses import fields

    from superpose.data.text import parse_named_paths
    from superpose.training.distill import DistillSettings, distill
    from superpose.training.distributed import setup_processes

    settings = DistillSettings(**{f.name: getattr(args, f.name) for f in fields(DistillSettings)
                                  if getattr(args, f.name) is not None})
    processes = setup_processes(settings.device)  # joins the processes of `accelerate launch` / `torchrun`
    try:
        result = distill(args.run_dir, parse_named_paths(args.train, flag="--train", unnamed="text"),
                         parse_named_paths(args.valid, flag="--valid", unnamed="text"), args.out, settings,
                         resume=args.resume, overwrite=args.overwrite, keep_work=args.keep_work)
    finally:
        processes.finish()
    if result.is_main:
        print(result.summary())


def cmd_mix_data(args: argparse.Namespace) -> None:
    from superpose.data.code_switch import write_mixed
    from superpose.data.text import parse_named_paths

    if args.max_lines is not None and args.max_lines < 1:
        raise SettingsError("--max-lines must be positive")
    path, count = write_mixed(parse_named_paths(args.data, flag="--data"), args.out, args.seed, args.segment,
                              args.max_lines)
    print(f"wrote {count} code-switched lines to {path}")


def cmd_demo(args: argparse.Namespace) -> None:
    from superpose.demo.walkthrough import run_demo

    if args.steps < 1:
        raise SettingsError("--steps must be positive")
    run_demo(args.out, args.variant, args.rebuild, args.steps, args.eval_blocks, not args.no_report, args.seed,
             device=args.device)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="superpose", description="Superposition in Transformers: a base model and "
                                                                   "N fine-tunes run as one model.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the blend, gates and autoencoders on labelled or unlabelled text")
    p.add_argument("--base", required=True, help="base causal LM: local folder or hub id")
    p.add_argument("--expert", action="append", required=True,
                   help="fine-tune of the base: NAME=PATH; repeat for several experts (a single expert may be a "
                        "bare PATH, named 'expert')")
    p.add_argument("--train", action="append", required=True,
                   help="NAME=FILE labels the text as that model's domain (base or an expert's name); a bare FILE is "
                        "unlabelled text (.txt one doc per line, or .jsonl with 'text'); repeat")
    p.add_argument("--valid", action="append", help="[NAME=]FILE held-out text for per-epoch validation; repeat")
    p.add_argument("--out", required=True, help="run folder for the model, checkpoints and logs")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    _add_settings_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="generate text from a trained run")
    p.add_argument("run_dir", help="run folder written by `superpose train`")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=50, help="tokens to generate (default 50)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-k", type=int, default=50, help="sample from the k most likely tokens (default 50)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="random seed for sampling (default 0)")
    p.add_argument("--speculative", default="auto", type=_speculative_flag,
                   help="tokens the heaviest stack drafts per round before the others verify them: K, 'auto' "
                        "(adaptive, default) or 0 (dense decoding); the output is the same either way")
    p.add_argument("--verbose", action="store_true", help="print tokens/s and the drafts' acceptance rate")
    add_dtype_flag(p)
    add_device_flags(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("eval", help="perplexity/accuracy per domain vs baselines on held-out text")
    p.add_argument("run_dir", help="run folder written by `superpose train`")
    p.add_argument("--data", action="append", required=True,
                   help="NAME=FILE held-out text per domain (base or the expert's name); repeat")
    p.add_argument("--baselines", action="append",
                   help="method or method:p1,p2 (a sweep; fixed_share_mix:r1,r2,... is one grid of "
                        "rates, not a sweep); repeat; default: a full set")
    p.add_argument("--select", action="append",
                   help="NAME=FILE data that picks each sweep's best point (default: the run's --valid files)")
    p.add_argument("--model", action="append",
                   help="LABEL=PATH extra plain checkpoint to score (e.g. an export); repeat")
    p.add_argument("--json", help="write the results as JSON to this file")
    p.add_argument("--block-size", type=int, help="tokens per scored sequence (default: the run's block size)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per batch (default 8)")
    p.add_argument("--max-blocks", type=int, help="cap on scored sequences per domain")
    p.add_argument("--seed", type=int, default=0, help="seed of the randomised baselines (DARE)")
    p.add_argument("--agreement", action="store_true",
                   help="also measure each model's Jensen-Shannon divergence and cosine to every stack and to their "
                        "average (in --json; slower: each weight merge re-runs the stacks)")
    p.add_argument("--every-point", action="store_true",
                   help="score every point of a weight-merge sweep on --data (default: only the point chosen on the "
                        "--select data; every point is scored on the --select data either way)")
    add_dtype_flag(p)
    add_device_flags(p, device_map=False)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export",
                       help="write the hard merge (per-layer stack weights) as a plain Hugging Face checkpoint")
    p.add_argument("run_dir", help="run folder written by `superpose train`")
    p.add_argument("--out", required=True, help="folder for the merged checkpoint and tokenizer")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("distill", help="distil a superposed run into one plain Hugging Face checkpoint (or replay: "
                                       "--teacher-weight 0)")
    p.add_argument("run_dir", help="run folder written by `superpose train` (the teacher)")
    p.add_argument("--train", action="append", required=True,
                   help="[NAME=]FILE text to distil on (.txt one doc per line, or .jsonl with 'text'); repeat")
    p.add_argument("--valid", action="append", help="[NAME=]FILE held-out text: KL to the teacher and perplexity "
                                                    "per file at the end, into the model card; repeat")
    p.add_argument("--out", required=True, help="folder for the checkpoint, tokenizer and model card (checkpoints and "
                                                "the teacher cache go to its .superpose/ work folder)")
    p.add_argument("--resume", action="store_true", help="continue from the folder's last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="write into an --out folder that holds other files")
    p.add_argument("--keep-work", action="store_true",
                   help="keep the .superpose/ work folder (checkpoints, teacher cache) after the run, e.g. to "
                        "--resume later with more steps")
    _add_distill_flags(p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("mix-data", help="code-switched lines: sentences alternating between sources, with spans")
    p.add_argument("--data", action="append", required=True, metavar="NAME=FILE",
                   help="one source per language, named like the model that knows it (base, fr, ...); repeat")
    p.add_argument("--out", required=True, help="JSONL file to write: {text, spans: [{start, end, source}]} per line")
    p.add_argument("--seed", type=int, default=0, help="random seed of the shuffling and the alternation (default 0)")
    p.add_argument("--segment", choices=list(SEGMENTS), default="sentence",
                   help="unit that alternates: a sentence (default), a whole input line, or auto: sentences of "
                        "one-line paragraphs and blank-line-separated chunks of multi-line documents (code)")
    p.add_argument("--max-lines", type=int, help="stop after this many lines (default: until a source runs out)")
    p.set_defaults(func=cmd_mix_data)

    p = sub.add_parser("demo", help="the whole story offline: shipped experts, superpose, evaluate, sample, report")
    p.add_argument("--out", default="superpose-demo", help="output folder (default ./superpose-demo)")
    p.add_argument("--variant", choices=VARIANTS, help="spline variant (default: the default preset's, 1d)")
    p.add_argument("--rebuild", action="store_true", help="first rebuild the shipped experts from the bundled corpus")
    p.add_argument("--steps", type=int, default=150, help="superposed training steps (default 150)")
    p.add_argument("--eval-blocks", type=int, default=48, help="test sequences scored per language (default 48)")
    p.add_argument("--no-report", action="store_true", help="skip the analysis figures and HTML report")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_device_flags(p, device_map=False)
    p.set_defaults(func=cmd_demo)

    from superpose.cli.analysis import add_parsers

    add_parsers(sub)

    p = sub.add_parser("info", help="settings, parameter counts and each stack's weight per layer of a run")
    p.add_argument("run_dir", help="run folder written by `superpose train`")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as err:  # includes our Settings/Data/ModelLoad/Incompatible errors
        print(f"superpose {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
