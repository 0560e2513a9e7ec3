"""Tests of regularizer specs and spec-tree resolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_ramda as oxr
from optax_ramda._regularizers import is_spec

PARAMS = {
  "conv": {"kernel": jnp.ones((3, 3, 4, 8)), "bias": jnp.ones(8)},
  "dense": {"kernel": jnp.ones((8, 2)), "bias": jnp.ones(2)},
}


def _resolved(regularizer, params=PARAMS):
  specs = oxr.resolve_specs(regularizer, params)
  return dict(
    zip(
      (
        jax.tree_util.keystr(p)
        for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]
      ),
      jax.tree.leaves(specs, is_leaf=is_spec),
      strict=True,
    )
  )


def test_prefix_spec_applies_to_the_whole_subtree():
  spec = oxr.group_lasso(axes=(-1,))
  resolved = _resolved({"conv": None, "dense": spec})
  assert resolved["['dense']['kernel']"] == oxr.group_lasso(axes=(1,))  # Normalized.
  assert resolved["['dense']['bias']"] == oxr.group_lasso(axes=(0,))
  assert resolved["['conv']['kernel']"] is None


def test_callable_spec_tree():
  def specs(params):
    return jax.tree.map(lambda p: oxr.l1() if p.ndim > 1 else None, params)

  resolved = _resolved(specs)
  assert resolved["['conv']['kernel']"] == oxr.l1()
  assert resolved["['conv']['bias']"] is None


def test_specs_match_paths_through_extra_nodes():
  """Flax NNX states end paths in `.value`; a spec for the layer still applies."""
  from flax import nnx

  model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
  state = nnx.state(model, nnx.Param)
  specs = oxr.resolve_specs({"kernel": oxr.group_lasso(1), "bias": None}, state)
  leaves = jax.tree.leaves(specs, is_leaf=is_spec)
  assert sorted(map(str, leaves)) == sorted(["None", str(oxr.group_lasso(1))])


def test_shape_dtype_structs_are_enough():
  structs = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), PARAMS)
  resolved = _resolved({"conv": {"kernel": oxr.group_lasso((0, 1, 3)), "bias": None},
                        "dense": None}, structs)  # fmt: skip
  assert resolved["['conv']['kernel']"].axes == (0, 1, 3)


@pytest.mark.parametrize(
  ("make", "match"),
  [
    (lambda: oxr.group_lasso(axes=()), "at least one"),
    (lambda: oxr.group_lasso(axes=(1, 1)), "distinct"),
    (lambda: oxr.group_lasso(axes=(1.5,)), "integers"),
    (lambda: oxr.group_lasso(axes=(1,), weight=-1.0), "weight"),
    (lambda: oxr.group_lasso(axes=(1,), weight="cube"), "weight"),
  ],
)
def test_bad_specs_raise_at_construction(make, match):
  with pytest.raises(ValueError, match=match):
    make()


def test_wrong_rank_names_the_leaf_and_shape():
  with pytest.raises(ValueError, match=r"\['dense'\]\['bias'\] of shape \(2,\)"):
    oxr.resolve_specs({"conv": None, "dense": oxr.group_lasso(axes=(1,))}, PARAMS)


def test_regularizer_value_matches_numpy():
  rng = np.random.default_rng(0)
  params = {"w": rng.normal(size=(5, 3)), "c": rng.normal(size=(2, 2, 3, 4)),
            "v": rng.normal(size=(6,)), "b": rng.normal(size=(3,))}  # fmt: skip
  specs = {"w": oxr.group_lasso((1,)), "c": oxr.group_lasso((0, 1, 3), weight=0.5),
           "v": oxr.l1(), "b": None}  # fmt: skip
  expected = (
    np.sqrt(3) * np.linalg.norm(params["w"], axis=1).sum()
    + 0.5 * np.sqrt(np.sum(params["c"] ** 2, axis=(0, 1, 3))).sum()
    + np.abs(params["v"]).sum()
  )
  value = oxr.regularizer_value(jax.tree.map(jnp.asarray, params), specs)
  np.testing.assert_allclose(float(value), expected, rtol=1e-5)
