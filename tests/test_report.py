"""The HTML report: parsed with html.parser; sections, tables with the runs' numbers, valid embedded PNGs."""
import base64
import io
import json
from html.parser import HTMLParser

import pytest
from PIL import Image

from datadistill.apps.nas import architecture_search
from datadistill.cli import main
from datadistill.config import resolve_config
from datadistill.errors import FormatError
from datadistill.report import build_report, load_run, write_report
from datadistill.run import run_distillation
from datadistill.synset import SyntheticSet
from toydata import toy_splits

SMALL = dict(device="cpu", batch_real=5, model_args={"width": 8, "depth": 2}, checkpoint_every=2, val_epochs=1)
EVAL = {"runs": 2, "epochs": 2, "aug": "none"}


pytestmark = pytest.mark.usefixtures("one_thread")


class Page(HTMLParser):
    """Collects section ids, headings, tables (class, rows of cell texts) and image sources."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.sections, self.headings, self.tables, self.images, self.tags = [], [], [], [], []
        self._heading = None
        self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self.sections.append(a.get("id"))
        elif tag in ("h1", "h2", "h3"):
            self._heading = ""
        elif tag == "table":
            self.tables.append({"class": a.get("class"), "rows": []})
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.images.append(a)

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append(self._heading)
            self._heading = None
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._heading is not None:
            self._heading += data
        if self._cell is not None:
            self._cell += data

    def table(self, cls, n=0):
        return [t["rows"] for t in self.tables if t["class"] == cls][n]


def parse(text):
    p = Page()
    p.feed(text)
    p.close()
    return p


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    toy = toy_splits()
    root = tmp_path_factory.mktemp("report")
    dm = root / "dm <b>&run"  # a name that must be escaped
    run_distillation(resolve_config("dm", "toy", 2, "quick", iterations=6, val_every=3, eval=EVAL, **SMALL), dm,
                     data=toy, progress=False)
    rnd = root / "random"
    run_distillation(resolve_config("random", "toy", 2, "quick", eval=EVAL, **SMALL), rnd, data=toy, progress=False)
    # a later `datadistill evaluate` on another network, and an architecture search
    ev = json.loads((rnd / "eval.json").read_text())
    (rnd / "evaluate.json").write_text(json.dumps([{**ev, "model": "mlp", "mean": 12.5, "std": 2.5}]))
    nas = architecture_search(SyntheticSet.load(rnd), toy, variants=[{"width": 8, "depth": 1}, {"width": 8, "depth": 2}],
                              epochs_syn=1, epochs_real=1, aug="none", device="cpu")
    (rnd / "nas.json").write_text(json.dumps(nas.to_dict()))
    return dm, rnd


def test_report_sections_tables_and_images(runs, tmp_path):
    dm, rnd = runs
    dest = write_report([dm, rnd], tmp_path / "out" / "report.html")
    text = dest.read_text(encoding="utf-8")
    assert not [p for p in dest.parent.iterdir() if p.name.endswith(".tmp")]
    page = parse(text)
    assert page.sections == ["comparison", "run-1", "run-2"]
    assert {"Comparison", "Configuration", "Synthetic images (classes as rows)", "Loss curve", "Evaluation",
            "Architecture-search proxy (nas.json)"} <= set(page.headings)
    assert "1. dm <b>&run" in page.headings  # escaped in the source, intact once parsed
    assert "<b>&run" not in text and "&lt;b&gt;&amp;run" in text

    ev_dm, ev_rnd = (json.loads((r / "eval.json").read_text()) for r in runs)
    comp = page.table("comparison")
    head = comp[0]
    rows = {r[0]: dict(zip(head, r)) for r in comp[1:]}
    assert set(rows) == {"dm <b>&run", "random"}
    assert rows["dm <b>&run"]["accuracy (%)"] == f"{ev_dm['mean']:.2f} ± {ev_dm['std']:.2f}"
    assert rows["random"]["accuracy (%)"] == f"{ev_rnd['mean']:.2f} ± {ev_rnd['std']:.2f}"  # eval.json first
    assert rows["dm <b>&run"]["method"] == "dm" and rows["dm <b>&run"]["iterations"] == "6"
    assert rows["random"]["iterations"] == "0" and rows["random"]["IPC"] == "2" and rows["random"]["runs"] == "2"

    cfg = dict(r for r in page.table("config", 0)[1:])
    assert cfg["method"] == "dm" and cfg["dataset"] == "toy" and cfg["IPC"] == "2" and cfg["preset"] == "quick"
    assert cfg["iterations (configured)"] == "6" and cfg["iterations done"] == "6"

    ev1 = page.table("evaluation", 0)
    assert ev1[1][:5] == ["eval.json", "convnet", "test", f"{ev_dm['mean']:.2f} ± {ev_dm['std']:.2f}", "2"]
    assert ev1[1][5] == ", ".join(f"{a:.2f}" for a in ev_dm["accuracies"])
    ev2 = page.table("evaluation", 1)
    assert [r[0] for r in ev2[1:]] == ["eval.json", "evaluate.json"]
    assert ev2[2][1] == "mlp" and ev2[2][3] == "12.50 ± 2.50"
    assert [r[0] for r in page.table("nas")[1:]] == ["width=8,depth=1", "width=8,depth=2"]

    # 2 grids per run, a loss curve for dm (the coreset run has none), one bar plot
    assert len(page.images) == 2 + 1 + 2 + 1
    for img in page.images:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix) and img.get("alt")
        raw = base64.b64decode(img["src"][len(prefix):], validate=True)
        im = Image.open(io.BytesIO(raw))
        assert im.format == "PNG"
        im.verify()
    assert (tmp_path / "out" / "report.html").stat().st_mode & 0o044  # readable by others, not mkstemp's 0600


def test_self_contained(runs):
    text = build_report(list(runs))
    page = parse(text)
    assert "script" not in page.tags and "link" not in page.tags
    assert all(img["src"].startswith("data:") for img in page.images)
    assert "http://" not in text and "https://" not in text


def test_run_without_evaluation_and_errors(tmp_path):
    toy = toy_splits()
    run = tmp_path / "noeval"
    run_distillation(resolve_config("random", "toy", 1, "quick", eval={"runs": 0}, **SMALL), run, data=toy, progress=False)
    info = load_run(run)
    assert info.evals == [] and any("no evaluation" in n for n in info.notes)
    page = parse(build_report([run]))
    assert page.table("comparison")[1][7] == "-" and len(page.images) == 2  # grids only; no bars, no curve
    with pytest.raises(FormatError, match="not a run folder"):
        load_run(tmp_path)
    with pytest.raises(FormatError, match="not a run folder"):
        load_run(tmp_path / "missing")


def test_cli_report(runs, tmp_path, capsys):
    dest = tmp_path / "r.html"
    assert main(["report", *map(str, runs), "--out", str(dest)]) == 0
    assert capsys.readouterr().out.strip() == str(dest)
    assert parse(dest.read_text(encoding="utf-8")).sections[0] == "comparison"
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("error:")
