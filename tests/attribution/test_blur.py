"""gaussian_blur against scipy.ndimage.gaussian_filter (mode "reflect", truncate 4), batched over sigmas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from xaibench.attribution.blur import blur_matrices, gaussian_blur
from xaibench.core.errors import InputError

# 0 is the identity, 0.1 keeps only the centre tap (radius 0), 25 and 40 exceed the 8 x 11 image
SIGMAS = (0.0, 0.1, 0.6, 1.5, 3.0, 25.0, 40.0)
# float64 agrees to ~1e-15; in rare processes torch's float64 einsum (bmm) was seen off by up to 4e-11,
# so 1e-9: still 10^4 times below the smallest tap that a wrong radius or boundary would misplace
ATOL64 = 1e-9


def scipy_blur(x: torch.Tensor, sigma: float) -> np.ndarray:
    spatial = (sigma,) * (x.ndim - 2)
    return gaussian_filter(x.numpy(), sigma=(0.0, 0.0, *spatial), mode="reflect", truncate=4.0)


@pytest.mark.parametrize("shape", [(3, 2, 8, 11), (3, 2, 16)], ids=["image", "sequence"])
def test_vector_of_sigmas_matches_scipy_in_float64(shape: tuple[int, ...]) -> None:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = gaussian_blur(x, torch.tensor(SIGMAS, dtype=torch.float64))
    assert out.shape == (shape[0], len(SIGMAS), *shape[1:])
    for k, sigma in enumerate(SIGMAS):
        np.testing.assert_allclose(out[:, k].numpy(), scipy_blur(x, sigma), rtol=0, atol=ATOL64)


def test_float32_matches_scipy_to_1e6_and_scalar_sigma_keeps_shape() -> None:
    x = torch.rand(2, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    for sigma in SIGMAS:
        out = gaussian_blur(x, sigma)
        assert out.shape == x.shape and out.dtype == torch.float32
        np.testing.assert_allclose(out.numpy(), scipy_blur(x.double(), sigma), rtol=0, atol=1e-6)


def test_per_sample_sigmas() -> None:
    x = torch.rand(3, 1, 7, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    sigmas = torch.tensor([[0.0, 2.0], [0.5, 9.0], [1.2, 30.0]], dtype=torch.float64)
    out = gaussian_blur(x, sigmas)
    assert out.shape == (3, 2, 1, 7, 5)
    for n in range(3):
        for k in range(2):
            expected = scipy_blur(x[n : n + 1], float(sigmas[n, k]))[0]
            np.testing.assert_allclose(out[n, k].numpy(), expected, rtol=0, atol=ATOL64)


def test_sigma_zero_is_the_identity_exactly() -> None:
    x = torch.rand(2, 2, 6, 6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(gaussian_blur(x, 0.0), x)
    assert torch.equal(blur_matrices(5, torch.tensor(0.0)), torch.eye(5, dtype=torch.float64))


def test_blur_matrix_rows_are_the_reflected_kernel() -> None:
    # sigma 1 on 3 samples: taps -4..4; reflection maps index -1 -> 0, 3 -> 2, 4 -> 1, -2 -> 1 ...
    taps = torch.exp(-0.5 * torch.arange(-4.0, 5.0, dtype=torch.float64).square())
    taps /= taps.sum()
    expected_row0 = torch.zeros(3, dtype=torch.float64)
    for offset, weight in zip(range(-4, 5), taps):
        folded = offset % 6
        expected_row0[folded if folded < 3 else 5 - folded] += weight
    matrix = blur_matrices(3, torch.tensor(1.0))
    torch.testing.assert_close(matrix[0], expected_row0, rtol=0, atol=1e-15)
    torch.testing.assert_close(matrix.sum(1), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    ("shape", "sigma"),
    [
        ((2, 6), 1.0),
        ((2, 1, 2, 3, 3), 1.0),
        ((2, 1, 8), -0.5),
        ((2, 1, 8), float("nan")),
        ((2, 1, 8), torch.ones(3, 2)),
    ],
    ids=["tabular", "volume", "negative", "nan", "per-sample-mismatch"],
)
def test_bad_arguments_raise_input_error(shape: tuple[int, ...], sigma: object) -> None:
    with pytest.raises(InputError):
        gaussian_blur(torch.zeros(shape), sigma)  # type: ignore[arg-type]
