"""Normalizing flows: IAF and BNAF, NumPyro's networks followed by a diagonal affine map.

z = loc + exp(log_scale) * f(eps): NumPyro's autoregressive flows f (reversing the order between
layers, as NumPyro's AutoIAFNormal / AutoBNAFNormal do) followed by a diagonal affine map. Each
layer starts at (or, for BNAF, near) the identity, so a flow starts as the mean-field Normal that
``init`` describes: in the whitened coordinates of a Laplace start, the Laplace Gaussian itself.
The networks are rebuilt from the params' shapes at trace time, so params stay a pytree of arrays.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from ._guide import Guide, register_guide

__all__ = ["FlowParams", "IAF", "BNAF", "BNAF_GATE"]


class FlowParams(NamedTuple):
    loc: jax.Array  # (d,)
    log_scale: jax.Array  # (d,)
    layers: tuple  # one stax params pytree per flow layer


def _flow_options(name, options, d, default_flows, width_name, default_widths):
    """``(num_flows, widths)`` from a flow's ``guide_options``, checked."""
    allowed = ("num_flows", width_name)
    unknown = set(options) - set(allowed)
    if unknown:
        raise ValueError(f"guide {name!r} takes the options {sorted(allowed)}, got {sorted(unknown)}")
    if d < 2:
        raise ValueError(f"guide {name!r} needs a model of dimension >= 2 (an autoregressive flow on one "
                         f"variable is an affine map): use guide='meanfield'")
    num_flows = options.get("num_flows", default_flows)
    if isinstance(num_flows, bool) or not isinstance(num_flows, int) or num_flows < 1:
        raise ValueError(f"guide {name!r}: num_flows must be an integer >= 1, got {num_flows!r}")
    widths = options.get(width_name, default_widths(d))
    if (not isinstance(widths, (list, tuple)) or not widths
            or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths)):
        raise ValueError(f"guide {name!r}: {width_name} must be a non-empty list of integers >= 1, got {widths!r}")
    return num_flows, tuple(widths)


def _flow_transform_log_prob(layer_fn):
    def transform_log_prob(params, eps):
        x = eps
        log_det = jnp.zeros(eps.shape[:-1], eps.dtype)
        for i, layer_params in enumerate(params.layers):
            if i > 0:
                x = x[..., ::-1]
            x, layer_log_det = layer_fn(layer_params, x)
            log_det = log_det + layer_log_det
        z = params.loc + jnp.exp(params.log_scale) * x
        log_base = dist.Normal(0.0, 1.0).log_prob(eps).sum(-1)
        return z, log_base - log_det - jnp.sum(params.log_scale)

    return transform_log_prob


def _flow_guide(name, layer_init, transform_log_prob, log_prob, default_flows, width_name, default_widths):
    def init(key, loc, scale, options):
        num_flows, widths = _flow_options(name, options, loc.shape[-1], default_flows, width_name, default_widths)
        keys = jax.random.split(key, num_flows)
        layers = tuple(layer_init(k, loc.shape[-1], widths) for k in keys)
        return FlowParams(loc, jnp.log(scale), layers)

    return register_guide(
        Guide(
            name=name,
            init=init,
            noise_dim=lambda params: params.loc.shape[-1],
            transform=lambda params, eps: transform_log_prob(params, eps)[0],
            log_prob=log_prob,
            entropy=None,
            mean=None,
            std=None,
            whitening="full",
            transform_log_prob=transform_log_prob,
            supports_stl=False,
        )
    )


@functools.lru_cache(maxsize=None)
def _jit_init(init_fn, d):
    # A stax init run eagerly compiles each of its ops on its own; jitted, it is one compile.
    return jax.jit(lambda key: init_fn(key, (d,))[1])


@functools.lru_cache(maxsize=None)
def _arn(d, hidden_dims):
    from jax.example_libraries import stax
    from numpyro.nn import AutoregressiveNN

    # Concrete masks even when first built inside a trace: the networks are cached across traces.
    with jax.ensure_compile_time_eval():
        return AutoregressiveNN(d, list(hidden_dims), permutation=jnp.arange(d), nonlinearity=stax.Elu)


