"""Guide families over the flat unconstrained space.

A guide family is a :class:`Guide`: a name and a few pure functions over a params pytree. Every
reparameterised family draws ``z = transform(params, eps)`` from standard-normal noise ``eps`` of
shape ``(n, noise_dim(params))``, so the engine can draw a whole chunk's noise in one call. Guides
know nothing of models. A new family is registered with :func:`register_guide`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

__all__ = [
    "Guide",
    "GUIDES",
    "register_guide",
    "get_guide",
    "draw",
    "transform_log_prob",
    "dimension",
    "MeanFieldParams",
    "FullRankParams",
    "LowRankParams",
    "DeltaParams",
]


class Guide(NamedTuple):
    """A guide family: pure functions over its params pytree (``d`` is the model's dimension).

    - ``init(key, loc, scale, options) -> params``: ``loc``, ``scale`` of shape ``(d,)``.
    - ``noise_dim(params) -> int``: width of the standard-normal noise ``transform`` takes.
    - ``transform(params, eps) -> z``: ``eps`` ``(n, noise_dim)`` to draws ``z`` ``(n, d)``.
    - ``log_prob(params, z) -> (n,)``: log density at any points ``z`` ``(n, d)``, or ``None``
      when the family cannot evaluate it (a flow without an inverse).
    - ``entropy(params) -> ()``: closed-form entropy, or ``None`` when the family has none.
    - ``mean(params) -> (d,)`` and ``std(params) -> (d,)``: closed-form marginal moments in the
      flat space, or ``None`` (flows).
    - ``point``: True for point-mass families (MAP), which have no density.
    - ``whitening``: ``"full"`` or ``"diag"``: the preconditioner the family is optimised under
      (a full square root of the starting covariance, or its diagonal).
    - ``transform_log_prob(params, eps) -> (z, log_q)``: draws and their log density in one pass,
      where that is cheaper than ``log_prob`` (flows: no inverse); ``None`` to use ``log_prob``.
    - ``supports_stl``: whether stick-the-landing is served (it needs ``log_prob`` at the draws
      under frozen params, an inverse pass for a flow).
    - ``fitted_on``: what the engine optimises: ``"draws"`` (an objective over the guide's draws),
      ``"log_joint"`` (the location alone, on the log joint: MAP), ``"log_density"`` (the location
      alone, on the flat log density: the mode a Laplace approximation is taken at) or ``"start"``
      (nothing: the starting stage fits the family; training steps only estimate its ELBO).
    - ``refine(log_density, params) -> params``: recomputes params that follow from the location
      (Laplace: the covariance from the Hessian there); the engine applies it after every chunk.
    - ``start``: the starting stage the family needs whatever ``Config.init`` says (``None``: any).
    """

    name: str
    init: Callable[..., Any]
    noise_dim: Callable[[Any], int]
    transform: Callable[[Any, jax.Array], jax.Array]
    log_prob: Optional[Callable[[Any, jax.Array], jax.Array]]
    entropy: Optional[Callable[[Any], jax.Array]]
    mean: Optional[Callable[[Any], jax.Array]]
    std: Optional[Callable[[Any], jax.Array]]
    point: bool = False
    whitening: str = "diag"
    transform_log_prob: Optional[Callable[[Any, jax.Array], tuple]] = None
    supports_stl: bool = True
    fitted_on: str = "draws"
    refine: Optional[Callable[[Callable, Any], Any]] = None
    start: Optional[str] = None


GUIDES: dict[str, Guide] = {}


def register_guide(guide: Guide) -> Guide:
    """Add ``guide`` to the registry under ``guide.name`` (replacing any family of that name)."""
    if not isinstance(guide, Guide):
        raise TypeError(f"register_guide expects a vibench.guides.Guide, got {type(guide).__name__}")
    GUIDES[guide.name] = guide
    return guide


def get_guide(name: str) -> Guide:
    """The registered family called ``name``; a ValueError lists the known names otherwise."""
    try:
        return GUIDES[name]
    except KeyError:
        raise ValueError(f"unknown guide {name!r}; known guides: {sorted(GUIDES)}") from None


def draw(guide: Guide, params: Any, key: jax.Array, n: int) -> jax.Array:
    """``n`` draws ``(n, d)`` from the guide, using ``key`` for the noise."""
    eps = jax.random.normal(key, (n, guide.noise_dim(params)))
    return guide.transform(params, eps)


def transform_log_prob(guide: Guide, params: Any, eps: jax.Array) -> tuple:
    """Draws ``z`` ``(n, d)`` from noise ``eps`` ``(n, noise_dim)`` and their log density ``(n,)``
    (point guides: NaN, they have none)."""
    if guide.point:
        z = guide.transform(params, eps)
        return z, jnp.full(z.shape[:-1], jnp.nan, z.dtype)
    if guide.transform_log_prob is not None:
        return guide.transform_log_prob(params, eps)
    z = guide.transform(params, eps)
    return z, guide.log_prob(params, z)


def dimension(guide: Guide, params: Any) -> int:
    """The dimension ``d`` of the space ``params`` is a guide over (no computation)."""
    shape = jax.eval_shape(guide.transform, params, jax.ShapeDtypeStruct((1, guide.noise_dim(params)), jnp.float32))
    return shape.shape[-1]


def _highest_precision(fn):
    # NVIDIA GPUs run float32 products as TF32 by default; Cholesky factors and triangular solves
    # lose too many digits that way, so the guides' linear algebra asks for full float32.
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    return wrapped


def _normal_entropy_const(d: int) -> float:
    return 0.5 * d * (1.0 + jnp.log(2.0 * jnp.pi))


# ---------------------------------------------------------------- mean-field Normal (ADVI)


class MeanFieldParams(NamedTuple):
    loc: jax.Array  # (d,)
    log_scale: jax.Array  # (d,)


def _meanfield_init(key, loc, scale, options):
    del key
    _no_options("meanfield", options)
    return MeanFieldParams(loc, jnp.log(scale))


def _meanfield_transform(params, eps):
    return params.loc[None] + jnp.exp(params.log_scale)[None] * eps


def _meanfield_log_prob(params, z):
    return dist.Normal(params.loc, jnp.exp(params.log_scale), validate_args=False).log_prob(z).sum(-1)


def _meanfield_entropy(params):
    return jnp.sum(params.log_scale) + _normal_entropy_const(params.loc.shape[-1])


MEANFIELD = register_guide(
    Guide(
        name="meanfield",
        init=_meanfield_init,
        noise_dim=lambda params: params.loc.shape[-1],
        transform=_meanfield_transform,
        log_prob=_meanfield_log_prob,
        entropy=_meanfield_entropy,
        mean=lambda params: params.loc,
        std=lambda params: jnp.exp(params.log_scale),
    )
)


# ---------------------------------------------------------------- full-rank Normal (Cholesky)


class FullRankParams(NamedTuple):
    loc: jax.Array  # (d,)
    tril: jax.Array  # (d, d): strictly-lower part of the Cholesky factor, log of its diagonal


def _scale_tril(params):
    raw = params.tril
    return jnp.tril(raw, -1) + jnp.diag(jnp.exp(jnp.diagonal(raw)))


def _fullrank_init(key, loc, scale, options, name="fullrank"):
    del key
    _no_options(name, options)
    return FullRankParams(loc, jnp.diag(jnp.log(scale)))


@_highest_precision
def _fullrank_transform(params, eps):
    return params.loc[None] + eps @ _scale_tril(params).T


@_highest_precision
def _fullrank_log_prob(params, z):
    return dist.MultivariateNormal(params.loc, scale_tril=_scale_tril(params), validate_args=False).log_prob(z)


def _fullrank_entropy(params):
    return jnp.sum(jnp.diagonal(params.tril)) + _normal_entropy_const(params.loc.shape[-1])


@_highest_precision
def _fullrank_std(params):
    return jnp.sqrt(jnp.sum(_scale_tril(params) ** 2, axis=-1))


FULLRANK = register_guide(
    Guide(
        name="fullrank",
        init=_fullrank_init,
        noise_dim=lambda params: params.loc.shape[-1],
        transform=_fullrank_transform,
        log_prob=_fullrank_log_prob,
        entropy=_fullrank_entropy,
        mean=lambda params: params.loc,
        std=_fullrank_std,
        whitening="full",
    )
)


# ---------------------------------------------------------------- low-rank plus diagonal Normal


class LowRankParams(NamedTuple):
    loc: jax.Array  # (d,)
    cov_factor: jax.Array  # (d, r): covariance is cov_factor @ cov_factor.T + diag(exp(2 log_diag))
    log_diag: jax.Array  # (d,)


def _lowrank_init(key, loc, scale, options):
    rank = options.get("rank", min(4, loc.shape[-1]))
    unknown = set(options) - {"rank"}
    if unknown:
        raise ValueError(f"guide 'lowrank' takes only the option 'rank', got {sorted(unknown)}")
    if not isinstance(rank, int) or not 1 <= rank <= loc.shape[-1]:
        raise ValueError(
            f"rank must be an integer in [1, {loc.shape[-1]}] (the model's dimension), got {rank!r}"
        )
    # A zero factor is a saddle of the entropy; a small random one lets every column move.
    factor = 1e-2 * scale[:, None] * jax.random.normal(key, (loc.shape[-1], rank), loc.dtype)
    return LowRankParams(loc, factor, jnp.log(scale))


@_highest_precision
def _lowrank_transform(params, eps):
    rank = params.cov_factor.shape[-1]
    return params.loc[None] + eps[:, :rank] @ params.cov_factor.T + jnp.exp(params.log_diag)[None] * eps[:, rank:]


def _lowrank_dist(params):
    return dist.LowRankMultivariateNormal(params.loc, params.cov_factor, jnp.exp(2 * params.log_diag), validate_args=False)


@_highest_precision
def _lowrank_log_prob(params, z):
    return _lowrank_dist(params).log_prob(z)


@_highest_precision
def _lowrank_entropy(params):
    return _lowrank_dist(params).entropy()


LOWRANK = register_guide(
    Guide(
        name="lowrank",
        init=_lowrank_init,
        noise_dim=lambda params: params.cov_factor.shape[-1] + params.loc.shape[-1],
        transform=_lowrank_transform,
        log_prob=_lowrank_log_prob,
        entropy=_lowrank_entropy,
        mean=lambda params: params.loc,
        std=lambda params: jnp.sqrt(jnp.sum(params.cov_factor**2, -1) + jnp.exp(2 * params.log_diag)),
        whitening="full",
    )
)


# ---------------------------------------------------------------- Delta (a point: MAP)


class DeltaParams(NamedTuple):
    loc: jax.Array  # (d,)


def _delta_init(key, loc, scale, options):
    del key, scale
    _no_options("delta", options)
    return DeltaParams(loc)


DELTA = register_guide(
    Guide(
        name="delta",
        init=_delta_init,
        noise_dim=lambda params: 0,
        transform=lambda params, eps: jnp.broadcast_to(params.loc, eps.shape[:1] + params.loc.shape),
        log_prob=lambda params, z: jnp.zeros(z.shape[:-1], z.dtype),
        entropy=None,
        mean=lambda params: params.loc,
        std=lambda params: jnp.zeros_like(params.loc),
        point=True,
        fitted_on="log_joint",
    )
)


# ---------------------------------------------------------------- Laplace and Pathfinder
#
# Both are full-rank Normals (the same params and functions as "fullrank"); they differ in how
# they are fitted. Laplace: the engine moves the location to the mode of the flat log density
# (Jacobian included, like NumPyro's AutoLaplaceApproximation) and ``refine`` sets the covariance
# to the inverse of minus the Hessian there. Pathfinder: the starting stage (BlackJAX's Pathfinder)
# fits the Gaussian and whitens by it, so in its coordinates the family is the standard Normal its
# init gives (``loc`` 0, ``scale`` 1), and training steps only estimate its ELBO.

LAPLACE_EIGEN_FLOOR = 1e-6  # directions flatter than this fraction of the sharpest one are floored


@_highest_precision
def _laplace_refine(log_density, params):
    precision = -jax.hessian(log_density)(params.loc)
    precision = 0.5 * (precision + precision.T)
    # A mode with flat or negative curvature (a ridge, a saddle) has no Laplace Gaussian; flooring
    # the eigenvalues keeps the covariance finite, and its PSIS k-hat then reports the poor fit.
    values, vectors = jnp.linalg.eigh(precision)
    values = jnp.maximum(values, LAPLACE_EIGEN_FLOOR * jnp.max(jnp.abs(values)) + jnp.finfo(values.dtype).tiny)
    covariance = (vectors / values) @ vectors.T
    chol = jnp.linalg.cholesky(0.5 * (covariance + covariance.T))
    return FullRankParams(params.loc, jnp.tril(chol, -1) + jnp.diag(jnp.log(jnp.diagonal(chol))))


LAPLACE = register_guide(
    FULLRANK._replace(
        name="laplace",
        init=functools.partial(_fullrank_init, name="laplace"),
        fitted_on="log_density",
        refine=_laplace_refine,
        supports_stl=False,
    )
)

PATHFINDER = register_guide(
    FULLRANK._replace(
        name="pathfinder",
        init=functools.partial(_fullrank_init, name="pathfinder"),
        fitted_on="start",
        supports_stl=False,
        start="pathfinder",
    )
)


# ---------------------------------------------------------------- normalizing flows (IAF, BNAF)
#
# z = loc + exp(log_scale) * f(eps): NumPyro's autoregressive flows f (reversing the order between
# layers, as NumPyro's AutoIAFNormal / AutoBNAFNormal do) followed by a diagonal affine map. Each
# layer starts at (or, for BNAF, near) the identity, so a flow starts as the mean-field Normal that
# ``init`` describes: in the whitened coordinates of a Laplace start, the Laplace Gaussian itself.
# The networks are rebuilt from the params' shapes at trace time, so params stay a pytree of arrays.


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


def _no_options(name, options):
    if options:
        raise ValueError(f"guide {name!r} takes no options, got {sorted(options)}")
