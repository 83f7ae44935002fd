"""Test helper shared by the files whose runs write report.json (transfer, fine-tuning comparisons): the hub's model
card of a run folder shows the report's comparison, checked against the report itself."""
from __future__ import annotations

from bytezoo.hub.card import make_model_card, read_json_documents


def assert_card_shows_the_comparison(folder, report: dict) -> None:
    """The hub's model card of ``folder`` (what `bytezoo hub push` writes) shows report.json's comparison as a table."""
    names = {path.name: path.stat().st_size for path in folder.iterdir() if path.is_file()}
    card = make_model_card(folder.name, names, read_json_documents(folder, names), {}).splitlines()
    methods = report["comparison"]["methods"]
    assert len(methods) >= 3 and "| method | " + " | ".join(f"{n:,} labels" for n in report["comparison"]["n_train"]) + " |" in card
    for method in methods:
        cells = ["n/a" if p["accuracy"] is None else f"{100 * p['accuracy']:.1f}" for p in method["points"]]
        assert f"| {method['label']} | {' | '.join(cells)} |" in card, method["label"]