def _iaf_init(key, d, hidden_dims):
    params = _jit_init(_arn(d, hidden_dims)[0], d)(key)
    # A zero last layer outputs mean 0 and log scale 0: the identity, from which every weight
    # still receives a gradient.
    *hidden, (w, b) = params
    return (*hidden, (jnp.zeros_like(w), jnp.zeros_like(b)))


def _iaf_transform(layer_params):
    from numpyro.distributions.flows import InverseAutoregressiveTransform

    d = layer_params[-1][0].shape[-1] // 2
    hidden_dims = tuple(p[0].shape[-1] for p in layer_params[:-1] if p)
    apply = _arn(d, hidden_dims)[1]
    return InverseAutoregressiveTransform(functools.partial(apply, layer_params))


def _iaf_layer(layer_params, x):
    y, log_scale = _iaf_transform(layer_params).call_with_intermediates(x)
    return y, log_scale.sum(-1)


def _iaf_log_prob(params, z):
    # Invert layer by layer (each inverse is d sequential passes of its network), then read the
    # log density off the forward pass from the recovered noise.
    x = (z - params.loc) * jnp.exp(-params.log_scale)
    for i in reversed(range(len(params.layers))):
        x = _iaf_transform(params.layers[i]).inv(x)
        if i > 0:
            x = x[..., ::-1]
    return _iaf_transform_log_prob(params, x)[1]


_iaf_transform_log_prob = _flow_transform_log_prob(_iaf_layer)
IAF = _flow_guide("iaf", _iaf_init, _iaf_transform_log_prob, _iaf_log_prob, 2, "hidden_dims", lambda d: [max(2 * d, 16)] * 2)


@functools.lru_cache(maxsize=None)
def _bnaf(d, hidden_factors):
    from numpyro.nn import BlockNeuralAutoregressiveNN

    with jax.ensure_compile_time_eval():  # concrete masks, as for _arn
        return BlockNeuralAutoregressiveNN(d, list(hidden_factors), residual="gated")


BNAF_GATE = -3.0  # sigmoid(-3) = 0.05: the gated residual starts 95% identity


def _bnaf_init(key, d, hidden_factors):
    return _bnaf_init_fn(d, hidden_factors)(key)


@functools.lru_cache(maxsize=None)
def _bnaf_init_fn(d, hidden_factors):
    # NumPyro's init fills the block matrices one block per dimension: run eagerly that is a
    # compile per op (16 s on eight schools), jitted a program that grows with d (9 s). The
    # weights outside the blocks the masks keep are never read, so whole matrices are drawn at
    # once, from the distributions NumPyro's init uses: Glorot-uniform per block, log-uniform weight
    # scales.
    network_init = _bnaf(d, hidden_factors)[0]
    template = jax.eval_shape(lambda k: network_init(k, (d,))[1], jax.random.key(0))
    fan_out, (network, identity), _ = template

    def init(key):
        layers = []
        for i, layer in enumerate(network):
            if not layer:
                layers.append(())
                continue
            k_w, k_s, k_b = jax.random.split(jax.random.fold_in(key, i), 3)
            w, ws, b = layer
            limit = jnp.sqrt(6.0 / ((w.shape[0] + w.shape[1]) / d))
            layers.append((
                jax.random.uniform(k_w, w.shape, minval=-limit, maxval=limit),
                jnp.log(jax.random.uniform(k_s, ws.shape)),
                (jax.random.uniform(k_b, b.shape) - 0.5) * (2 / jnp.sqrt(b.shape[0])),
            ))
        return (fan_out, (layers, identity), jnp.asarray(BNAF_GATE, jnp.float32))

    return jax.jit(init)


def _bnaf_layer(layer_params, x):
    network = layer_params[1][0]
    d = network[-1][0].shape[-1]
    hidden_factors = tuple(p[0].shape[-1] // d for p in network[:-1] if p)
    y, log_det = _bnaf(d, hidden_factors)[1](layer_params, x)
    return y, log_det.sum(-1)


BNAF = _flow_guide("bnaf", _bnaf_init, _flow_transform_log_prob(_bnaf_layer), None, 1, "hidden_factors", lambda d: [8, 8])
