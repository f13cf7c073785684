"""spectra.SecondMoments against its twin spectra.reference.effective_rank, merging, bad input."""

import pytest
import torch

import spectra
from spectra.ops import reference


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("centered", [True, False])
def test_effective_ranks_match_the_twin(dtype, centered):
    gen = torch.Generator().manual_seed(0)
    scales = torch.tensor([4.0, 2.0, 1.0, 0.5, 0.1, 0.0])
    x = (torch.randn(300, 3, 6, generator=gen) * scales + torch.tensor([0.0, 3.0, -1.0])[None, :, None]).to(dtype)
    acc = spectra.SecondMoments(3, 6)
    acc.update(x[:100])
    acc.update(x[100:])
    pr, er = reference.effective_rank(x, centered=centered)
    torch.testing.assert_close(acc.spectral_pr(centered), pr, rtol=1e-9, atol=0)
    torch.testing.assert_close(acc.entropy_rank(centered), er, rtol=1e-6, atol=0)
    assert acc.count().tolist() == [300, 300, 300]
    x64 = x.double().transpose(0, 1)
    if centered:
        x64 = x64 - x64.mean(1, keepdim=True)
    torch.testing.assert_close(acc.matrix(centered), x64.transpose(1, 2) @ x64 / 300, rtol=1e-9, atol=1e-12)


def test_merge_and_layout():
    x = torch.randn(2, 5, 4, 8)  # (B, T, Hkv, D), as a layer's keys transposed
    a, b, whole = spectra.SecondMoments(4, 8), spectra.SecondMoments(4, 8), spectra.SecondMoments(4, 8)
    a.update(x[0])
    b.update(x[1])
    whole.update(x)
    a.merge(b)
    torch.testing.assert_close(a.matrix(), whole.matrix(), rtol=1e-12, atol=1e-12)
    assert torch.all(whole.eigenvalues()[:, :-1] >= whole.eigenvalues()[:, 1:])  # descending


def test_bad_input():
    acc = spectra.SecondMoments(2, 3)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, 3\)"):
        acc.update(torch.zeros(4, 3, 2))
    with pytest.raises(TypeError):
        acc.update(torch.zeros(4, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="merge"):
        acc.merge(spectra.SecondMoments(2, 4))
    with pytest.raises(ValueError, match="n_groups and dim"):
        spectra.SecondMoments(0, 3)
    acc.update(torch.tensor([[[float("nan"), 0, 0], [1.0, 2, 3]]]))
    assert acc.count().tolist() == [0, 1]
    assert torch.isnan(acc.spectral_pr()[0])
