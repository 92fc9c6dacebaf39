"""Train the blend weights, gates and autoencoders (SPEC §5), on the graph we serve, with or without labels.

Labelled text (`--train NAME=FILE`) gives reconstruction targets from one independent no-grad run of
each stack per batch (a token of domain m should reproduce stack m's states) and, with
`gate_label_weight`, a gate cross-entropy towards that stack. Unlabelled text (`--train FILE`) adds only the
LM loss (and an optional load-balance term). `switch_rate` turns a share of the blocks into synthetic
code-switched blocks with per-token labels.
"""
from __future__ import annotations

import contextlib
import functools
import warnings
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from superpose.training.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from superpose.data.code_switch import switched_blocks
from superpose.data.text import DataError, collate, load_texts, tokenize_blocks
from superpose.training.distributed import Processes, peak_memory_mb, setup_processes
from superpose.core.metrics import LMScore
from superpose.model.superposed import SuperposedModel, causal_lm_loss
from superpose.core.settings import DATA_ORDER_KEYS, DTYPES, SettingsError, TrainSettings
from superpose.core.text_tables import format_table

RUN_FILE = "run.json"


UNLABELLED = "unlabelled"  # the name `--train FILE` (no NAME=) gets; more such files: unlabelled:2, ...
MIXED = -1  # domain of unlabelled blocks and of code-switched blocks (their tokens carry the labels)


@dataclass
class LabelledBlocks:
    blocks: list[torch.Tensor]
    domains: list[int]  # stack index, or MIXED
    names: list[str]  # domain index -> name
    token_domains: dict[int, torch.Tensor] = field(default_factory=dict)  # block -> per-token domains (switched)

    def __len__(self) -> int:
        return len(self.blocks)

    def labelled_tokens(self, index: int) -> int:
        """Tokens of block `index` with a domain label (reconstruction targets and gate labels)."""
        if index in self.token_domains:
            return int((self.token_domains[index] >= 0).sum())
        return self.blocks[index].numel() if self.domains[index] >= 0 else 0

    def collate(self, rows: list[int], pad_id: int):
        return collate([self.blocks[i] for i in rows], [self.domains[i] for i in rows], pad_id,
                       [self.token_domains.get(i) for i in rows])


def domain_names(model: SuperposedModel) -> list[str]:
    """Domain m is stack m's: base, then each expert by the name --expert NAME=PATH gave it."""
    return model.stack_names


def is_unlabelled(name: str) -> bool:
    return name == UNLABELLED or name.startswith(UNLABELLED + ":")


def load_labelled(
    files: dict[str, str], names: list[str], tokenizer, block_size: int, max_blocks: int | None,
    switch_rate: float = 0.0, seed: int = 0,
) -> LabelledBlocks:
    """Blocks of every file; with `switch_rate`, that share of the blocks (chosen with `seed`) is replaced by
    blocks whose sentences alternate between the files' texts, each token labelled with its file's domain
    (none for an unlabelled file: label-free runs learn to switch from the LM loss alone)."""
    unknown = sorted(name for name in files if name not in names and not is_unlabelled(name))
    if unknown:
        raise DataError(f"data named {unknown} matches no model: use one of {names} (base, or an expert's name), "
                        "or pass the file without NAME= as unlabelled text")
    data = LabelledBlocks([], [], names)
    texts: dict[str, list[str]] = {}
    for name, path in files.items():
        lines = load_texts(path)
        blocks = tokenize_blocks(lines, tokenizer, block_size, max_blocks)
        data.blocks.extend(blocks)
        data.domains.extend([MIXED if is_unlabelled(name) else names.index(name)] * len(blocks))
        texts[name] = lines
    count = round(switch_rate * len(data))
    if count and len(texts) < 2:
        warnings.warn(f"switch_rate {switch_rate} mixes sentences of several training files, and there is one: no "
                      "code-switched blocks", UserWarning, stacklevel=2)
    elif count:
        blocks, sources, source_names = switched_blocks(texts, tokenizer, block_size, count, seed)
        if len(blocks) < count:
            warnings.warn(f"the training files held enough sentences for {len(blocks)} code-switched blocks, not "
                          f"{count}: the share of such blocks is {len(blocks) / len(data):.3f}", UserWarning,
                          stacklevel=2)
        to_stack = torch.tensor([MIXED if is_unlabelled(n) else names.index(n) for n in source_names])
        replaced = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[: len(blocks)].tolist()
        for index, block, source in zip(replaced, blocks, sources):
            data.blocks[index], data.domains[index] = block, MIXED
            data.token_domains[index] = torch.where(source >= 0, to_stack[source.clamp(min=0)], source)
    return data


