"""The style-study plots: every method drawn, and the legend kept clear of the axes' labels."""

import pytest

matplotlib = pytest.importorskip("matplotlib")  # steer[plot]
matplotlib.use("Agg")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from steer.plots import plot_pareto  # noqa: E402


def _rows(n_methods: int, corpora=("a", "b", "c")) -> list[dict]:
    rows = []
    for corpus in corpora:
        for m in range(n_methods):
            for knob in (1.0, 2.0):
                hit = 0.1 * m % 1
                rows.append({"corpus": corpus, "method": f"method {m}", "knob": knob, "lam": knob,
                             "base_ppl": 10.0 + m + knob, "judge_hit": hit, "judge_hit_lo": hit * 0.9,
                             "judge_hit_hi": min(1.0, hit * 1.1), "distinct_2": 0.7})
    return rows


@pytest.fixture
def saved(monkeypatch):
    """The figures plot functions save (their canvases stay usable after plt.close)."""
    figs = []
    original = Figure.savefig

    def savefig(self, *args, **kwargs):
        figs.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figs


@pytest.mark.parametrize("n_methods", [3, 8, 14])
def test_pareto_legend_clear_of_axis_labels(tmp_path, saved, n_methods):
    plot_pareto(_rows(n_methods), tmp_path / "p.png", title="t")
    assert (tmp_path / "p.png").exists()
    fig = saved[-1]
    canvas = FigureCanvasAgg(fig)  # plt.close detached the pyplot canvas
    canvas.draw()
    renderer = canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    assert len(fig.legends[0].get_texts()) == n_methods
    for ax in fig.axes:
        if ax.get_visible() and ax.axison:
            label = ax.xaxis.label.get_window_extent(renderer)
            assert legend.y1 <= label.y0, (legend, label)


def test_pareto_nothing_to_plot_writes_nothing(tmp_path):
    rows = [{**r, "judge_hit": float("nan")} for r in _rows(2)]
    plot_pareto(rows, tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()
