"""The kernel runtime's exp, log, log1p and tanh (derive/kernel_runtime.py, written verbatim as
generated/_kernel_runtime.py and tested here as the generated package ships it), which the
element loops use instead of libm's so that LLVM vectorises them: accuracy in ulp against mpmath,
every special value as NumPy has it, and the BLAS product and flat view that replaced np.dot
and reshape in the kernels without reference counting."""

from __future__ import annotations

import math

import mpmath
import numba
import numpy as np
import pytest


@pytest.fixture(scope="module")
def helpers(generated):
    import generated._kernel_runtime as module

    def vectorised(fn):
        @numba.njit(error_model="numpy", _nrt=False)
        def apply(x, out):
            for i in range(x.size):
                out[i] = fn(x[i])

        def call(x):
            x = np.ascontiguousarray(x, dtype=np.float64)
            out = np.empty_like(x)
            apply(x, out)
            return out

        return call

    return {name: vectorised(getattr(module, f"_{name}")) for name in ("exp", "log", "log1p", "tanh", "softplus")} | {
        "module": module}


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many representable float64 values lie between a and b (0: equal)."""
    ia, ib = a.view(np.int64), b.view(np.int64)
    ia = np.where(ia < 0, np.int64(-(2**63)) - ia, ia)
    ib = np.where(ib < 0, np.int64(-(2**63)) - ib, ib)
    return np.abs(ia - ib)


def exact(fn, x: np.ndarray) -> np.ndarray:
    with mpmath.workdps(40):
        return np.array([float(fn(mpmath.mpf(float(v)))) for v in x])


RNG = np.random.default_rng(20261122)
CASES = {
    # name: (mpmath function, arguments, largest error allowed in ulp)
    "exp": (mpmath.exp, np.concatenate([RNG.uniform(-745, 709.7, 4000), RNG.uniform(-1, 1, 4000),
                                        RNG.uniform(-1e-9, 1e-9, 200), [-708.4, -744.0, 709.78, 1e-300]]), 1),
    "tanh": (mpmath.tanh, np.concatenate([RNG.uniform(-25, 25, 4000), RNG.uniform(-0.7, 0.7, 4000),
                                          RNG.uniform(-1e-8, 1e-8, 200),
                                          RNG.uniform(0.15, 0.4, 2000),  # k = round(2|x| / ln 2) goes 0 -> 1
                                          [0.625, np.nextafter(0.625, 0.0), -0.625, 19.0, 20.0, 1e-300]]), 2),
    "log": (mpmath.log, np.concatenate([np.exp(RNG.uniform(-740, 709, 4000)), RNG.uniform(0.5, 2, 4000),
                                        RNG.uniform(0.999, 1.001, 1000),
                                        [5e-324, 1e-310, 2.2250738585072014e-308, 1.7976931348623157e308]]), 2),
    "log1p": (mpmath.log1p, np.concatenate([RNG.uniform(0, 1, 4000), np.exp(RNG.uniform(-60, 0, 4000)),
                                            RNG.uniform(-0.99, 10, 2000), [1e-300, 5e-324, 1e-17, -0.5]]), 2),
    # softplus x = log(1 + e**x); its branch point e**-|x| = sqrt(2) - 1 lies at |x| = 0.8814
    "softplus": (lambda v: mpmath.log1p(mpmath.exp(v)),
                 np.concatenate([RNG.uniform(-750, 750, 4000), RNG.uniform(-3, 3, 4000), RNG.uniform(0.87, 0.89, 500),
                                 RNG.uniform(-0.89, -0.87, 500), RNG.uniform(-1e-8, 1e-8, 200),
                                 [0.881373587019543, -0.881373587019543, -708.0, -740.0, 1e-300]]), 2),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_element_function_is_within_a_few_ulp(helpers, name):
    fn, x, allowed = CASES[name]
    got = helpers[name](x)
    errors = ulp_distance(got, exact(fn, x))
    assert errors.max() <= allowed, f"{name}({x[errors.argmax()]!r}) is {errors.max()} ulp off"
    assert errors.mean() < 0.5  # mostly correctly rounded


SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1000.0, -1000.0, 709.79, 710.0, -745.2, -746.0,
                     -1.0, -2.0, 1e-320, -1e-320, 5e-324])


@pytest.mark.parametrize("name", sorted(CASES))
def test_special_values_are_numpys(helpers, name):
    """Overflow to inf, underflow to 0, nan in -> nan out (divergence is detected by it), the
    domain edges of log and log1p, signed zero and subnormals: as NumPy, within the ulp bound."""
    got = helpers[name](SPECIALS)
    with np.errstate(all="ignore"):
        want = {"exp": np.exp, "log": np.log, "log1p": np.log1p, "tanh": np.tanh,
                "softplus": lambda x: np.logaddexp(0.0, x)}[name](SPECIALS)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    same |= np.isfinite(got) & np.isfinite(want) & (ulp_distance(got, want) <= CASES[name][2] + 1)
    assert same.all(), list(zip(SPECIALS[~same], got[~same], want[~same]))
    if name == "tanh":
        assert math.copysign(1.0, got[1]) == -1.0  # tanh(-0.0) is -0.0


def test_float32_arguments(helpers):
    """exp, tanh and softplus of a float32 compute in float32 (log and log1p in float64), of a
    float64 in float64."""
    module = helpers["module"]
    for name, exact_fn in (("exp", math.exp), ("tanh", math.tanh), ("softplus", lambda v: math.log1p(math.exp(v)))):
        fn = numba.njit(getattr(module, f"_{name}"))  # a plain function that dispatches on its argument's type
        assert fn(np.float32(-0.3)) == pytest.approx(exact_fn(np.float32(-0.3)), rel=1.2e-7)
        assert fn.nopython_signatures[0].return_type == numba.float32
        assert fn(-0.3) == pytest.approx(exact_fn(-0.3), rel=2.3e-16)
        assert fn.nopython_signatures[1].return_type == numba.float64
    log = numba.njit(lambda x: module._log(x))
    assert log(np.float32(3.0)) == pytest.approx(math.log(3.0), rel=2.3e-16)


def ulp_distance32(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many representable float32 values lie between a and b (0: equal)."""
    ia, ib = (np.where(v < 0, -(v & 0x7FFFFFFF), v) for v in (a.view(np.int32).astype(np.int64),
                                                                b.view(np.int32).astype(np.int64)))
    return np.abs(ia - ib)