def reconstruction_loss(predicted: torch.Tensor, target: torch.Tensor, token_mask: torch.Tensor, variant: str) -> torch.Tensor:
    """Masked MSE (1d); 0.9 MSE + 0.1 mean per-token L2 distance (2d). Always float32, on `predicted`'s device."""
    predicted, target = predicted.float(), target.to(predicted.device).float()
    mask = token_mask.to(predicted.device, predicted.dtype).unsqueeze(-1)  # (B, T, 1)
    tokens = mask.sum().clamp(min=1)
    diff = (predicted - target) * mask  # (B, T, d)
    mse = diff.pow(2).sum() / (tokens * predicted.shape[-1])
    if variant == "1d":
        return mse
    return 0.9 * mse + 0.1 * diff.norm(dim=-1).sum() / tokens


def recon_layers(model: SuperposedModel) -> list[int]:
    """Autoencoder layers; with no autoencoders, every layer (so alpha still learns)."""
    return model.ae_layers or list(range(model.config.num_hidden_layers))


def _targets(stack_states: list[list[torch.Tensor]], layer: int, token_domains: torch.Tensor) -> torch.Tensor:
    """(B, T, d): each token's labelled stack's state after `layer` (unlabelled tokens: the base's, masked out)."""
    home = stack_states[0][layer].device
    states = torch.stack([states_m[layer].to(home) for states_m in stack_states])  # (M, B, T, d)
    index = token_domains.clamp(min=0).to(home)[None, ..., None].expand(1, -1, -1, states.shape[-1])
    return states.gather(0, index).squeeze(0)


def gate_label_loss(gates: list[torch.Tensor], token_domains: torch.Tensor) -> torch.Tensor:
    """Mean over layers and labelled tokens of -log w[l, t, label]: the gates learn to pick the labelled stack."""
    labelled = token_domains >= 0  # (B, T)
    tokens = labelled.sum().clamp(min=1)
    total = gates[0].new_zeros(())
    for weights in gates:  # (B, T, M)
        picked = weights.gather(-1, token_domains.clamp(min=0).to(weights.device).unsqueeze(-1)).squeeze(-1)
        total = total + (-torch.log(picked.clamp(min=1e-9)) * labelled.to(weights.device)).sum().to(total.device)
    return total / (tokens * len(gates))


def load_balance_loss(gates: list[torch.Tensor], token_mask: torch.Tensor) -> torch.Tensor:
    """M Σ_m (mean weight of stack m)²: 1 when the unlabelled tokens use every stack alike, M when one takes all."""
    mask = token_mask.float()
    tokens = mask.sum().clamp(min=1)
    total = gates[0].new_zeros(())
    for weights in gates:
        usage = (weights * mask.to(weights.device).unsqueeze(-1)).sum(dim=(0, 1)) / tokens  # (M,)
        total = total + weights.shape[-1] * usage.pow(2).sum().to(total.device)
    return total / len(gates)


