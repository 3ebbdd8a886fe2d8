"""The demo script's task and a tiny end-to-end run."""

import math

import jax
import numpy as np

from experiments import demo


def test_delayed_recall_labels_are_the_input_classes_delay_steps_back():
    xs, labels, mask = demo.make_batch(jax.random.key(0), 3, 10, 5, 4)
    classes = np.argmax(np.asarray(xs), axis=-1)
    np.testing.assert_array_equal(np.asarray(labels)[4:], classes[:-4])
    np.testing.assert_array_equal(np.asarray(mask)[:, 0], np.arange(10) >= 4)


def test_demo_runs_end_to_end(capsys):
    results = demo.main(["--steps", "5", "--length", "6", "--delay", "2", "--hidden-size", "4", "--cells", "lstm,gru"])
    assert set(results) == {"lstm", "gru"}
    assert all(math.isfinite(loss) and 0.0 <= acc <= 1.0 for loss, acc, _ in results.values())
    assert "chance accuracy 0.125" in capsys.readouterr().out
