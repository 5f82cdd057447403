"""The README's copy of the pipeline table is the one `topics.py` generates."""

from pathlib import Path

from alphapanda.topics import pipeline_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_when_read_then_its_pipeline_table_matches_topics_module() -> None:
    text = README.read_text()
    start = text.index("<!-- pipeline-table -->") + len("<!-- pipeline-table -->")
    end = text.index("<!-- /pipeline-table -->")
    assert text[start:end].strip() == pipeline_markdown()