def compute_losses(model: SuperposedModel, batch, settings: TrainSettings) -> dict[str, torch.Tensor]:
    ids, mask = batch.input_ids, batch.attention_mask
    token_domains = batch.token_domains.to(ids.device).masked_fill(mask == 0, MIXED)  # (B, T)
    labelled = (token_domains >= 0).long()
    stack_states = model.independent_states(ids, mask)
    if settings.training_graph == "sequential" and model.settings.graph == "sequential":
        out = model(ids, attention_mask=mask, output_hidden_states=True, output_gates=True)
        predicted = {layer: out.hidden_states[layer + 1] for layer in recon_layers(model)}
        logits, gates = out.logits, list(out.gate_weights)
    else:  # the parallel graph (served, or the reference's training graph) reuses the independent states
        predicted, logits, gates = model.forward_parallel(stack_states, mask, ids)
    home = ids.device  # a device map may spread the layers (and so the per-layer terms) over several devices
    recon = sum(
        reconstruction_loss(predicted[layer], _targets(stack_states, layer, token_domains), labelled,
                            model.settings.variant).to(home)
        for layer in recon_layers(model)
    )
    lm = causal_lm_loss(logits, batch.labels).to(home)
    reg = model.blend.regularisation()
    gate_ce = gate_label_loss(gates, token_domains).to(home)
    balance = load_balance_loss(gates, (token_domains == MIXED) & (mask == 1)).to(home)
    total = (settings.recon_weight * recon + settings.lm_weight * lm + settings.alpha_reg_weight * reg
             + settings.gate_label_weight * gate_ce + settings.load_balance_weight * balance)
    return {"loss": total, "recon": recon, "lm": lm, "alpha_reg": reg, "gate_ce": gate_ce, "balance": balance,
            "logits": logits}


def make_optimizer(model: SuperposedModel, settings: TrainSettings) -> torch.optim.AdamW:
    groups = [{"params": list(model.alpha.parameters()), "lr": settings.lr_alpha, "name": "alpha"}]
    if model.blend.gate is not None:
        groups.append({"params": list(model.blend.gate.parameters()), "lr": settings.lr_gate, "name": "gate"})
    ae_params = list(model.autoencoders.parameters())
    if ae_params:
        groups.append({"params": ae_params, "lr": settings.lr_ae, "name": "autoencoders"})
    return torch.optim.AdamW(groups, weight_decay=settings.weight_decay)


def _batches(data: LabelledBlocks, batch_size: int, pad_id: int, order: torch.Tensor):
    for start in range(0, len(order), batch_size):
        yield data.collate(order[start : start + batch_size].tolist(), pad_id)


def resolve_mixed_precision(settings: TrainSettings, device: torch.device, stack_dtype: torch.dtype) -> str:
    """The autocast mode: as set, else bf16 on a CUDA device that supports it (unless the stacks are fp16)."""
    if settings.mixed_precision is not None:
        return settings.mixed_precision
    if device.type == "cuda" and stack_dtype != torch.float16 and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"  # CPU runs compute exactly as without this option


def _autocast(mode: str, device: torch.device):
    """bf16 autocast of the forward: the stacks' matmuls and the AEs run in bf16, while alpha, the running
    blended state, the trainable parameters, their gradients and every loss stay float32."""
    if mode == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _home(model: SuperposedModel) -> torch.device:
    """The device batches go to: where alpha (and the first stack's inputs) live."""
    return model.alpha.control.device


@torch.no_grad()
def validate(model: SuperposedModel, data: LabelledBlocks, settings: TrainSettings, pad_id: int,
             processes: Processes | None = None) -> dict[str, float]:
    """Token-weighted losses over the validation blocks, and the served graph's perplexity per domain.

    Each batch's mean is weighted by the tokens it covers (scored next-token positions for the LM loss,
    real tokens for the reconstruction), so a short last batch counts for what it holds (SPEC §8). With
    several processes each scores every P-th block and the sums are added up.
    """
    device = _home(model)
    processes = processes or Processes(0, 1, device)
    precision = resolve_mixed_precision(settings, device, model.stack_dtype)
    model.eval()
    # recon sum, recon tokens, lm sum, lm tokens, then (nll, tokens, correct) per domain and for unlabelled blocks
    names = [*data.names, UNLABELLED]
    totals = torch.zeros(4 + 3 * len(names), dtype=torch.float64)
    rows = torch.arange(len(data))[processes.index :: processes.count]
    for batch in _batches(data, settings.batch_size, pad_id, rows):
        batch = _to(batch, device)
        with _autocast(precision, device):
            losses = compute_losses(model, batch, settings)
            logits = losses["logits"]
            if settings.training_graph != "sequential":  # perplexity is always that of the graph we serve
                logits = model(batch.input_ids, attention_mask=batch.attention_mask).logits
        recon_tokens = int(((batch.token_domains >= 0) & (batch.attention_mask == 1)).sum())
        lm_tokens = int((batch.labels[:, 1:] != -100).sum())
        totals[:4] += torch.tensor([float(losses["recon"]) * recon_tokens, recon_tokens,
                                    float(losses["lm"]) * lm_tokens, lm_tokens], dtype=torch.float64)
        for index in range(len(names)):
            picked = batch.domains == (index if index < len(data.names) else MIXED)
            if picked.any():
                score = LMScore()
                score.update(logits[picked], batch.labels[picked])
                totals[4 + 3 * index : 7 + 3 * index] += torch.tensor(
                    [score.total_nll, score.total_tokens, score.total_correct], dtype=torch.float64)
    totals = processes.sum_(totals.to(device)).cpu()
    result = {"valid_recon": float(totals[0] / max(totals[1], 1)), "valid_lm": float(totals[2] / max(totals[3], 1))}
    reg = float(model.blend.regularisation())  # it depends on the weights only
    result["valid_alpha_reg"] = reg
    result["valid_loss"] = (settings.recon_weight * result["valid_recon"] + settings.lm_weight * result["valid_lm"]
                            + settings.alpha_reg_weight * reg)
    for index, name in enumerate(names):
        nll, tokens, correct = totals[4 + 3 * index : 7 + 3 * index].tolist()
        if tokens:
            score = LMScore()
            score.total_nll, score.total_tokens, score.total_correct = nll, int(tokens), int(correct)
            result[f"valid_ppl_{name}"] = score.ppl
    return result


