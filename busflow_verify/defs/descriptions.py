"""Asset descriptions that open with the stage and close with the runbook section to open.

Someone who lands on an asset in the Dagster UI (a red node, an alert's link) reads where it sits
in the workflow and which section of the runbook triages it. The UI renders them as Markdown.
"""

from busflow_verify.core.failures import CATALOGUE, RUNBOOK

STAGES = 5
README_TABLE = "README, *What each stage does*"


def describe(step: int, stage: str, body: str, failure_names: list[str]) -> str:
    """`failure_names` are the catalogue names the stage can raise; their runbook sections are
    named by heading (the runbook is the team's document, not a file in this repository)."""
    sections = dict.fromkeys(CATALOGUE[name].runbook_section for name in failure_names)
    named = "; ".join(f"**{section}**" for section in sections)
    noun = "section" if len(sections) == 1 else "sections"
    return (
        f"**Stage {step} of {STAGES}: {stage}** (workflow step {step}).\n\n{body}\n\n"
        f"{RUNBOOK}, {noun} {named}. Checks and failure codes: {README_TABLE}."
    )
