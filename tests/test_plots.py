"""The learning curves' axes."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from cnnlab.history import EpochResult
from cnnlab.plots import plot_curves


@pytest.mark.parametrize("epochs", [1, 2, 3])
@pytest.mark.parametrize("metric", ["accuracy", "loss"])
def test_epoch_ticks_are_whole_numbers(epochs, metric):
    history = [EpochResult(e, 0.5 / e, 0.8 + e / 100, 0.6 / e, 0.78 + e / 100, 1.0) for e in range(1, epochs + 1)]
    figure = plot_curves(history, metric)
    try:
        figure.canvas.draw()  # ticks and their labels as the saved PNG shows them
        axis = figure.axes[0]
        low, high = axis.get_xlim()
        shown = [tick for tick in axis.get_xticks() if low <= tick <= high]
        assert shown and all(float(tick).is_integer() for tick in shown), shown
        assert {int(tick) for tick in shown} >= set(range(1, epochs + 1))  # every epoch has its tick
        labels = [label.get_text().replace("\N{MINUS SIGN}", "-") for label in axis.get_xticklabels()]
        assert all(text.lstrip("-").isdigit() for text in labels if text), labels
    finally:
        plt.close(figure)
