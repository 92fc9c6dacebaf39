"""Text in, token blocks out.

* `text`: domain-labelled `.txt` / `.jsonl` files, tokenised and cut into blocks, batched.
* `code_switch`: lines whose sentences alternate between sources, with per-token domain spans.
"""
