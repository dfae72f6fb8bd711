"""The training workflow around the generated kernels: data in, a trained model and its story out.

* :mod:`derive.runtime.fit` — :func:`fit`, the Python function behind ``derive train``;
* :mod:`derive.runtime.metrics` — accuracy, log loss, the classification report, RMSE, R², ...;
* :mod:`derive.runtime.early_stopping` — ``patience``: stop and go back to the best epoch;
* :mod:`derive.runtime.targets` — class labels in (one-hot rows), labels and probabilities out;
* :mod:`derive.runtime.checkpoint` — save / load ``.npz`` checkpoints, checked against the model;
* :mod:`derive.runtime.plots` — loss curves, gradient norms, decision boundaries (matplotlib);
* :mod:`derive.runtime.surface` — ``derive plot-surface``: optimizer paths on a 2-variable objective.
"""
