"""The demo pipeline in a reduced mode, on the shipped experts and the bundled corpus."""
import json
import math

import pytest

from superpose.demo.walkthrough import DEMO_EXPERTS, run_demo


@pytest.mark.skipif(not (DEMO_EXPERTS / "base" / "config.json").is_file(), reason="demo experts not shipped")
def test_reduced_demo_writes_everything_and_beats_the_worse_expert(tmp_path):
    out = run_demo(tmp_path, steps=40, eval_blocks=4, analysis_samples=2, generations=1, progress=False)
    for path in ("run/config.json", "run/superposed.safetensors", "eval.json", "samples.json", "report/index.html",
                 "analysis/analysis.json", "corpus/en/test.txt"):
        assert (tmp_path / path).is_file(), path
    models = json.loads((tmp_path / "eval.json").read_text())["models"]
    for domain in ("base", "fr"):
        superposed = models["superposed"][domain]["ppl"]
        worse = max(models["base"][domain]["ppl"], models["expert:fr"][domain]["ppl"])
        assert math.isfinite(superposed) and superposed < worse, (domain, superposed, worse)
    samples = json.loads((tmp_path / "samples.json").read_text())
    assert set(samples) == {"base", "expert:fr", "superposed"}
    assert "demo summary" in out["summary"]
