"""The README and docs/ stay true to the program: links resolve, command lines name real options,
the CI script runs the README's install and test commands."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from harness.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CODE_SPAN = re.compile(r"`[^`\n]*`")
FENCED = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")
COMMAND = re.compile(r"(?:shiftbench|python -m harness) ([a-z][a-z-]*)((?:[^`|#\n]|\|(?! ))*)")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    out = set()
    for line in path.read_text().splitlines():
        if m := re.match(r"#+\s+(.*)", line):
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


def subcommand_options() -> dict[str, set[str]]:
    """Every command (and `prepare DATASET`) with the option strings its parser accepts."""
    out: dict[str, set[str]] = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        opts = {s for a in parser._actions for s in a.option_strings}
        out[name] = opts
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, p in action.choices.items():
                    walk(p, f"{name} {sub}".strip())

    walk(build_parser(), "")
    return out


def command_lines(text: str) -> list[str]:
    """Command lines shown in fenced blocks (continuations joined) and in inline code."""
    lines, fenced, buf = [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            if line.rstrip().endswith("\\"):
                buf += line.rstrip()[:-1] + " "
                continue
            lines.append(buf + line)
            buf = ""
        else:
            lines += [span.strip("`") for span in CODE_SPAN.findall(line)]
    return lines


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_link_and_anchor_resolves(doc):
    text = CODE_SPAN.sub("", FENCED.sub("", doc.read_text()))
    broken = []
    for link in LINK.findall(text):
        if link.startswith(("http://", "https://")):
            continue
        path, _, anchor = link.partition("#")
        target = (doc.parent / path).resolve() if path else doc
        if not target.exists():
            broken.append(link)
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(link)
    assert broken == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_command_shown_names_options_that_command_has(doc):
    options = subcommand_options()
    wrong = []
    for line in command_lines(doc.read_text()):
        for m in COMMAND.finditer(line):
            name, rest = m.group(1), m.group(2)
            if name not in options:
                if name != "arguments":  # "<shiftbench arguments>" in prose
                    wrong.append(f"{name}: no such command ({line.strip()})")
                continue
            if (d := re.match(r"\s*([a-z]+)", rest)) and f"{name} {d.group(1)}" in options:
                name = f"{name} {d.group(1)}"
            wrong += [f"{name} {o} ({line.strip()})" for o in OPTION.findall(rest) if o not in options[name]]
    assert wrong == []


def test_readme_starts_with_install_report_and_tests_and_ci_runs_them():
    readme = (REPO / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands[1] == "shiftbench report"
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert commands[0] in ci and commands[2] in ci


def test_every_summary_field_the_report_writes_is_in_the_schema_doc(tmp_path):
    from reports.report import ReportConfig, run_report

    documented = set(re.findall(r"`([a-z_0-9]+)`", (REPO / "docs" / "summary-schema.md").read_text()))
    s = run_report(ReportConfig(samples=20, out=None, json=tmp_path / "s.json", figures_dir=tmp_path / "figures"))
    fields = set(s) | {k for part in ("fits", "unfitted", "models", "dropped") for item in s[part] for k in item}
    fields |= set(s["baseline"]) | set(s["bootstrap"])
    assert s["fits"] and s["unfitted"] and s["models"] and s["figures"]
    assert fields - documented == set()


def test_the_model_card_shown_in_the_leaderboard_doc_is_valid(tmp_path):
    from reports.submission import load_card

    text = (REPO / "docs" / "leaderboard.md").read_text()
    card = tmp_path / "model.toml"
    card.write_text(re.search(r"```toml\n(.*?)```", text, re.S).group(1))
    assert load_card(card)["method"] == {"kind": "wise-ft", "alpha": 0.5}
