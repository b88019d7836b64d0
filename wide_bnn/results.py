"""The result of a sampling run: plain ``(chain, draw, ...)`` arrays plus settings."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["SampleResult"]


@dataclasses.dataclass
class SampleResult:
    """Draws, sampler statistics, settings and timings of one :func:`wide_bnn.sample` run.

    Attributes
    ----------
    draws : dict of str to numpy.ndarray
        Recorded quantities, each ``(chain, draw, ...)``: ``"f_test"``
        ``(chain, draw, test_point, output)`` network outputs at ``x_test``;
        ``"f_test_mean"`` the same shape, ``E[f(x_test) | hidden]``;
        ``"projections"`` ``(chain, draw, num_projections)`` fixed random
        projections of the parameters; optionally ``"f_train"``, ``"f_train_mean"``
        and, with ``keep_params=True``, ``"params"`` entries named
        ``"params/<path>"``.
    stats : dict of str to numpy.ndarray
        Per-draw sampler statistics ``(chain, draw)`` with ArviZ names: ``lp``,
        ``acceptance_rate``, ``diverging``, and where the sampler has them
        ``energy``, ``n_steps``, ``step_size``, ``tree_depth``; plus
        ``num_grad_evals`` (log-density gradient evaluations per draw) and
        ``numerical_failures`` (int, summed over the thinning steps of a draw:
        proposals whose log density was not finite, e.g. a failed Cholesky
        factorisation or an overflow, and which were therefore rejected; see
        :mod:`wide_bnn.samplers` for what each sampler counts).
    x_test : numpy.ndarray or None
        Test inputs ``(test_point, ...)``.
    settings : dict
        Sampler, parameterisation, collapsed, chains, warm-up, samples, thinning,
        seed, sampler options, network description, widths, noise_std, dtype.
    timings : dict
        Seconds: ``compile``, ``warmup``, ``sampling``.
    complete : bool
        False when the run was interrupted (Ctrl-C) and holds fewer draws.
    data : RegressionData or None
        The training data (for observed-data groups and NNGP comparisons).
    """

    draws: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    x_test: np.ndarray | None
    settings: dict[str, Any]
    timings: dict[str, float]
    complete: bool = True
    data: Any = None

    @property
    def num_chains(self) -> int:
        """Number of chains."""
        return int(next(iter(self.stats.values())).shape[0])

    @property
    def num_draws(self) -> int:
        """Number of saved draws per chain."""
        return int(next(iter(self.stats.values())).shape[1])

    @property
    def num_grad_evals(self) -> int:
        """Total log-density gradient evaluations over all chains during sampling."""
        counts = self.stats.get("num_grad_evals")
        return int(np.sum(counts)) if counts is not None else 0

    def to_inference_data(self):
        """Convert to an :class:`arviz.InferenceData` (see :mod:`wide_bnn.diagnostics`)."""
        from wide_bnn.diagnostics import to_inference_data

        return to_inference_data(self)

    def _repr_html_(self) -> str:
        from wide_bnn.reporting import result_html

        return result_html(self)
