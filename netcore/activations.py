"""Hidden-layer activations, by name.

Each entry pairs a function with its derivative written in terms of the activation's *output*
(which the forward pass keeps anyway), so the backward pass needs no extra cache. Models store the
name in their config; adding an activation is adding an entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Activation:
    forward: Callable[[np.ndarray], np.ndarray]  # a = f(z), computed in place on z
    backward: Callable[[np.ndarray, np.ndarray], np.ndarray]  # dz = da * f'(z), given a, in place


def _relu_forward(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0, out=z)


def _relu_backward(a: np.ndarray, grad_a: np.ndarray) -> np.ndarray:
    # ReLU'(z) is 1 where the output is positive, 0 elsewhere.
    grad_a *= a > 0
    return grad_a


def _tanh_forward(z: np.ndarray) -> np.ndarray:
    return np.tanh(z, out=z)


def _tanh_backward(a: np.ndarray, grad_a: np.ndarray) -> np.ndarray:
    # tanh'(z) = 1 - tanh(z)^2 = 1 - a^2
    grad_a *= 1 - a * a
    return grad_a


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation(_relu_forward, _relu_backward),
    "tanh": Activation(_tanh_forward, _tanh_backward),
}


def get_activation(name: str) -> Activation:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None
