"""Gathers finished workdirs into one report: ``report.md`` and a self-contained ``report.html``.

    python -m experiments.report --out=runs/report runs/studies/*
    python -m experiments.report --out=runs/report --run_studies=configs/studies --workdir=runs/studies

With ``--run_studies`` every study config in that folder is first run (a
workdir that already holds its results is skipped), so one command gives
every study's numbers, plots and the report. ``--redraw`` draws each study's
figures and report again from its stored results (``computed.json``) without
computing anything:

    python -m experiments.report --redraw --out=runs/report runs/studies/* A workdir is a study's (its
``results.json`` has a "study"), an engine sweep's (``results.json`` of runs)
or a single engine run's (``result.json``).
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import re
import shutil
import sys
import tempfile
import time

import markdown_it
from absl import app, flags

from . import config as config_lib
from . import studies
from . import workdir as workdir_lib
from .writers import escape, run_report, sweep_report


def run_studies(
    config_dir: str | pathlib.Path, workdir: str | pathlib.Path, size: str = "default"
) -> list[pathlib.Path]:
    """Runs every study config in ``config_dir`` (in the order of :data:`experiments.studies.NAMES`)."""

    paths = {p.stem: p for p in sorted(pathlib.Path(config_dir).glob("[!_]*.py"))}
    done = []
    for name in sorted(paths, key=lambda n: studies.NAMES.index(n) if n in studies.NAMES else len(studies.NAMES)):
        config = config_lib.load_config_module(paths[name]).get_config(size)
        start = time.perf_counter()
        result = studies.run(config, pathlib.Path(workdir) / name)
        print(f"{name}: {result['wall_seconds']:.0f} s ({time.perf_counter() - start:.0f} s this call)")
        done.append(pathlib.Path(workdir) / name)
    return done


def _with_figures(text: str, workdir: pathlib.Path, figures: pathlib.Path) -> str:
    """Copies each image ``text`` links to into ``figures/`` (prefixed by the workdir's name) and rewrites the link;
    the line of an image whose file is missing is dropped."""
    lines = []
    for line in text.splitlines():
        if m := re.fullmatch(r"!\[(.*?)\]\((.+?)\)", line):
            png = workdir / m.group(2)
            if not png.exists():
                continue
            target = f"{workdir.name}__{png.name}"
            shutil.copyfile(png, figures / target)
            line = f"![{m.group(1)}](figures/{target})"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _section(workdir: pathlib.Path, figures: pathlib.Path) -> tuple[str, dict | None]:
    """A workdir's markdown section (figure links rewritten into ``figures/``) and its study summary, if any."""
    results = workdir / "results.json"
    if results.exists() and "study" in (data := json.loads(results.read_text())):
        return _with_figures((workdir / "report.md").read_text(), workdir, figures), data
    if results.exists():
        table = sweep_report(json.loads(results.read_text())).split("\n", 2)[2]  # without its title
        table = table.replace("](runs/", f"]({workdir.name}/runs/")
        return f"## Sweep {escape(workdir.name)}\n\n{table}", None
    if (workdir / "result.json").exists():
        text = run_report(workdir.name, json.loads((workdir / "result.json").read_text()))
        return "#" + _with_figures(text, workdir, figures), None
    raise ValueError(f"workdir {str(workdir)!r}: no results.json or result.json; is the run finished?")


def gather(workdirs: list[pathlib.Path], out: pathlib.Path) -> pathlib.Path:
    """Writes ``out/report.md``, ``out/report.html`` and ``out/figures/``; returns the markdown path.

    The report is built in a temporary folder beside ``out`` and renamed into place, so ``out`` holds a whole
    report (the earlier one, or the new one), never half of one: a workdir that is missing or unfinished is
    refused before anything is written.
    """
    workdirs = [pathlib.Path(d) for d in workdirs]
    for d in workdirs:
        if not ((d / "results.json").exists() or (d / "result.json").exists()):
            raise ValueError(f"workdir {str(d)!r}: no results.json or result.json; is the run finished?")
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        figures = staging / "figures"
        figures.mkdir()
        sections, summary = [], []
        for d in workdirs:
            text, data = _section(d, figures)
            sections.append(text)
            if data is not None:
                held = sum(c["held"] for c in data["claims"])
                head = "; ".join(
                    f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in data["headline"].items()
                )
                summary.append(
                    f"| {escape(data['title'])} | {data['wall_seconds']:.0f} s | {held}/{len(data['claims'])} "
                    f"| {escape(head)} |"
                )
        top = ["# gated: gradient-flow studies", ""]
        if summary:
            top += ["| study | wall time | claims held | headline numbers |", "| --- | --- | --- | --- |", *summary, ""]
        markdown = "\n".join(top) + "\n" + "\n\n".join(sections)
        workdir_lib.write(staging / "report.md", markdown)
        workdir_lib.write(staging / "report.html", to_html(markdown, staging))
        os.chmod(staging, 0o777 & ~workdir_lib.umask())
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out / "report.md"


def _swap_into_place(staging: pathlib.Path, out: pathlib.Path) -> None:
    """Renames the finished ``staging`` folder to ``out``, replacing an earlier report (renamed aside first, then
    deleted)."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)


def to_html(markdown: str, root: pathlib.Path) -> str:
    """The report as one HTML page (markdown-it-py, CommonMark with tables), its images embedded, so that the page
    can be mailed or archived on its own."""
    renderer = markdown_it.MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = renderer.parse(markdown)
    for token in tokens:
        for child in token.children or ():
            if child.type == "image":
                data = base64.b64encode((root / child.attrGet("src")).read_bytes()).decode()
                child.attrSet("src", f"data:image/png;base64,{data}")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}img{max-width:100%}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
    )
    body = renderer.renderer.render(tokens, renderer.options, {})
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>gated report</title><style>{style}</style>"
        f"</head><body>{body}</body></html>\n"
    )


def main(argv):
    f = flags.FLAGS
    workdirs = [pathlib.Path(a) for a in argv[1:]]
    if f.run_studies:
        workdirs += [d for d in run_studies(f.run_studies, f.workdir, f.size) if d not in workdirs]
    if not workdirs:
        raise app.UsageError("give the workdirs to gather, or --run_studies=configs/studies")
    if f.redraw:
        for d in workdirs:
            if (d / studies.COMPUTED).exists():
                studies.redraw(d)
    try:
        path = gather(workdirs, pathlib.Path(f.out))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"report in {path} and {path.with_suffix('.html')}")


def run():
    """The command line (flags defined here, so importing this module for its functions defines none)."""
    flags.DEFINE_string("out", "runs/report", "Folder for report.md, report.html and the figures.")
    flags.DEFINE_string("run_studies", None, "Run every study config in this folder first (e.g. configs/studies).")
    flags.DEFINE_string("workdir", "runs/studies", "Where --run_studies puts each study's workdir.")
    flags.DEFINE_string("size", "default", "With --run_studies: the size of every study (tiny, default, paper).")
    flags.DEFINE_bool("redraw", False, "Redraw each study's figures and report from its stored results first.")
    app.run(main)


if __name__ == "__main__":
    run()
