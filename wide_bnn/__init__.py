"""wide_bnn: fast, diagnosed posterior sampling for wide Bayesian neural networks.

The public API is re-exported here (see ``__all__``). Diagnostics, plots,
reports and width sweeps are loaded on first use so that ``import wide_bnn``
stays light (they pull in ArviZ, pandas and matplotlib).
"""

import importlib

from wide_bnn import datasets
from wide_bnn.activations import ACTIVATIONS, Activation, get_activation
from wide_bnn.data import RegressionData
from wide_bnn.gaussian import ReadoutConditional
from wide_bnn.linalg import CholeskyError, NumericalWarning
from wide_bnn.nets import MLPSpec, Network, mlp, network, resnet
from wide_bnn.nngp import (
    NNGPKernelEstimate,
    NNGPPosterior,
    nngp_kernel,
    nngp_kernel_mc,
    nngp_log_marginal_likelihood,
    nngp_predict,
)
from wide_bnn.posterior import log_likelihood, log_posterior
from wide_bnn.reprior import Repriorisation
from wide_bnn.results import SampleResult
from wide_bnn.samplers import DEFAULT_SAMPLER, SAMPLERS
from wide_bnn.sampling import sample

__version__ = "0.1.0"

# name -> module, imported on first attribute access (PEP 562)
_LAZY = {
    "Diagnosis": "wide_bnn.diagnostics",
    "DiagnosticWarning": "wide_bnn.diagnostics",
    "NNGPComparison": "wide_bnn.diagnostics",
    "compare_with_nngp": "wide_bnn.diagnostics",
    "diagnose": "wide_bnn.diagnostics",
    "load_inference_data": "wide_bnn.diagnostics",
    "save_inference_data": "wide_bnn.diagnostics",
    "to_inference_data": "wide_bnn.diagnostics",
    "plot_distance_vs_width": "wide_bnn.plots",
    "plot_ess_vs_width": "wide_bnn.plots",
    "plot_predictive_vs_nngp": "wide_bnn.plots",
    "plot_trace": "wide_bnn.plots",
    "report": "wide_bnn.reporting",
    "Sweep": "wide_bnn.sweep",
    "width_sweep": "wide_bnn.sweep",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'wide_bnn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ACTIVATIONS",
    "DEFAULT_SAMPLER",
    "SAMPLERS",
    "Activation",
    "CholeskyError",
    "MLPSpec",
    "NNGPKernelEstimate",
    "NNGPPosterior",
    "Network",
    "NumericalWarning",
    "ReadoutConditional",
    "RegressionData",
    "Repriorisation",
    "SampleResult",
    "__version__",
    "datasets",
    "get_activation",
    "log_likelihood",
    "log_posterior",
    "mlp",
    "network",
    "nngp_kernel",
    "nngp_kernel_mc",
    "nngp_log_marginal_likelihood",
    "nngp_predict",
    "resnet",
    "sample",
    *sorted(_LAZY),
]