def _to(batch, device: str | torch.device):
    for key in ("input_ids", "attention_mask", "labels", "domains", "token_domains"):
        setattr(batch, key, getattr(batch, key).to(device))
    return batch


def _absolute(files: dict[str, str]) -> dict[str, str]:
    """Recorded paths must work from any directory (eval reads them to train the router)."""
    return {name: str(Path(path).resolve()) for name, path in files.items()}


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    throughput: dict = field(default_factory=dict)  # tokens/s and peak memory per process, this session

    def summary(self) -> str:
        if not self.history:
            return "no epochs run"
        keys = [k for k in self.history[-1] if k not in ("epoch", "step")]
        rows = [[h["epoch"], h["step"], *[h.get(k, float("nan")) for k in keys]] for h in self.history]
        table = format_table(["epoch", "step", *keys], rows, title=f"training summary ({self.run_dir})")
        return table + ("\n" + describe_throughput(self.throughput) if self.throughput else "")


def describe_throughput(record: dict) -> str:
    """One line: training tokens/s (all processes, and per process) and each process's peak memory."""
    peaks = ", ".join(
        f"{p['peak_cuda_mb']:.0f} MB CUDA" if "peak_cuda_mb" in p else f"{p.get('peak_rss_mb', float('nan')):.0f} MB RSS"
        for p in record["peak_memory_mb"])
    return (f"throughput: {record['tokens_per_second']:.0f} training tokens/s over {record['processes']} "
            f"process(es) ({record['tokens_per_second_per_process']:.0f} per process; {record['tokens']} tokens in "
            f"{record['train_seconds']:.1f} s on {record['device']}, mixed precision {record['mixed_precision']}); "
            f"peak memory per process: {peaks}")


def _file_fingerprint(path: str) -> dict:
    """Path, size and content hash: a resumed run must read the very same data."""
    path = Path(path).resolve()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


# What a checkpoint written before a key was recorded implies for it.
_DATA_ORDER_DEFAULTS = {"grad_accum": 1, "processes": 1, "switch_rate": 0.0}


