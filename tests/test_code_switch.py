"""Code-switched data: seeded mixing, spans that tile each line, per-token sources."""
import json

import pytest

from superpose.cli import main
from superpose.code_switch import NO_SOURCE, load_spans, mix_lines, split_sentences, tokenize_spans
from superpose.data import DataError

from helpers import char_tokenizer

EN = ["the cat sat. it was warm! was it? yes.", "a dog ran home. then it slept.", "we read books. they are old."]
FR = ["LE CHAT DORT. IL FAIT BEAU!", "UNE FILLE MANGE. ELLE RIT? OUI.", "NOUS AIMONS LA MER."]


def test_sentences_split_at_ends_with_closing_quotes():
    assert split_sentences('He said "Stop." She left! Why? « Non. » Fin') == ['He said "Stop."', "She left!", "Why?",
                                                                             "« Non. »", "Fin"]


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
