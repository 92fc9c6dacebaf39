"""Code-switched data: seeded mixing, spans that tile each line, per-token sources."""
import json

import pytest
from helpers import char_tokenizer, paper_model

from superpose.cli.commands import main
from superpose.data.code_switch import (
    CHUNK_LINES,
    NO_SOURCE,
    load_spans,
    mix_lines,
    split_sentences,
    split_units,
    tokenize_spans,
)
from superpose.data.text import DataError

EN = ["the cat sat. it was warm! was it? yes.", "a dog ran home. then it slept.", "we read books. they are old."]
FR = ["LE CHAT DORT. IL FAIT BEAU!", "UNE FILLE MANGE. ELLE RIT? OUI.", "NOUS AIMONS LA MER."]


def test_sentences_split_at_ends_with_closing_quotes():
    assert split_sentences('He said "Stop." She left! Why? « Non. » Fin') == ['He said "Stop."', "She left!", "Why?",
                                                                             "« Non. »", "Fin"]


CODE = "import os\n\n\ndef f(x):\n    return x + 1\n\n" + "\n".join(f"A{i} = {i}" for i in range(CHUNK_LINES + 3))


def test_auto_units_are_sentences_of_prose_and_blank_line_chunks_of_code():
    assert split_units(EN[0]) == split_sentences(EN[0])
    assert split_units(CODE) == ["import os", "def f(x):\n    return x + 1",
                                 "\n".join(f"A{i} = {i}" for i in range(CHUNK_LINES)),
                                 "\n".join(f"A{i} = {i}" for i in range(CHUNK_LINES, CHUNK_LINES + 3))]
    records = mix_lines({"base": EN, "code": [CODE]}, seed=0, segment="auto")
    for record in records:
        text, spans = record["text"], record["spans"]
        assert spans[-1]["end"] == len(text)
        for before, span in zip(spans, spans[1:]):
            piece = text[span["start"] : span["end"]]
            code_next_to_it = "code" in (before["source"], span["source"])
            assert piece[0] == ("\n" if code_next_to_it else " ")  # code chunks stay on lines of their own
    units = {u for line in EN for u in split_sentences(line)} | set(split_units(CODE))
    assert all(text.strip() in units for r in records for text in
               [r["text"][s["start"] : s["end"]] for s in r["spans"]])


def test_mixed_lines_are_seeded_alternate_and_spans_tile_each_line():
    records = mix_lines({"base": EN, "fr": FR}, seed=3)
    assert records == mix_lines({"base": EN, "fr": FR}, seed=3)
    assert records != mix_lines({"base": EN, "fr": FR}, seed=4)
    en_sentences = {s for line in EN for s in split_sentences(line)}
    for record in records:
        text, spans = record["text"], record["spans"]
        assert spans[0]["start"] == 0 and spans[-1]["end"] == len(text)
        assert all(a["end"] == b["start"] for a, b in zip(spans, spans[1:]))
        assert all(a["source"] != b["source"] for a, b in zip(spans, spans[1:]))
        for span in spans:
            piece = text[span["start"] : span["end"]].strip()
            assert (piece in en_sentences) == (span["source"] == "base")
    assert len(mix_lines({"base": EN, "fr": FR}, seed=3, max_lines=1)) == 1


def test_cli_mix_data_writes_jsonl_that_tokenises_with_sources(tmp_path, capsys):
    (tmp_path / "en.txt").write_text("\n".join(EN), encoding="utf-8")
    (tmp_path / "fr.txt").write_text("\n".join(FR), encoding="utf-8")
    out = tmp_path / "mixed.jsonl"
    assert main(["mix-data", "--data", f"base={tmp_path / 'en.txt'}", "--data", f"fr={tmp_path / 'fr.txt'}",
                 "--out", str(out), "--seed", "1"]) == 0
    records = load_spans(out)
    assert records == [json.loads(line) for line in out.read_text().splitlines()]
    sourced = tokenize_spans(records, char_tokenizer(), block_size=1000)
    ids, sources = sourced.blocks[0].tolist(), sourced.sources[0].tolist()
    text = "\n".join(r["text"] for r in records)
    tok = char_tokenizer()
    chars = [tok.convert_ids_to_tokens(i) for i in ids]
    for char, source in zip(chars, sources):  # upper case is French in this data, lower case English
        if char.isalpha():
            assert sourced.names[source] == ("fr" if char.isupper() else "base"), char
        if char == tok.eos_token:
            assert source == NO_SOURCE
    since = sourced.segment_start[0].tolist()
    assert since[0] == 0 and sourced.switched[0].any()
    assert len([c for c in chars if c != tok.eos_token]) == len(text.replace("\n", ""))
    assert main(["mix-data", "--data", f"base={tmp_path / 'en.txt'}", "--out", str(out)]) == 2
    assert "at least two sources" in capsys.readouterr().err