def _tokenizer_fingerprint(tokenizer) -> str:
    """The tokenizer decides the blocks: a hash of its vocabulary and end-of-text token."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps([vocab, tokenizer.eos_token_id]).encode()).hexdigest()


def data_order(settings: TrainSettings, train_files: dict[str, str], processes: int = 1, tokenizer=None) -> dict:
    """Everything that fixes which blocks each step sees (and which process sees them).

    The files' order counts too: their blocks are concatenated in the order given.
    """
    order = {key: getattr(settings, key) for key in DATA_ORDER_KEYS}
    order["processes"] = processes
    order["train_files"] = {name: _file_fingerprint(path) for name, path in sorted(train_files.items())}
    order["train_file_order"] = list(train_files)
    if tokenizer is not None:
        order["tokenizer"] = _tokenizer_fingerprint(tokenizer)
    return order


def check_resumable(saved: dict, now: dict, run_dir: Path) -> None:
    """Refuse to resume when the data order would differ from the interrupted run's, naming each difference."""
    differences = []
    for key in sorted(set(saved) | set(now)):
        if key == "train_files":
            old, new = saved.get(key, {}), now.get(key, {})
            for name in sorted(set(old) | set(new)):
                if name not in old or name not in new:
                    differences.append(f"train file {name!r} ({'added' if name in new else 'removed'})")
                elif old[name] != new[name]:
                    what = "path" if old[name]["path"] != new[name]["path"] else "content"
                    differences.append(f"train file {name!r} ({what} changed: {old[name]['path']} -> {new[name]['path']})")
        elif key == "stacks" and key not in saved:
            continue  # a checkpoint from before the stacks were recorded
        elif saved.get(key, _DATA_ORDER_DEFAULTS.get(key)) != now.get(key, _DATA_ORDER_DEFAULTS.get(key)):
            old, new = saved.get(key, _DATA_ORDER_DEFAULTS.get(key)), now.get(key, _DATA_ORDER_DEFAULTS.get(key))
            hint = " (launch as many processes as the checkpoint's run)" if key == "processes" else ""
            differences.append(f"{key} (checkpoint {old!r}, now {new!r}){hint}")
    if differences:
        raise SettingsError(f"--resume: {run_dir} was trained with other data-order settings, so resuming would not "
                            f"continue the same run. Differences: {'; '.join(differences)}. Use the checkpoint's "
                            f"settings, or a new --out.")


def optimizer_step(optimizer: torch.optim.Optimizer, grad_clip: float) -> None:
    """Clip each parameter group's gradient norm on its own (SPEC §5), then step."""
    for group in optimizer.param_groups:
        torch.nn.utils.clip_grad_norm_(group["params"], grad_clip)
    optimizer.step()


def _settings_record(settings: TrainSettings, model: SuperposedModel) -> TrainSettings:
    """The dtype recorded is the stacks' real one (a Python caller may pass bf16 stacks with default settings)."""
    dtype = str(model.stack_dtype).removeprefix("torch.")
    return replace(settings, dtype=dtype) if dtype in DTYPES else settings


