"""wide_bnn: fast, diagnosed posterior sampling for wide Bayesian neural networks.

The public API is re-exported here; see ``__all__``.
"""

from wide_bnn.activations import ACTIVATIONS, Activation, get_activation
from wide_bnn.data import RegressionData
from wide_bnn.nets import MLPSpec, Network, mlp, network, resnet
from wide_bnn.posterior import log_likelihood, log_posterior
from wide_bnn.results import SampleResult

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "MLPSpec",
    "Network",
    "RegressionData",
    "SampleResult",
    "__version__",
    "get_activation",
    "log_likelihood",
    "log_posterior",
    "mlp",
    "network",
    "resnet",
]
