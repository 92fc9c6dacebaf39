"""The offline demo: the paper's story at small scale.

* `walkthrough`: `superpose demo`, from corpus to report.
* `tiny_experts`: a shared BPE tokenizer, a tiny English GPT-2 base and its fine-tunes.
* `bundled_corpus/`: the original English/French corpus the demo trains on.
"""