def _seed_of(*parts: int) -> int:
    """A 63-bit seed from a few integers (hashed, so nearby tuples give unrelated streams)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") >> 1


class SequenceSeededDropout:
    """While training, draw the autoencoders' dropout masks per sequence, from that sequence's own seed.

    The seed depends on the run's seed, the epoch and the sequence's position in the epoch's order, never
    on the batch that holds it. So P processes with batch B, or K accumulated micro-batches of B, drop
    exactly what one batch of P·K·B drops, and a resumed run draws the masks of an uninterrupted one.
    """

    def __init__(self, model: SuperposedModel, length: int):
        self.seeds: list[int] = []
        self.length = length  # masks are drawn for this many positions and cut to the batch's padded length
        dropouts = [m for m in model.autoencoders.modules() if isinstance(m, nn.Dropout)]
        self._handles = [m.register_forward_hook(functools.partial(self._drop, index)) for index, m in enumerate(dropouts)]

    def _drop(self, index: int, module: nn.Dropout, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not module.training or module.p == 0:
            return None
        x = inputs[0]  # (B, T, m)
        if len(self.seeds) != x.shape[0]:
            raise RuntimeError(f"dropout over {x.shape[0]} sequences was given {len(self.seeds)} seeds")
        # (B, T, m): drawn at a fixed length, so a sequence's mask does not depend on how far its batch is padded
        shape = (max(self.length, x.shape[1]), x.shape[2])
        keep = torch.stack([
            torch.rand(shape, generator=torch.Generator(x.device).manual_seed(_seed_of(seed, index)),
                       device=x.device)[: x.shape[1]] >= module.p
            for seed in self.seeds
        ])
        return x * keep.to(x.dtype) / (1 - module.p)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def _sum_gradients(optimizer: torch.optim.Optimizer, totals: torch.Tensor, processes: Processes) -> torch.Tensor:
    """Add up the trainable parameters' gradients (and the step's loss totals) over all processes.

    Each process's gradient is already weighted by its share of the global batch, so the sum is the
    gradient of the global batch's loss. A parameter no process produced a gradient for keeps none (AdamW
    then leaves it alone, as in one process).
    """
    if processes.count == 1:
        return totals
    params = [p for group in optimizer.param_groups for p in group["params"]]
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.float64)
    shared = processes.sum_(torch.cat([totals, has_grad]).to(processes.device)).cpu()
    for param, produced in zip(params, shared[len(totals):].tolist()):
        if produced:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            processes.sum_(param.grad)  # one collective per tensor: no second copy of large AE gradients
    return shared[: len(totals)]


LOGGED = ("loss", "recon", "lm", "alpha_reg", "gate_ce", "balance")
WEIGHTS = {"recon": "recon_weight", "lm": "lm_weight", "alpha_reg": "alpha_reg_weight", "gate_ce": "gate_label_weight",
           "balance": "load_balance_weight"}


def _train_step(model: SuperposedModel, optimizer: torch.optim.Optimizer, data: LabelledBlocks, rows: list[int],
                first: int, epoch: int, settings: TrainSettings, processes: Processes, dropout: SequenceSeededDropout,
                pad_id: int, precision: str) -> tuple[dict[str, float], int]:
    """One optimiser step on the global batch `rows` (positions `first`... of the epoch's order).

    The global batch is cut into chunks of `batch_size`: chunk c is micro-batch c // P of process c % P.
    The loss terms are token means, so each chunk's term is weighted by its share of the global batch's
    tokens (labelled tokens for the reconstruction and gate labels, scored positions for the LM loss) and the
    regulariser is counted once: the summed gradient is exactly the gradient of one batch holding all of `rows`.
    (The load-balance term is quadratic in a per-chunk mean, so for it this holds only approximately.)
    Returns the global batch's losses and its token count.
    """
    lengths = [data.blocks[i].numel() for i in rows]
    labelled = [data.labelled_tokens(i) for i in rows]
    tokens, scored, labelled_total = sum(lengths), sum(lengths) - len(rows), sum(labelled)
    unlabelled_total = tokens - labelled_total
    size = settings.batch_size
    device = processes.device
    optimizer.zero_grad(set_to_none=True)
    totals = torch.zeros(len(LOGGED), dtype=torch.float64)
    for chunk in range(processes.index, math.ceil(len(rows) / size), processes.count):
        picked = rows[chunk * size : (chunk + 1) * size]
        batch = _to(data.collate(picked, pad_id), device)
        dropout.seeds = [_seed_of(settings.seed, epoch, first + chunk * size + j) for j in range(len(picked))]
        chunk_tokens = sum(lengths[chunk * size : (chunk + 1) * size])
        chunk_labelled = sum(labelled[chunk * size : (chunk + 1) * size])
        labelled_share = chunk_labelled / labelled_total if labelled_total else 0.0
        share = {"recon": labelled_share, "gate_ce": labelled_share, "lm": (chunk_tokens - len(picked)) / scored,
                 "balance": (chunk_tokens - chunk_labelled) / unlabelled_total if unlabelled_total else 0.0,
                 "alpha_reg": 1.0 if chunk == 0 else 0.0}
        with _autocast(precision, device):
            losses = compute_losses(model, batch, settings)
        objective = sum(getattr(settings, WEIGHTS[k]) * losses[k] * share[k] for k in LOGGED[1:])
        objective.backward()
        totals += torch.tensor([float(objective.detach())]
                               + [float(losses[k].detach()) * share[k] for k in LOGGED[1:]], dtype=torch.float64)
    totals = _sum_gradients(optimizer, totals, processes)
    optimizer_step(optimizer, settings.grad_clip)
    return dict(zip(LOGGED, totals.tolist())), tokens


def _place(model: SuperposedModel, device: torch.device) -> None:
    """Stacks onto `device` unless a device map spreads them; trainable parts beside the layers they serve."""
    spread = any(len(set(getattr(stack, "hf_device_map", {}).values())) > 1 for stack in model.stack_models)
    if not spread:
        model.to(device)
    model.place_trainable(device)


def _broadcast_trainable(model: SuperposedModel, processes: Processes) -> None:
    """Every process starts from the main process's trainable weights (cheap; guards against unseeded inits)."""
    for param in model.parameters():
        if param.requires_grad:
            processes.broadcast_(param.data)


def train(
    model: SuperposedModel,
    tokenizer,
    train_files: dict[str, str],
    valid_files: dict[str, str] | None,
    run_dir: str | Path,
    settings: TrainSettings,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train, validate and checkpoint; `resume=True` continues exactly from the last checkpoint.

    Training lasts `settings.max_steps` optimiser steps when given (epochs repeat until then), else
    `settings.epochs` passes. A checkpoint is written after every epoch and, with `save_every`, every N steps.
    Launched as several processes (`accelerate launch` / `torchrun`), each step sees batch_size x processes x
    grad_accum blocks, and only the main process writes files and shows progress.
    """
    processes = setup_processes(settings.device)
    if settings.device_map and processes.count > 1:
        raise SettingsError("--device-map spreads one copy of the stacks over the devices: run it as one process "
                            f"(this run has {processes.count})")
    device = processes.device
    settings = _settings_record(settings.resolved(model.settings.variant), model)
    precision = resolve_mixed_precision(settings, device, model.stack_dtype)
    settings = replace(settings, device=str(device), mixed_precision=precision)
    run_dir = Path(run_dir)
    names = domain_names(model)
    if not train_files:
        raise DataError("no training data: pass --train NAME=FILE for the base and/or an expert, or --train FILE "
                        "for unlabelled text")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    train_data = load_labelled(train_files, names, tokenizer, settings.block_size, settings.max_train_blocks,
                               settings.switch_rate, settings.seed)
    valid_data = (
        load_labelled(valid_files, names, tokenizer, settings.block_size, settings.max_valid_blocks)
        if valid_files else None
    )
    order_record = data_order(settings, train_files, processes.count, tokenizer)
    # which checkpoint is each stack: the trained spline columns, gate rows and evidence belong to them in order
    order_record["stacks"] = [["base", model.config.base_model],
                              *[[name, model.config.experts[name]] for name in model.config.expert_names]]
    if model.settings.gate_evidence != "none" and settings.training_graph == "parallel" \
            and model.settings.graph == "sequential":
        raise SettingsError("training_graph parallel reads each stack's own likelihood as gate evidence, while the "
                            "sequential graph it serves reads its layers' logit lens: use graph parallel, or "
                            "training_graph sequential")
    _place(model, device)
    optimizer = make_optimizer(model, settings)
    result = TrainResult(run_dir)
    start_epoch, start_batch, step = 0, 0, 0
    running: dict[str, float] = {}
    counted = 0
    checkpoint = find_checkpoint(run_dir)
    if resume and checkpoint is not None:
        trainable, opt_state, saved = load_checkpoint(checkpoint)
        if saved["model_settings"] != json.loads(json.dumps(asdict(model.settings))):
            raise SettingsError(f"--resume: the model settings differ from the checkpoint's in {run_dir}")
        if "data_order" in saved:
            check_resumable(saved["data_order"], order_record, run_dir)
        model.load_trainable_state_dict(trainable)
        optimizer.load_state_dict(opt_state)
        for group, fresh in zip(optimizer.param_groups, make_optimizer(model, settings).param_groups):
            group["lr"] = fresh["lr"]  # learning rates given now win over the checkpoint's
        start_epoch, step, result.history = saved["epoch"], saved["step"], saved["history"]
        start_batch = saved.get("batch", 0)
        running, counted = dict(saved.get("running", {})), saved.get("counted", 0)
    elif checkpoint is not None and not resume:
        raise SettingsError(f"{run_dir} already holds a training checkpoint: pass --resume to continue, or a new --out")
    _broadcast_trainable(model, processes)
    processes.barrier()  # every process has read the run folder before the main process writes to it
    if processes.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(run_dir)
    started = time.perf_counter()
    global_batch = settings.batch_size * processes.count * settings.grad_accum
    steps_per_epoch = math.ceil(len(train_data) / global_batch)
    trained_tokens, train_seconds = 0, 0.0

    def checkpoint_now(epoch: int, batch: int) -> None:
        if processes.is_main:
            save_checkpoint(run_dir, model.trainable_state_dict(), optimizer, {
                "epoch": epoch, "batch": batch, "step": step, "history": result.history,
                "running": running, "counted": counted, "data_order": order_record,
                "model_settings": json.loads(json.dumps(asdict(model.settings))),
            }, keep=settings.keep_checkpoints)

    def unfinished(epoch: int) -> bool:
        return step < settings.max_steps if settings.max_steps is not None else epoch < settings.epochs

    dropout = SequenceSeededDropout(model, settings.block_size)
    try:
        epoch = start_epoch
        while unfinished(epoch):
            model.train()
            order = torch.randperm(len(train_data),
                                   generator=torch.Generator().manual_seed(settings.seed * 100_003 + epoch)).tolist()
            skip = start_batch if epoch == start_epoch else 0  # steps of this epoch done before an interruption
            remaining = steps_per_epoch - skip
            if settings.max_steps is not None:
                remaining = min(remaining, settings.max_steps - step)
            total = f"/{settings.epochs}" if settings.max_steps is None else ""
            bar = tqdm(range(skip, skip + remaining), desc=f"epoch {epoch + 1}{total}",
                       disable=not progress or not processes.is_main, leave=False)
            if skip == 0:
                running, counted = {}, 0
            seen = 0
            for index in bar:
                # any other randomness of a step is seeded per step, so a resumed run repeats it
                torch.manual_seed(settings.seed * 100_003 + epoch * 10_007 + index)
                tick = time.perf_counter()
                first = index * global_batch
                losses, tokens = _train_step(model, optimizer, train_data, order[first : first + global_batch], first,
                                             epoch, settings, processes, dropout, pad_id, precision)
                train_seconds += time.perf_counter() - tick
                trained_tokens += tokens
                step += 1
                seen += 1
                counted += 1
                for key, value in losses.items():
                    running[key] = running.get(key, 0.0) + value
                bar.set_postfix({**{k: f"{v / counted:.3f}" for k, v in running.items() if k != "alpha_reg"},
                                 "tok/s": f"{trained_tokens / max(train_seconds, 1e-9):.0f}"})
                if settings.save_every and step % settings.save_every == 0 and skip + seen < steps_per_epoch:
                    checkpoint_now(epoch, skip + seen)
            bar.close()
            done = skip + seen
            finished = done >= steps_per_epoch
            record = {"epoch": epoch + 1 if finished else epoch + done / steps_per_epoch, "step": step,
                      **{f"train_{k}": v / max(counted, 1) for k, v in running.items()}}
            if valid_data is not None:
                record.update(validate(model, valid_data, settings, pad_id, processes))
            result.history.append(record)
            if finished:
                running, counted = {}, 0
                epoch += 1
                checkpoint_now(epoch, 0)
            else:  # stopped inside the epoch (max_steps reached): a resume continues this epoch
                checkpoint_now(epoch, done)
                break
    finally:
        dropout.remove()
    result.steps, result.seconds = step, time.perf_counter() - started
    result.throughput = {
        "processes": processes.count, "grad_accum": settings.grad_accum, "global_batch": global_batch,
        "device": str(device), "mixed_precision": precision, "tokens": trained_tokens,
        "train_seconds": train_seconds, "tokens_per_second": trained_tokens / max(train_seconds, 1e-9),
        "tokens_per_second_per_process": trained_tokens / max(train_seconds, 1e-9) / processes.count,
        "peak_memory_mb": processes.gather(peak_memory_mb(device)),
    }
    model.eval()
    if processes.is_main:
        model.save_pretrained(run_dir)
        (run_dir / RUN_FILE).write_text(json.dumps({
            "train_settings": asdict(settings), "train_files": _absolute(train_files),
            "valid_files": _absolute(valid_files or {}), "history": result.history, "steps": step,
            "seconds_this_session": result.seconds, "throughput_this_session": result.throughput,
        }, indent=2, sort_keys=True))
    processes.barrier()  # no process returns before the run folder is complete
    return result
