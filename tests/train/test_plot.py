from lmforge.train.plot import write_loss_plot


def test_plot_written_with_train_and_eval(tmp_path):
    history = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 2, "eval_loss": 2.5}]
    assert write_loss_plot(tmp_path / "loss.svg", history)
    svg = (tmp_path / "loss.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 2


def test_no_plot_from_one_point(tmp_path):
    assert not write_loss_plot(tmp_path / "loss.svg", [{"step": 1, "loss": 3.0}])
    assert not (tmp_path / "loss.svg").exists()