def test_malformed_spans_are_refused(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "abc def", "spans": [{"start": 0, "end": 3, "source": "base"}]}) + "\n")
    with pytest.raises(DataError, match="spans end at 3"):
        load_spans(path)


@pytest.mark.parametrize("lines, message", [
    (['"just a string"'], "bad.jsonl:1: each JSONL line needs a string field 'text'"),
    (['{"text": "a", "spans": [{"start": 0, "end": 1, "source": "base"}]}', "7"], "bad.jsonl:2: each JSONL"),
    (["{not json"], "bad.jsonl:1: not valid JSON"),
    (['{"text": "ab"}', '{"text": "a", "spans": [{"start": 0, "end": 1, "source": "base"}]}'],
     "bad.jsonl:1: this line has no 'spans' while line 2 has"),
    (['{"text": "ab", "spans": ["x"]}'], "bad.jsonl:1: 'spans' must be a non-empty list"),
])
def test_bad_jsonl_lines_are_named_by_file_and_line(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        load_spans(path)


def test_per_source_perplexity_counts_exactly_each_sources_tokens(tmp_path):
    import math

    import torch
    from helpers import tiny_pair

    from superpose.evaluation.evaluate import evaluate
    from superpose.model.superposed import SuperposedModel
    records = mix_lines({"base": EN, "fr": FR}, seed=2)
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    base, expert = tiny_pair("gpt2")
    model = SuperposedModel.from_models(base, expert, paper_model(ae_layers=[]), expert_name="fr").eval()
    tok = char_tokenizer()
    result = evaluate(model, tok, {"switch": str(path)}, baselines=[], block_size=40, batch_size=3, progress=False)
    got = result["models"]["base"]["switch"]
    sourced = tokenize_spans(records, tok, block_size=40)
    for index, name in enumerate(sourced.names):  # one unpadded block at a time, targets of that source only
        nll, count = 0.0, 0
        with torch.no_grad():
            for block, sources in zip(sourced.blocks, sourced.sources):
                logits = base(block[None]).logits[0, :-1]
                losses = torch.nn.functional.cross_entropy(logits, block[1:], reduction="none")
                picked = sources[1:] == index
                nll += losses[picked].sum().item()
                count += int(picked.sum())
        assert got[f"tokens_source:{name}"] == count > 0
        assert got[f"ppl_source:{name}"] == pytest.approx(math.exp(nll / count), rel=1e-5)


def test_snippets_cut_code_chunks_to_runs_of_their_lines_and_leave_prose_whole():
    code = "\n".join(f"x{i} = {i}" for i in range(10))  # one chunk of ten lines
    records = mix_lines({"base": EN * 4, "code": [code] * 12}, seed=5, segment="auto", snippets=True)
    pieces = [r["text"][s["start"] : s["end"]].strip("\n ") for r in records for s in r["spans"]
              if s["source"] == "code"]
    lines = code.split("\n")
    runs = {"\n".join(lines[a:b]) for a in range(10) for b in range(a + 1, 11)}
    assert pieces and all(piece in runs for piece in pieces)
    assert len({piece.count("\n") for piece in pieces}) > 1  # runs of several lengths, not the whole chunk each time
    prose = [r["text"][s["start"] : s["end"]].strip() for r in records for s in r["spans"] if s["source"] == "base"]
    assert set(prose) <= {u for line in EN for u in split_sentences(line)}
    whole = mix_lines({"base": EN * 4, "code": [code] * 12}, seed=5, segment="auto")
    assert all(r["text"][s["start"] : s["end"]].strip("\n ") == code for r in whole for s in r["spans"]
               if s["source"] == "code")
