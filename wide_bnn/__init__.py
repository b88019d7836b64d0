"""wide_bnn: fast, diagnosed posterior sampling for wide Bayesian neural networks.

The public API is re-exported here (see ``__all__``). Every name is loaded on first
use (PEP 562), so ``import wide_bnn`` imports neither JAX nor NumPy: the command line
(:mod:`wide_bnn.cli`) can still set ``OPENBLAS_NUM_THREADS`` before they load, and
diagnostics, plots and reports pull in ArviZ, pandas and matplotlib only when used.
"""

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it, imported on first attribute access
_LAZY = {
    "ACTIVATIONS": "wide_bnn.activations",
    "Activation": "wide_bnn.activations",
    "get_activation": "wide_bnn.activations",
    "RegressionData": "wide_bnn.data",
    "ReadoutConditional": "wide_bnn.gaussian",
    "CholeskyError": "wide_bnn.linalg",
    "NumericalWarning": "wide_bnn.linalg",
    "MLPSpec": "wide_bnn.nets",
    "Network": "wide_bnn.nets",
    "mlp": "wide_bnn.nets",
    "network": "wide_bnn.nets",
    "resnet": "wide_bnn.nets",
    "NNGPKernelEstimate": "wide_bnn.nngp",
    "NNGPPosterior": "wide_bnn.nngp",
    "nngp_kernel": "wide_bnn.nngp",
    "nngp_kernel_mc": "wide_bnn.nngp",
    "nngp_log_marginal_likelihood": "wide_bnn.nngp",
    "nngp_predict": "wide_bnn.nngp",
    "log_likelihood": "wide_bnn.posterior",
    "log_posterior": "wide_bnn.posterior",
    "Repriorisation": "wide_bnn.reprior",
    "SampleResult": "wide_bnn.results",
    "DEFAULT_SAMPLER": "wide_bnn.samplers",
    "SAMPLERS": "wide_bnn.samplers",
    "sample": "wide_bnn.sampling",
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
    if name == "datasets":  # a submodule, not a name inside one
        return importlib.import_module("wide_bnn.datasets")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'wide_bnn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | {"datasets"})


__all__ = ["__version__", "datasets", *sorted(_LAZY)]