FLOAT32_CASES = {
    # name: (NumPy reference in float64, extra arguments: branch points, overflow and underflow
    # edges; largest error allowed in ulp of float32: softplus adds the rounding of its division
    # to exp's, as float64's log and log1p do)
    "tanh": (np.tanh, [0.625, 0.62499994, 9.99, 10.0, 1e-45, 1e-38], 1),
    "exp": (np.exp, [88.72, 88.7228, 88.73, -87.33, -103.97, -103.98, -104.5, 1e-45], 1),
    "softplus": (lambda x: np.logaddexp(0.0, x), [0.88137357, 0.8813736, 16.6, 17.0, 88.0, -87.0, -103.97, 1e-45], 2),
}


@pytest.mark.parametrize("name", sorted(FLOAT32_CASES))
def test_float32_functions_are_within_an_ulp_or_two_of_float32(helpers, name):
    """_tanh32, _exp32 and _softplus32, the 8-lane float32 versions: within 1 ulp (softplus: 2)
    of the function rounded to float32 (NumPy's float64 result, 1e-16 relative, rounded) over
    random bit patterns of every exponent, [-12, 12] densely (exp and softplus: [-110, 95],
    subnormal results included), the edges; specials as NumPy."""
    fn = getattr(helpers["module"], f"_{name}")
    reference, edges, allowed = FLOAT32_CASES[name]

    @numba.njit(error_model="numpy", _nrt=False)
    def apply(x, out):
        for i in range(x.size):
            out[i] = fn(x[i])

    rng = np.random.default_rng(7)
    lo, hi = (-12, 12) if name == "tanh" else (-110, 95)
    x = np.concatenate([rng.integers(0, 2**32, 400_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
                        np.linspace(lo, hi, 400_001, dtype=np.float32),
                        rng.uniform(-0.7, 0.7, 50_000).astype(np.float32), np.float32(edges), -np.float32(edges)])
    x = x[np.isfinite(x)]
    got = np.empty_like(x)
    apply(x, got)
    with np.errstate(over="ignore"):
        want = reference(x.astype(np.float64)).astype(np.float32)
    errors = ulp_distance32(got, want)
    assert errors.max() <= allowed, f"{name}({x[errors.argmax()]!r}) is {errors.max()} ulp off in float32"
    assert errors.mean() < 0.1
    specials = np.float32([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 100.0, -100.0, -200.0])
    got = np.empty_like(specials)
    apply(specials, got)
    with np.errstate(over="ignore", invalid="ignore"):
        np.testing.assert_array_equal(got, reference(specials))
    if name == "tanh":
        assert math.copysign(1.0, got[1]) == -1.0


@pytest.mark.parametrize("shapes", [((5, 3), (3, 4)), ((1, 7), (7, 1)), ((6, 1), (1, 2)), ((4, 0), (0, 3)),
                                    ((6, 2), (2, 5)), ((7, 3), (3, 4)), ((5, 4), (4, 6)), ((2, 9), (9, 5)),
                                    ((3, 9), (9, 4)), ((4, 9), (9, 3)), ((8, 5), (5, 1)), ((6, 6), (6, 6)),
                                    ((13, 6), (6, 1)), ((37, 6), (6, 1)), ((70, 5), (5, 1))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matrix_product_is_numpys(helpers, shapes, dtype):
    """_mm, _mm_tn and _mm_nt (A @ B + b, A.T @ B and A @ B.T) for every branch of each:
    BLAS gemm, the dot products of _mv (eight rows at a time, and the rows left over), the
    one-row register tiles of _columns (8, 4, 2 and 1 vectors, the columns left over) and, for
    a weight gradient into one unit more than 8 vectors wide, the columns of _mtv, _outer, and the loops for an inner
    width of 2-4 (_narrow*, the bias added in the loop) or a transposed A with 2-4 rows (_narrow_t*)."""
    module = helpers["module"]
    rng = np.random.default_rng(0)
    (m, k), (_, n) = shapes
    A, B = rng.normal(size=(m, k)).astype(dtype), rng.normal(size=(k, n)).astype(dtype)
    b = rng.normal(size=n).astype(dtype)
    At, Bt = np.ascontiguousarray(A.T), np.ascontiguousarray(B.T)
    g = np.full(n, np.nan, dtype)
    products = [(lambda C: module._mm(A, B, b, C), A @ B + b), (lambda C: module._mm_tn(At, B, C, g), A @ B),
                (lambda C: module._mm_nt(A, Bt, C), A @ B),
                (lambda C: module._mm(At.T, B, b, C), A @ B + b), (lambda C: module._mm(A, Bt.T, b, C), A @ B + b)]
    for product, expected in products:  # _mm takes any layout of A and B
        C = np.full((m, n), np.nan, dtype)
        product(C)
        np.testing.assert_allclose(C, expected, rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-6)
    # _mm_tn's g: the column sums of B (the bias gradient beside the weight gradient)
    np.testing.assert_allclose(g, B.sum(axis=0), rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-6)


@pytest.mark.parametrize("shapes", [((20, 8), (8, 16)), ((70, 16), (16, 16)), ((3, 8), (8, 40)), ((9, 16), (16, 17)),
                                    ((2000, 8), (8, 17)), ((12, 8), (8, 15)), ((13, 11), (11, 12)),
                                    ((7, 1), (1, 9)), ((8, 13), (13, 4)), ((64, 64), (64, 64)), ((64, 65), (65, 64))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiled_matrix_products_are_numpys(generated, shapes, dtype):
    """_tiles (A @ B + b) and _tiles_t (A.T @ B and the column sums 1^T B), called directly and
    through _mm / _mm_tn (with A and B in either order, B's rows not contiguous going elsewhere):
    tiles of 6, 2 and 1 rows; 2-vector and 1-vector column blocks and the columns left over (4
    float64 or 8 float32 to a vector); the rows of A.T @ B and the row of sums split into even tiles
    of at most 6, the first with the sums (1 + 8 -> 5 + 4, 1 + 11 -> 6 + 6, 1 + 13 -> 5 + 4 + 5,
    1 + 1 -> 2); and the shapes that go to BLAS instead (more than 2**18 multiply-adds) or to
    _narrow* (fewer columns than a vector)."""
    import generated._kernel_runtime as module
    rng = np.random.default_rng(1)
    (m, k), (_, n) = shapes
    A, B = rng.normal(size=(m, k)).astype(dtype), rng.normal(size=(k, n)).astype(dtype)
    At, Bt = np.ascontiguousarray(A.T), np.ascontiguousarray(B.T)
    D = rng.normal(size=(m, n)).astype(dtype)
    b = rng.normal(size=n).astype(dtype)
    # exact in float64, and the classic bound of a sum of products computed in order:
    # |error| <= (terms + 1) * eps * (the same sum of the products' magnitudes)
    A64, B64, D64, b64 = (x.astype(np.float64) for x in (A, B, D, b))
    forward = (A64 @ B64 + b64, (k + 2) * np.finfo(dtype).eps * (abs(A64) @ abs(B64) + abs(b64)))
    backward = (A64.T @ D64, (m + 1) * np.finfo(dtype).eps * (abs(A64).T @ abs(D64)))
    sums = (D64.sum(axis=0), m * np.finfo(dtype).eps * abs(D64).sum(axis=0))
    g = np.full(n, np.nan, dtype)
    products = [(lambda C: module._mm(A, B, b, C), forward), (lambda C: module._mm_tn(A, D, C, g), backward),
                (lambda C: module._mm(At.T, B, b, C), forward), (lambda C: module._mm(A, Bt.T, b, C), forward)]
    if n >= 32 // np.dtype(dtype).itemsize:
        products += [(lambda C: module._tiles(A, B, b, C, False), forward),
                     (lambda C: module._tiles_t(A, D, C, g), backward)]
    for product, (expected, bound) in products:
        C = np.full(expected.shape, np.nan, dtype)
        g[:] = np.nan
        product(C)
        assert np.all(abs(C - expected) <= bound), abs(C - expected).max()
        if expected is backward[0]:  # and g, the column sums of D, beside A.T @ D
            assert np.all(abs(g - sums[0]) <= sums[1]), abs(g - sums[0]).max()


@pytest.mark.parametrize("shapes", [((64, 10), (10, 32)), ((9, 16), (16, 17)), ((128, 64), (64, 128)),
                                    ((5, 3), (3, 9)), ((6, 1), (1, 9)), ((7, 6), (6, 1)), ((0, 6), (6, 8))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_product_is_numpys(helpers, shapes, dtype):
    """_mm_relu (a hidden ReLU layer: max(A @ B + b, 0), z if z > 0 else 0) on every path: in the
    register tiles (and the columns they leave over), after BLAS with the bias in the same pass,
    and after _mm's other loops (_narrow*, _outer, _mv); a NaN row gives 0.0 as the element loop
    does, and no element is left unwritten."""
    module = helpers["module"]
    rng = np.random.default_rng(3)
    (m, k), (_, n) = shapes
    A, B = rng.normal(size=(m, k)).astype(dtype), rng.normal(size=(k, n)).astype(dtype)
    b = rng.normal(size=n).astype(dtype)
    if m > 2:
        A[2] = np.nan
    C = np.full((m, n), -7.0, dtype)
    module._mm_relu(A, B, b, C)
    A64, B64, b64 = (x.astype(np.float64) for x in (A, B, b))
    z = A64 @ B64 + b64
    expected = np.where(z > 0.0, z, 0.0)  # NaN -> 0
    # the bound of a sum of products computed in order (as in the tiled test; ReLU only shrinks it)
    bound = (k + 2) * np.finfo(dtype).eps * (abs(np.nan_to_num(A64)) @ abs(B64) + abs(b64))
    assert np.all(abs(C - expected) <= bound), abs(C - expected).max()
    if m > 2:
        assert np.all(C[2] == 0.0) and not np.signbit(C[2]).any()


@pytest.mark.parametrize("shape", [(0, 3), (1, 1), (3, 2), (4, 8), (33, 5), (64, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_sums_are_numpys(helpers, shape, dtype):
    """_colsum (the bias gradients), four rows at a time and the rows left over."""
    D = np.random.default_rng(2).normal(size=shape).astype(dtype)
    g = np.full(shape[1], np.nan, dtype)
    helpers["module"]._colsum(D, g)
    np.testing.assert_allclose(g, D.sum(axis=0), rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mask_is_the_product_with_a_bool(helpers, dtype):
    """_mask(x, c), the printed form of x * Piecewise((1, c), (0, True)) (a select, which
    vectorises): bit for bit x * c for every x, NaN, infinities and signed zeros included, in x's
    dtype, compiled in a vectorised loop and as the printer's Python."""
    from derive.codegen.printer import VECTOR_MATH

    mask = helpers["module"]._mask

    @numba.njit(error_model="numpy", _nrt=False)
    def apply(x, a, out):
        for i in range(x.size):
            out[i] = mask(x[i], a[i] > 0.0)

    x = np.array([1.5, -2.25, 0.0, -0.0, np.inf, -np.inf, np.nan, 3e-39, -7.0] * 3, dtype)
    a = np.repeat(np.array([1.0, -1.0, np.nan]), 9).astype(dtype)
    out = np.empty_like(x)
    apply(x, a, out)
    with np.errstate(invalid="ignore"):  # inf * 0 is NaN, as it should be
        expected = x * (a > 0.0)
        python = VECTOR_MATH["_mask"](x, a > 0.0)
    assert out.dtype == dtype and expected.dtype == dtype
    assert out.tobytes() == expected.tobytes(), (out, expected)
    assert python.tobytes() == expected.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_finds_any_nan_or_infinity(helpers, dtype):
    """_all_finite (the check of X and Y): the largest finite values pass, a NaN or an infinity
    anywhere (first, last, in the vectorised body or the remainder) fails."""
    all_finite = helpers["module"]._all_finite
    big = np.finfo(dtype).max
    a = np.full((13, 3), big, dtype)
    a[::2] = -big
    assert all_finite(a)
    for i in (0, 17, 38):
        for bad in (np.nan, np.inf, -np.inf):
            b = a.copy()
            b.flat[i] = bad
            assert not all_finite(b), (i, bad)


def test_matrix_product_refuses_mismatched_shapes(helpers):
    module = helpers["module"]
    with pytest.raises(ValueError, match="mismatched shapes"):
        module._mm(np.ones((2, 3)), np.ones((2, 3)), np.ones(3), np.ones((2, 3)))
    with pytest.raises(ValueError, match="bias of mismatched length"):
        module._mm(np.ones((2, 3)), np.ones((3, 3)), np.ones(2), np.ones((2, 3)))
    with pytest.raises(ValueError, match="mismatched shapes"):
        module._mm_tn(np.ones((2, 3)), np.ones((3, 3)), np.ones((3, 3)), np.ones(3))
    with pytest.raises(ValueError, match="bias gradient of mismatched length"):
        module._mm_tn(np.ones((2, 3)), np.ones((2, 3)), np.ones((3, 3)), np.ones(2))
    with pytest.raises(ValueError, match="mismatched shapes"):
        module._mm_nt(np.ones((2, 3)), np.ones((2, 2)), np.ones((2, 2)))
