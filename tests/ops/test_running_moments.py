"""spectra.RunningMoments (pybind11 over the native accumulator) against numpy."""

import numpy as np
import pytest
import torch

import spectra


def test_docstring_example_and_repr():
    acc = spectra.RunningMoments(2)
    acc.update(torch.tensor([[1.0, 10.0], [3.0, float("nan")]]))
    assert acc.mean().tolist() == [2.0, 10.0]
    assert acc.count().tolist() == [2, 1]
    assert acc.nan_count().tolist() == [0, 1]
    assert repr(acc) == "RunningMoments(n_groups=2)"
    assert acc.n_groups == 2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_batches_match_numpy_over_everything(dtype):
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(n, 4, 5, generator=gen) * 3 + 100).to(dtype) for n in (7, 1, 20, 3)]
    batches[1][0, 0, 2] = float("nan")
    acc = spectra.RunningMoments(5)
    for batch in batches:
        acc.update(batch)
    data = torch.cat([b.reshape(-1, 5) for b in batches]).double().numpy()
    np.testing.assert_array_equal(acc.count().numpy(), (~np.isnan(data)).sum(0))
    np.testing.assert_array_equal(acc.nan_count().numpy(), np.isnan(data).sum(0))
    np.testing.assert_allclose(acc.mean().numpy(), np.nanmean(data, 0), rtol=1e-13)
    np.testing.assert_allclose(acc.variance().numpy(), np.nanvar(data, 0), rtol=1e-10)
    np.testing.assert_allclose(acc.variance(ddof=1).numpy(), np.nanvar(data, 0, ddof=1), rtol=1e-10)
    np.testing.assert_array_equal(acc.min().numpy(), np.nanmin(data, 0))
    np.testing.assert_array_equal(acc.max().numpy(), np.nanmax(data, 0))


def test_merge_equals_one_pass_and_non_contiguous_input():
    x = torch.randn(50, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    whole, left, right = spectra.RunningMoments(3), spectra.RunningMoments(3), spectra.RunningMoments(3)
    whole.update(x[:, ::2])  # strided columns
    left.update(x[:20, ::2].t().contiguous().t())  # column-major layout
    right.update(x[20:, ::2])
    left.merge(right)
    # Merged vs one-pass means differ by rounding of O(1) terms: an absolute bound (a mean near 0 has
    # no meaningful relative error).
    torch.testing.assert_close(left.mean(), whole.mean(), rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(left.variance(), whole.variance(), rtol=1e-12, atol=0)
    assert left.count().tolist() == [50, 50, 50]


def test_empty_groups_report_nan_and_reset_clears():
    acc = spectra.RunningMoments(2)
    assert torch.isnan(acc.mean()).all() and torch.isnan(acc.min()).all()
    acc.update(torch.ones(3, 2))
    acc.reset()
    assert acc.count().tolist() == [0, 0]


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="n_groups must be >= 1"):
        spectra.RunningMoments(0)
    acc = spectra.RunningMoments(3)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\)"):
        acc.update(torch.ones(4, 2))
    with pytest.raises(TypeError, match="allowed dtypes are float16, bfloat16, float32, float64"):
        acc.update(torch.ones(4, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="other has 2 groups"):
        acc.merge(spectra.RunningMoments(2))
    with pytest.raises(ValueError, match="ddof must be 0 or 1"):
        acc.variance(ddof=2)


def test_pickle_round_trip_merges_like_the_original():
    import pickle

    x = torch.randn(40, 3, dtype=torch.float64)
    x[3, 1] = float("nan")
    shard_a, shard_b, whole = spectra.RunningMoments(3), spectra.RunningMoments(3), spectra.RunningMoments(3)
    shard_a.update(x[:25])
    shard_b.update(x[25:])
    whole.update(x)
    restored = pickle.loads(pickle.dumps(shard_a))
    restored.merge(pickle.loads(pickle.dumps(shard_b)))
    for stat in ("count", "nan_count", "mean", "min", "max"):
        torch.testing.assert_close(getattr(restored, stat)(), getattr(whole, stat)(), rtol=1e-14, atol=0)
    torch.testing.assert_close(restored.variance(1), whole.variance(1), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="unsupported pickled state"):
        spectra.RunningMoments.__new__(spectra.RunningMoments).__setstate__((2, [], [], [], [], [], []))
