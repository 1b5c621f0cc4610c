"""The report as a user builds it: train a few quick runs, run ``hw1_id_eval.py --report``, read the PDF.

Checks the promises of ``study/report_pdf.py``: two pages of main content plus at most one appendix
page, the numbers of the runs' ``metrics.json`` in the PDF's text and in ``report.md`` (in the
formats the report uses), typeset mathematics, the quick-run banner, the author line, figure
links, and no temporary files left behind. A hand-made partial context checks that missing
tables and figures are handled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = ["lr-mle", "lr-map", "lr-vi", "bnn-1x100", "rl-random200-b0.01", "rl-38-first200-b0.01",
               "rl-38-first200-b1", "rl-random200-b1"]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def built(tmp_path_factory, mnist_dir):
    """A results folder with eight quick runs and the report built from it by ``hw1_id_eval.py``."""
    out = tmp_path_factory.mktemp("report") / "results"
    train = run("hw1_id_train.py", "--experiment", *EXPERIMENTS, "--quick", "--seeds", "0", "--out", str(out),
                "--no-progress", "--data-dir", str(mnist_dir))
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-4000:]
    evaluate = run("hw1_id_eval.py", str(out), "--report", "--quick", "--data-dir", str(mnist_dir))
    return out, evaluate


def metrics(out: Path, experiment: str) -> dict:
    return json.loads((out / experiment / "seed0" / "metrics.json").read_text(encoding="utf-8"))["metrics"]


@pytest.fixture(scope="module")
def pdf_pages(built):
    from pypdf import PdfReader

    out, evaluate = built
    assert evaluate.returncode == 0, evaluate.stdout[-2000:] + evaluate.stderr[-4000:]
    reader = PdfReader(str(out / "report.pdf"))
    return reader, [" ".join((page.extract_text() or "").split()) for page in reader.pages]


def test_eval_with_report_exits_cleanly(built):
    out, evaluate = built
    assert evaluate.returncode == 0, evaluate.stdout[-2000:] + evaluate.stderr[-4000:]
    assert "Traceback" not in evaluate.stderr
    assert (out / "report.pdf").is_file() and (out / "report.md").is_file()


def test_two_pages_of_report_and_at_most_one_appendix_page(pdf_pages):
    reader, pages = pdf_pages
    assert len(reader.pages) in (2, 3)
    assert "Question 1" in pages[0]
    assert "Summary of attempts and conclusions" in pages[1]  # the main content ends on page 2
    assert not any("Appendix" in text for text in pages[:2])
    if len(pages) == 3:
        assert "Appendix" in pages[2]
    for page in reader.pages:  # A4
        assert abs(float(page.mediabox.width) - 595.3) < 1 and abs(float(page.mediabox.height) - 841.9) < 1


def test_pdf_and_markdown_carry_the_runs_numbers(built, pdf_pages):
    out, _ = built
    _, pages = pdf_pages
    text = "\n".join(pages)
    markdown = (out / "report.md").read_text(encoding="utf-8")
    accuracy = f"{metrics(out, 'lr-map')['test/accuracy']:.4f}"  # Table 3: test accuracy, 4 decimals
    kl_random = f"{metrics(out, 'rl-random200-b1')['kl/total']:.4g}"  # Table 2: KL total, 4 significant digits
    kl_true = f"{metrics(out, 'rl-38-first200-b0.01')['kl/total']:.4g}"
    kl_mlp = f"{metrics(out, 'bnn-1x100')['kl/total']:.4g}"  # Table 3: KL (nats)
    for number in (accuracy, kl_random, kl_true, kl_mlp):
        assert number in text, f"{number} not in the PDF's text"
        assert number in markdown, f"{number} not in report.md"


def test_pdf_typesets_mathematics_and_marks_a_quick_run(pdf_pages):
    reader, pages = pdf_pages
    first = pages[0]
    assert "QUICK RUN: tiny budget, numbers are not results" in first
    assert "Name / ID:" in first  # no author given: a line for the student to fill in
    assert "make reproduce" in first and "make report" in first
    assert "ψ" in first and "λ" in first  # Greek typeset, not spelled out
    assert "autograd derivatives of the empirical ψ" in first  # the claim, with its Greek typeset
    # the display formulas are mathtext images: page 1 holds them and the figures
    assert len(reader.pages[0].images) >= 4


def test_markdown_twin_has_the_sections_and_relative_figure_links(built):
    out, _ = built
    markdown = (out / "report.md").read_text(encoding="utf-8")
    for heading in ("Question 1", "Models and training", "Question 2", "PAC-Bayes", "Question 3",
                    "Summary of attempts and conclusions", "Appendix"):
        assert heading in markdown
    assert "$$" in markdown and r"\psi" in markdown
    assert "QUICK RUN" in markdown
    links = [line.split("](", 1)[1].split(")", 1)[0] for line in markdown.splitlines() if line.startswith("![")]
    assert "figures/convergence_grid.png" in links
    for link in links:
        assert not Path(link).is_absolute() and (out / link).is_file(), link


def test_study_tables_are_written_and_no_temporary_file_is_left(built):
    out, _ = built
    psi = out / "tables" / "psi_check.md"
    assert psi.is_file() and "lam" in psi.read_text(encoding="utf-8")
    leftovers = [p for p in out.rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers


def partial_context(folder: Path) -> dict:
    """A context as ``study/report.py`` builds it from a folder with nothing but one logistic regression."""
    return {
        "title": "A partial results folder", "author": "Ada Lovelace, 123456789", "generated": "2026-01-01",
        "results_dir": str(folder), "quick": False, "num_runs": 1, "tempered_beta": 0.01,
        "random_labels": [], "sweep": [], "pac_bayes": [], "psi": None,
        "l2": [{"model": "lr-map", "experiment": "lr-map", "method": "map", "architecture": "784-10",
                "params": 7850, "test/accuracy": 0.91234, "test/nll": 0.3, "test/ece": 0.01, "kl/total": None,
                "elbo/neg_per_n": None, "training/seconds": 3.0, "training/epochs": 7.0, "converged": "yes",
                "loo/elpd": None}],
        "hyperparameters": [{"experiment": "lr-map", "method": "map", "architecture": "784-10",
                             "prior": "N(0, 0.1^2)", "beta": 1.0, "lr": 0.01, "scale lr": 0.01, "batch": 128,
                             "init scale": 0.001, "seeds": 1, "epochs": "7", "converged": "yes"}],
        "arviz": {"loo": {}, "layers": [], "compare": [], "lr_summary": []},
        "figures": {"convergence": str(folder / "figures" / "missing.png")},
        "tables_markdown": {}, "claims": {"q1": [], "q2": [], "sweep": [], "q3": [], "pac_bayes": []},
    }


def test_partial_context_still_gives_two_pages(tmp_path):
    from pypdf import PdfReader

    from study import report_pdf

    context = partial_context(tmp_path)
    report_pdf.build_pdf(context, tmp_path / "report.pdf")
    pages = [" ".join(page.extract_text().split()) for page in PdfReader(str(tmp_path / "report.pdf")).pages]
    assert len(pages) == 3  # the short main content is spread over two pages; the appendix has the settings
    assert "Question 1" in pages[0] and "Summary of attempts" in pages[1] and "Appendix" in pages[2]
    text = "\n".join(pages)
    assert "Ada Lovelace, 123456789" in text and "Name / ID" not in text
    assert "QUICK RUN" not in text
    assert "0.9123" in text  # the one run's test accuracy
    assert "not available" in text  # the missing figure is said to be missing, not fatal
    assert [p.name for p in tmp_path.iterdir()] == ["report.pdf"]  # written atomically, nothing left over
    markdown = report_pdf.markdown_report(context)
    assert "0.9123" in markdown and "Ada Lovelace" in markdown
