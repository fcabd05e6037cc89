"""The load test's plot: the legend never covers a point, and no label leaves its panel."""

from __future__ import annotations

from runtime.loadtest.report import plot_figure, plot_png


def _rows() -> list[dict[str, object]]:
    levels = [(1, 400.0, 1.0), (2, 700.0, 1.9), (4, 1100.0, 3.7), (8, 1500.0, 7.2), (16, 1580.0, 12.5)]
    triton = [
        dict(artifact="resnet_cifar", variant="fp32", mode="triton", protocol=protocol, batch_size=1,
             concurrency=c, throughput_ips=ips * scale, mean_formed_batch=formed)
        for protocol, scale in (("grpc", 1.0), ("http", 0.8))
        for c, ips, formed in levels
    ]  # fmt: skip
    local = dict(artifact="resnet_cifar", variant="fp32", mode="local", protocol=None, batch_size=1,
                 concurrency=1, throughput_ips=900.0, mean_formed_batch=None)  # fmt: skip
    return [*triton, local]


def test_legend_covers_no_point_and_labels_stay_in_their_panel() -> None:
    fig = plot_figure(_rows())
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    points = [
        ax.transData.transform(xy) for line in ax.get_lines() for xy in line.get_xydata() if line.get_marker() == "o"
    ]
    assert len(points) == 10 and not any(legend.contains(x, y) for x, y in points)
    panel = ax.get_window_extent(renderer)
    for text in ax.texts:  # the ×n formed-batch labels and the local onnxruntime line's
        box = text.get_window_extent(renderer)
        assert panel.x0 <= box.x0 and box.x1 <= panel.x1 and box.y1 <= panel.y1, f"{text.get_text()} leaves the panel"
    assert plot_png(_rows())[:8] == b"\x89PNG\r\n\x1a\n"
