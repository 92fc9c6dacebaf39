"""What every layer shares, and nothing model-specific.

* `settings`: what every settings dataclass shares: help-carrying fields, `Literal` choices, checks, YAML, old
  names, dtypes.
* `loading`: base and expert checkpoints and tokenizers from local folders or hub ids; devices.
* `metrics`: token-weighted language-model metrics accumulated over batches.
* `mixtures`: causal log-space mixtures of M next-token distributions (Bayes, fixed share).
* `text_tables`: plain-text tables for command summaries.

Layering (each package imports only those before it): core < data < model < compare < evaluation < training
< report < demo < cli.
"""
