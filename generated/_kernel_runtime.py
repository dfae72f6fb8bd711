"""The kernel runtime of derive's generated modules: what every model shares.

`derive build` writes this file verbatim beside the model modules it generates (as
``<package>/_kernel_runtime.py``); each model module imports it from its own package and checks,
when imported, that it is the runtime it was built with (:func:`check`). It needs numpy and numba
only, so a model module and this file can be copied together into any project.

What is here:

* the kernel helpers the models' kernels call: matrix products in register tiles, BLAS and
  small loops (:func:`_mm`, :func:`_mm_relu`, :func:`_mm_tn`, :func:`_mm_nt`), vectorisable element
  functions (:func:`_exp`, :func:`_tanh`, :func:`_log`, :func:`_log1p`, :func:`_softplus`,
  :func:`_mask`);
* the training loop of every model (:func:`_train_loop`, :func:`_train_many_loop`: epochs,
  shuffles, batches, loss history, gradient norms), which calls a model's step, its kernel
  ``_batch_at``, through the address of its machine code (:func:`call_at`);
* :class:`API`, the Python side of every model (array checks, work arrays, init schemes,
  ``train``/``train_many`` plumbing), which a model module binds to its own kernels;
* how the two meet without compiling the same code twice (below).

**Compiled once, shared.** Numba links a jitted function that a kernel calls into that kernel and
optimises it again there, so calling the products as ordinary jitted functions would compile them
anew inside every model (xor's first `train` took 19.1 s from an empty cache that way; its own
kernels now take 3.1 s). Instead the products are *shared*: each is
compiled here once per signature (cached on disk like any ``cache=True`` function), its machine
code is registered with LLVM under a stable symbol name (``derive_<sha>_<name>_<types>``, see
:func:`link`), and the models' kernels call that symbol
through Numba's calling convention (exceptions propagate as from any jitted call). A model's
first compile then covers its own kernels only; the element functions, which must be inlined
into the model's loops to vectorise, are the exception and compile with each model.

**Caches that cannot go stale or poison the next process.** The symbol names carry this file's
content hash (:data:`SHA`), and every model module records the hash it was built with: a changed
runtime rewrites every model module (so Numba, which keys a cache on its own file, recompiles
them) and a model meeting a runtime other than its own refuses to import (:func:`check`). Every
dispatcher of this file and of each model is guarded (:func:`adopt`): a cache entry that cannot
be loaded in this process (one written under another module name, as by a module loaded from a
path under another name) is recompiled instead of raising from inside Numba, and a module that
is not registered in ``sys.modules`` is registered first, so Numba never records the module
``'<dynamic>'`` that no later process can import.
"""

import ctypes
import gc
import hashlib
import inspect
import math
import os
import sys
import threading
import types
import weakref

import llvmlite.binding
import llvmlite.ir
import numba
import numba.core.cgutils
import numba.core.dispatcher
import numba.core.imputils
import numba.core.typing
import numba.extending
import numba.np.arrayobj
import numba.np.linalg
import numpy as np

#: The interface between model modules and this runtime; a model built for another is refused.
ABI = 1
#: The first 16 hex digits of sha256 of this file: what a model module is built with (see check()).
with open(__file__, "rb") as _fh:
    SHA = hashlib.sha256(_fh.read()).hexdigest()[:16]
del _fh

#: Kernels that allocate (permutations) or run in parallel (_train_many_loop) keep Numba's
#: reference counting; the others run without it (see the kernel helpers below).
_JIT_NRT = {"cache": True, "error_model": "numpy", "nogil": True}
_JIT = dict(_JIT_NRT, _nrt=False)
#: Kernels only ever called from other kernels need no entry point for Python (Numba's wrappers
#: for them took a third of a model's first compile).
_JIT_INNER = dict(_JIT, no_cpython_wrapper=True, no_cfunc_wrapper=True)


# --------------------------------------------------------------------------- kernel helpers
# The kernels run without Numba's reference counting (_JIT's _nrt=False): it cost a tiny
# network's step ~25 % in atomic increments on every array view and call. So nothing below
# allocates: array views are made by _flat, and matrix products, for which np.dot(a, b, out) would
# need the reference counting, go through _mm, _mm_tn and _mm_nt (below).

#: The element functions may fuse a*b + c into one rounding (FMA); nothing else is reordered.
_JIT_MATH = dict(_JIT, fastmath={"contract"})
#: _log and _log1p are inlined (in Numba's IR) wherever they are called: left to LLVM's inliner,
#: a loop calling _log1p(_exp(...)) kept a call and ran unvectorised, 5x slower. (LLVM inlines
#: _exp and _tanh by itself; forcing them made the tiny network's step 15 % slower.)
_JIT_ELEM = dict(_JIT_MATH, inline="always")
#: Small matrix products may also reorder their sums (so that they vectorise).
_JIT_DOT = dict(_JIT, fastmath={"contract", "reassoc"})


# Each primitive below is a plain Python function (so that the kernels also run as Python, e.g.
# under NUMBA_DISABLE_JIT=1) with its own typing and lowering for the compiled kernels.


def _primitive(fn, typer, lower, *arg_types):
    """Give the Python function fn a Numba typing (typer(*arg types) -> result type or None) and an
    inline lowering (lower(context, builder, signature, args) -> value)."""
    numba.extending.type_callable(fn)(lambda context: typer)
    numba.extending.lower_builtin(fn, *arg_types)(lower)
    return fn


def _flat(a):
    """The elements of a C-contiguous array as a 1-D view (a.reshape(-1); compiled, the view is
    made in place: reshape calls into C, and these kernels cannot call what returns an array)."""
    return a.reshape(-1)


def _flat_lower(context, builder, signature, args):
    src = context.make_array(signature.args[0])(context, builder, args[0])
    dst = context.make_array(signature.return_type)(context, builder)
    numba.np.arrayobj.populate_array(dst, data=src.data, shape=[src.nitems], strides=[src.itemsize],
                                     itemsize=src.itemsize, meminfo=src.meminfo, parent=src.parent)
    return numba.core.imputils.impl_ret_borrowed(context, builder, signature.return_type, dst._getvalue())


_primitive(_flat, lambda a: a.copy(ndim=1, layout="C") if isinstance(a, numba.types.Array) and a.layout == "C"
           else None, _flat_lower, numba.types.Array)


def _same(a, b):
    """Whether arrays a and b start at the same address (an in-place update: step())."""
    return a.__array_interface__["data"][0] == b.__array_interface__["data"][0]


def _same_lower(context, builder, signature, args):
    a, b = (context.make_array(t)(context, builder, v) for t, v in zip(signature.args, args))
    return builder.icmp_unsigned("==", builder.ptrtoint(a.data, llvmlite.ir.IntType(64)),
                                 builder.ptrtoint(b.data, llvmlite.ir.IntType(64)))


_primitive(_same, lambda a, b: numba.types.boolean if isinstance(a, numba.types.Array) and
           isinstance(b, numba.types.Array) else None, _same_lower, numba.types.Array, numba.types.Array)


def _gemm(a, b, out):
    """out = a @ b by BLAS gemm, through the binding to SciPy's BLAS that Numba's np.dot uses, for
    C- or F-ordered 2-D arrays of one float dtype, out C-ordered; _check checks the shapes."""
    np.dot(a, b, out)


def _gemm_typer(a, b, out):
    arrays = (a, b, out)
    if all(isinstance(x, numba.types.Array) and x.ndim == 2 and x.layout in "CF" for x in arrays) and \
            out.layout == "C" and a.dtype == b.dtype == out.dtype and a.dtype in (numba.float32, numba.float64):
        return numba.types.none
    return None


def _gemm_lower(context, builder, signature, args):
    numba.np.linalg.ensure_blas()
    arrays = [(t, context.make_array(t)(context, builder, v)) for t, v in zip(signature.args, args)]
    numba.np.linalg.call_xxgemm(context, builder, *[x for t, arr in arrays for x in (
        t, numba.core.cgutils.unpack_tuple(builder, arr.shape), arr.data)])
    return context.get_dummy_value()


_primitive(_gemm, _gemm_typer, _gemm_lower, numba.types.Array, numba.types.Array, numba.types.Array)


# Register tiles of matrix products, for _tiles and _tiles_t below: a tile of C, rows x vectors
# of 32 bytes (4 float64 or 8 float32: one AVX register each), summed in registers along the
# inner dimension, each vector of B loaded once for all the tile's rows. LLVM does not keep such a
# tile in registers when it is written as loops over arrays (a tile of scalar sums did not
# vectorise: 5-15x slower), so each tile is a primitive that emits its loop in LLVM IR: vector
# loads, broadcasts and llvm.fmuladd (a*b + c, fused where the CPU has FMA, as _JIT_MATH allows).
# (Written as Python calls on a vector type, the tiles took Numba 4.5 s to compile per dtype,
# against 1.0 s as primitives.) As Python (NUMBA_DISABLE_JIT=1), a tile is NumPy's product.


def _lanes(a):
    """The number of a's elements in one 32-byte vector (4 float64, 8 float32)."""
    return 32 // a.itemsize


_primitive(_lanes, lambda a: numba.types.intp if isinstance(a, numba.types.Array) else None,
           lambda context, builder, signature, args: context.get_constant(
               numba.types.intp, 32 // (signature.args[0].dtype.bitwidth // 8)), numba.types.Array)


class _ArrayIR:
    """An array argument of a lowering: element addresses, scalar loads, vector loads and stores
    (the vector's elements must lie next to each other: the callers check a's rows)."""

    def __init__(self, context, builder, aty, value):
        self.context, self.builder, self.aty = context, builder, aty
        self.a = context.make_array(aty)(context, builder, value)
        self.shape = numba.core.cgutils.unpack_tuple(builder, self.a.shape)
        self.strides = numba.core.cgutils.unpack_tuple(builder, self.a.strides)
        self.align = aty.dtype.bitwidth // 8
        self.vty = llvmlite.ir.VectorType(context.get_value_type(aty.dtype), 32 // self.align)

    def ptr(self, *index):
        return numba.core.cgutils.get_item_pointer2(self.context, self.builder, data=self.a.data, shape=self.shape,
                                                    strides=self.strides, layout=self.aty.layout, inds=list(index))

    def load(self, *index):
        return self.builder.load(self.ptr(*index), align=self.align)

    def vload(self, *index):
        return self.builder.load(self.builder.bitcast(self.ptr(*index), self.vty.as_pointer()), align=self.align)

    def vstore(self, value, *index):
        self.builder.store(value, self.builder.bitcast(self.ptr(*index), self.vty.as_pointer()), align=self.align)


def _fmuladd(builder, vty):
    """llvm.fmuladd of the float vector type vty: a * b + c, fused where the CPU has FMA."""
    name = f"llvm.fmuladd.v{vty.count}f{64 if isinstance(vty.element, llvmlite.ir.DoubleType) else 32}"
    return numba.core.cgutils.get_or_insert_function(builder.module, llvmlite.ir.FunctionType(vty, [vty] * 3), name)


def _tile_ir(context, builder, arrays, count, rows, vectors, a_at, b_at, finish, sums=None):
    """The IR of one tile: acc[r][v] = sum over k < count of a_at(r, k) * b_at(k, v) (a scalar
    times a vector of arrays' dtype), from the product at k = 0, then multiply-adds in order of k;
    finish(r, v, acc) stores it. With sums, also s[v] = the sum over k of b_at(k, v) in order of k
    (a row of ones in A: additions, which have CPU ports of their own beside the multiply-adds),
    stored by sums(v, s)."""
    intp = context.get_value_type(numba.types.intp)
    vty = arrays.vty
    fma = _fmuladd(builder, vty)
    lanes0 = llvmlite.ir.Constant(llvmlite.ir.VectorType(llvmlite.ir.IntType(32), vty.count), [0] * vty.count)

    def broadcast(x):
        v = builder.insert_element(llvmlite.ir.Constant(vty, llvmlite.ir.Undefined), x,
                                   llvmlite.ir.Constant(llvmlite.ir.IntType(32), 0))
        return builder.shuffle_vector(v, v, lanes0)

    acc = [[numba.core.cgutils.alloca_once(builder, vty) for _ in range(vectors)] for _ in range(rows)]
    tot = [numba.core.cgutils.alloca_once(builder, vty) for _ in range(vectors)] if sums else []
    b = [b_at(intp(0), v) for v in range(vectors)]
    for r in range(rows):
        a = broadcast(a_at(r, intp(0)))
        for v in range(vectors):
            builder.store(builder.fmul(a, b[v]), acc[r][v])
    for v in range(len(tot)):
        builder.store(b[v], tot[v])
    with numba.core.cgutils.for_range_slice(builder, intp(1), count, intp(1), intp=intp) as (k, _):
        b = [b_at(k, v) for v in range(vectors)]
        for r in range(rows):
            a = broadcast(a_at(r, k))
            for v in range(vectors):
                builder.store(builder.call(fma, [a, b[v], builder.load(acc[r][v])]), acc[r][v])
        for v in range(len(tot)):
            builder.store(builder.fadd(builder.load(tot[v]), b[v]), tot[v])
    for r in range(rows):
        for v in range(vectors):
            finish(r, v, builder.load(acc[r][v]))
    for v in range(len(tot)):
        sums(v, builder.load(tot[v]))
    return context.get_dummy_value()


def _float_arrays(*arrays):
    """True for Numba array types of one float dtype with the given numbers of dimensions."""
    return all(isinstance(a, numba.types.Array) and a.ndim == n and a.dtype == arrays[0][0].dtype
               for a, n in arrays) and arrays[0][0].dtype in (numba.float32, numba.float64)


def _tile(rows, vectors, relu=False):
    """The primitive _tile{rows}x{vectors}(A, B, bias, C, i, j): C[i:i+rows, j:j+w] = A[i:i+rows] @
    B[:, j:j+w] + bias[j:j+w], w = vectors * _lanes(B); each sum runs along A's row from A[i, 0] *
    B[0, j], and the bias is added to the finished sum. With relu, _tile_r{rows}x{vectors} stores
    max(z, 0) of each such z instead (z if z > 0 else 0: NaN and -0.0 give 0.0)."""

    def tile(A, B, bias, C, i, j):
        w = vectors * _lanes(B)
        z = A[i:i + rows] @ B[:, j:j + w] + bias[j:j + w]
        C[i:i + rows, j:j + w] = np.where(z > 0.0, z, 0.0) if relu else z

    def typer(A, B, bias, C, i, j):
        ok = _float_arrays((A, 2), (B, 2), (bias, 1), (C, 2)) and bias.layout == "C"
        return numba.types.none if ok and all(isinstance(x, numba.types.Integer) for x in (i, j)) else None

    def lower(context, builder, signature, args):
        A, B, bias, C = (_ArrayIR(context, builder, t, v) for t, v in zip(signature.args[:4], args[:4]))
        i, j = (context.cast(builder, v, t, numba.types.intp) for v, t in zip(args[4:], signature.args[4:]))
        intp = context.get_value_type(numba.types.intp)
        at = [builder.add(i, intp(r)) for r in range(rows)]
        cols = [builder.add(j, intp(v * B.vty.count)) for v in range(vectors)]
        bias_v = [bias.vload(c) for c in cols]
        zero = llvmlite.ir.Constant(B.vty, None)

        def finish(r, v, acc):
            z = builder.fadd(acc, bias_v[v])
            if relu:
                z = builder.select(builder.fcmp_ordered(">", z, zero), z, zero)
            C.vstore(z, at[r], cols[v])

        return _tile_ir(context, builder, B, A.shape[1], rows, vectors,
                        lambda r, k: A.load(at[r], k), lambda k, v: B.vload(k, cols[v]), finish)

    tile.__name__ = tile.__qualname__ = f"_tile{'_r' if relu else ''}{rows}x{vectors}"
    return _primitive(tile, typer, lower, *[numba.types.Array] * 4, numba.types.Integer, numba.types.Integer)


def _tile_t(rows, vectors, sums=False):
    """The primitive _tile_t{rows}x{vectors}(X, B, C, p, j): C[p:p+rows, j:j+w] = X[:, p:p+rows]^T @
    B[:, j:j+w], w = vectors * _lanes(B); each sum runs down X's rows from X[0, p] * B[0, j]. With
    sums, _tile_ts{rows}x{vectors}(X, B, C, g, p, j) also sets g[j:j+w] = the column sums of
    B[:, j:j+w] (the bias gradient 1^T delta, added down B's rows in order, from the vectors of B
    the tile loads anyway)."""

    def tile(X, B, C, p, j):
        w = vectors * _lanes(B)
        C[p:p + rows, j:j + w] = X[:, p:p + rows].T @ B[:, j:j + w]

    def tile_sums(X, B, C, g, p, j):
        tile(X, B, C, p, j)
        w = vectors * _lanes(B)
        g[j:j + w] = B[:, j:j + w].sum(axis=0)

    def typer(X, B, C, p, j):
        ok = _float_arrays((X, 2), (B, 2), (C, 2))
        return numba.types.none if ok and all(isinstance(x, numba.types.Integer) for x in (p, j)) else None

    def typer_sums(X, B, C, g, p, j):  # (a typer of its own: Numba folds *args of a typer into a tuple)
        ok = _float_arrays((B, 2), (g, 1)) and g.layout == "C"
        return typer(X, B, C, p, j) if ok else None

    def lower(context, builder, signature, args):
        n = 4 if sums else 3
        X, B, C, *g = (_ArrayIR(context, builder, t, v) for t, v in zip(signature.args[:n], args[:n]))
        p, j = (context.cast(builder, v, t, numba.types.intp) for v, t in zip(args[n:], signature.args[n:]))
        intp = context.get_value_type(numba.types.intp)
        at = [builder.add(p, intp(r)) for r in range(rows)]
        cols = [builder.add(j, intp(v * B.vty.count)) for v in range(vectors)]
        return _tile_ir(context, builder, B, X.shape[0], rows, vectors,
                        lambda r, k: X.load(k, at[r]), lambda k, v: B.vload(k, cols[v]),
                        lambda r, v, acc: C.vstore(acc, at[r], cols[v]),
                        (lambda v, tot: g[0].vstore(tot, cols[v])) if sums else None)

    fn = tile_sums if sums else tile
    fn.__name__ = fn.__qualname__ = f"_tile_t{'s' if sums else ''}{rows}x{vectors}"
    arrays = [numba.types.Array] * (4 if sums else 3)
    return _primitive(fn, typer_sums if sums else typer, lower, *arrays, numba.types.Integer, numba.types.Integer)


def _column(vectors):
    """The primitive _column{vectors}(X, D, C, p): C[p:p+w, 0] = X[:, p:p+w]^T @ D[:, 0], w =
    vectors * _lanes(X): a weight gradient into one unit, along X's contiguous rows (a register
    tile of one row, C's column contiguous: the callers check)."""

    def column(X, D, C, p):
        w = vectors * _lanes(X)
        C[p:p + w, 0] = X[:, p:p + w].T @ D[:, 0]

    def typer(X, D, C, p):
        ok = _float_arrays((X, 2), (D, 2), (C, 2)) and isinstance(p, numba.types.Integer)
        return numba.types.none if ok else None

    def lower(context, builder, signature, args):
        X, D, C = (_ArrayIR(context, builder, t, v) for t, v in zip(signature.args[:3], args[:3]))
        p = context.cast(builder, args[3], signature.args[3], numba.types.intp)
        intp = context.get_value_type(numba.types.intp)
        zero = intp(0)
        cols = [builder.add(p, intp(v * X.vty.count)) for v in range(vectors)]
        return _tile_ir(context, builder, X, X.shape[0], 1, vectors,
                        lambda r, k: D.load(k, zero), lambda k, v: X.vload(k, cols[v]),
                        lambda r, v, acc: C.vstore(acc, cols[v], zero))

    column.__name__ = column.__qualname__ = f"_column{vectors}"
    return _primitive(column, typer, lower, *[numba.types.Array] * 3, numba.types.Integer)


_tile6x2, _tile2x2, _tile1x2, _tile6x1, _tile2x1, _tile1x1 = (_tile(r, v) for v in (2, 1) for r in (6, 2, 1))
_tile_r6x2, _tile_r2x2, _tile_r1x2, _tile_r6x1, _tile_r2x1, _tile_r1x1 = (
    _tile(r, v, relu=True) for v in (2, 1) for r in (6, 2, 1))
(_tile_t6x2, _tile_t5x2, _tile_t4x2, _tile_t3x2, _tile_t2x2, _tile_t1x2,
 _tile_t6x1, _tile_t5x1, _tile_t4x1, _tile_t3x1, _tile_t2x1, _tile_t1x1) = (
    _tile_t(r, v) for v in (2, 1) for r in (6, 5, 4, 3, 2, 1))
(_tile_ts5x2, _tile_ts4x2, _tile_ts3x2, _tile_ts2x2, _tile_ts1x2,
 _tile_ts5x1, _tile_ts4x1, _tile_ts3x1, _tile_ts2x1, _tile_ts1x1) = (
    _tile_t(r, v, sums=True) for v in (2, 1) for r in (5, 4, 3, 2, 1))
_column8, _column4, _column2, _column1 = (_column(v) for v in (8, 4, 2, 1))


@numba.njit(**_JIT_DOT)
def _mv(A, B, C):
    """C = A @ B for a row-major A and B with one column: dot products along A's rows, eight rows
    at a time, so that each B[p] is loaded once for eight and the eight sums overlap (one row at a
    time, each sum's final reduction stalled the next: 64x32 @ 32x1 took 0.58 us in float64, eight
    at a time 0.28; BLAS took 4x longer than one at a time; vectors of sums along the rows, four
    rows at a time and added up across their lanes, took as long). Each sum starts from its first
    product, so it stays in the arrays' dtype (float32: 8 lanes, not a float64 accumulator); A
    has at least one column (the callers handle an inner width of 0)."""
    n = A.shape[0]
    i = 0
    while i + 8 <= n:
        b = B[0, 0]
        c0, c1, c2, c3 = A[i, 0] * b, A[i + 1, 0] * b, A[i + 2, 0] * b, A[i + 3, 0] * b
        c4, c5, c6, c7 = A[i + 4, 0] * b, A[i + 5, 0] * b, A[i + 6, 0] * b, A[i + 7, 0] * b
        for p in range(1, A.shape[1]):
            b = B[p, 0]
            c0 += A[i, p] * b
            c1 += A[i + 1, p] * b
            c2 += A[i + 2, p] * b
            c3 += A[i + 3, p] * b
            c4 += A[i + 4, p] * b
            c5 += A[i + 5, p] * b
            c6 += A[i + 6, p] * b
            c7 += A[i + 7, p] * b
        C[i, 0], C[i + 1, 0], C[i + 2, 0], C[i + 3, 0] = c0, c1, c2, c3
        C[i + 4, 0], C[i + 5, 0], C[i + 6, 0], C[i + 7, 0] = c4, c5, c6, c7
        i += 8
    while i < n:
        acc = A[i, 0] * B[0, 0]
        for p in range(1, A.shape[1]):
            acc += A[i, p] * B[p, 0]
        C[i, 0] = acc
        i += 1


@numba.njit(**_JIT_MATH)
def _columns(X, D, C):
    """C = X^T @ D for D with one column (the weight gradient into a layer of one unit), X's rows
    and C's column contiguous, X at most 8 vectors wide: register tiles of one row of up to 8
    vectors, one pass down X's rows (_column*; 64x32 -> 32 took 0.16 us in float64 and 0.11 in
    float32, against 0.23 / 0.17 for _mtv below; on a 128x128 X, whose 4 passes would each stride
    through more than L1 holds, 1.95 us against _mtv's 1.33), then the columns left over one by
    one."""
    K = X.shape[1]
    L = _lanes(X)
    p = 0
    while p + 8 * L <= K:
        _column8(X, D, C, p)
        p += 8 * L
    if p + 4 * L <= K:
        _column4(X, D, C, p)
        p += 4 * L
    if p + 2 * L <= K:
        _column2(X, D, C, p)
        p += 2 * L
    if p + L <= K:
        _column1(X, D, C, p)
        p += L
    for q in range(p, K):
        acc = X[0, q] * D[0, 0]
        for i in range(1, X.shape[0]):
            acc += X[i, q] * D[i, 0]
        C[q, 0] = acc


@numba.njit(**_JIT_MATH)
def _mtv(A, B, C):
    """C = A @ B for a column-major A (the transpose in A_{l-1}^T @ delta_l) and B with one column:
    C += A[:, p] B[p] column by column, along A's contiguous axis; the row dot products of _mv
    would stride through A, and took 7-10x longer (64x32: 2.0 us against 0.3 us). Four columns
    at a time, so that C is read and written once per four: each C[i] is a chain of additions
    through memory, and the chain a quarter as long took half the time (8x32: 0.16 -> 0.09 us)."""
    for i in range(A.shape[0]):
        C[i, 0] = 0.0
    n = A.shape[1]
    p = 0
    while p + 4 <= n:
        b0, b1, b2, b3 = B[p, 0], B[p + 1, 0], B[p + 2, 0], B[p + 3, 0]
        for i in range(A.shape[0]):
            C[i, 0] += (A[i, p] * b0 + A[i, p + 1] * b1) + (A[i, p + 2] * b2 + A[i, p + 3] * b3)
        p += 4
    while p < n:
        b = B[p, 0]
        for i in range(A.shape[0]):
            C[i, 0] += A[i, p] * b
        p += 1


@numba.njit(**_JIT)
def _colsum(D, g):
    """g = the column sums of D (a bias gradient 1^T Delta_l), four rows at a time: each g[j] is a
    chain of additions through memory, and the chain a quarter as long took half the time (32x8:
    0.12 -> 0.06 us)."""
    for j in range(D.shape[1]):
        g[j] = 0.0
    n = D.shape[0]
    i = 0
    while i + 4 <= n:
        for j in range(D.shape[1]):
            g[j] += (D[i, j] + D[i + 1, j]) + (D[i + 2, j] + D[i + 3, j])
        i += 4
    while i < n:
        for j in range(D.shape[1]):
            g[j] += D[i, j]
        i += 1


@numba.njit(**_JIT_DOT)
def _outer(A, B, C):
    """C = A @ B for A with one column (an outer product), vectorised along the rows of B."""
    for i in range(A.shape[0]):
        a = A[i, 0]
        for j in range(B.shape[1]):
            C[i, j] = a * B[0, j]


def _narrow(k):
    """The loops _narrow{k}(A, B, bias, C) and _narrow_t{k}(A, B, C) for an inner width of k."""

    @numba.njit(**_JIT_MATH)
    def narrow(A, B, bias, C):
        """C = A @ B + bias for A with k columns (a layer with k inputs): the inner loop has a
        constant length, so it unrolls and the loop along B's rows vectorises (BLAS took 2-3x longer)."""
        for i in range(A.shape[0]):
            for j in range(B.shape[1]):
                acc = A[i, 0] * B[0, j]
                for p in range(1, k):
                    acc += A[i, p] * B[p, j]
                C[i, j] = acc + bias[j]

    @numba.njit(**_JIT_MATH)
    def narrow_t(A, B, C):
        """C = A @ B for A with k rows (the weight gradient A_0^T @ delta_1 of a layer with k
        inputs): four rows of B at a time are added into the k rows of C, along their contiguous
        axis (BLAS took 1.2-2.4x longer; one row at a time, 2x32 @ 32x8 took 0.18 us, four 0.14)."""
        for p in range(k):
            for j in range(B.shape[1]):
                C[p, j] = 0.0
        n = A.shape[1]
        i = 0
        while i + 4 <= n:
            for p in range(k):
                a0, a1, a2, a3 = A[p, i], A[p, i + 1], A[p, i + 2], A[p, i + 3]
                for j in range(B.shape[1]):
                    C[p, j] += (a0 * B[i, j] + a1 * B[i + 1, j]) + (a2 * B[i + 2, j] + a3 * B[i + 3, j])
            i += 4
        while i < n:
            for p in range(k):
                x = A[p, i]
                for j in range(B.shape[1]):
                    C[p, j] += x * B[i, j]
            i += 1

    narrow.__name__, narrow_t.__name__ = f"_narrow{k}", f"_narrow_t{k}"
    return narrow, narrow_t


(_narrow2, _narrow_t2), (_narrow3, _narrow_t3), (_narrow4, _narrow_t4) = (_narrow(k) for k in (2, 3, 4))


@numba.njit(**_JIT_MATH)
def _tiles(A, B, bias, C, relu):
    """C = A @ B + bias for B and C with contiguous rows, in register tiles of 6 rows x 2 vectors
    (12 sums in registers: each vector of B loaded serves 6 rows, and the 12 chains of
    multiply-adds overlap); the rows left over in tiles of 2 and 1, the columns left over in
    1-vector tiles and then one by one. 64x10 @ 10x32 + b took 1.02 us in float64 and 0.52 in
    float32, against 1.52 and 0.84 for loops that LLVM vectorised along B's rows (no tile of sums
    in registers) and 1.8 / 1.2 for OpenBLAS (without the bias); 64x32 @ 32x32 3.0 / 1.5 us against
    4.4 / 2.5 for OpenBLAS.

    With relu, C = max(A @ B + bias, 0): a hidden ReLU layer's activations, stored from the tiles'
    registers, its pre-activations nowhere (the backward pass reads a > 0). The small network's
    64x10 @ 10x32 + b and its ReLU took 1.02 + 0.20 us in float64 as a product and a pass of their
    own, 1.04 in one (storing both Z and A from the registers took 1.29: the stores, one a cycle,
    are what such a pass costs). relu is a run-time flag: the tile taken is chosen per tile, a
    branch the CPU predicts, against the multiply-adds of a whole row of A per tile."""
    M, K = A.shape
    N = B.shape[1]
    L = _lanes(B)
    j = 0
    while j + 2 * L <= N:
        i = 0
        while i + 6 <= M:
            if relu:
                _tile_r6x2(A, B, bias, C, i, j)
            else:
                _tile6x2(A, B, bias, C, i, j)
            i += 6
        while i + 2 <= M:
            if relu:
                _tile_r2x2(A, B, bias, C, i, j)
            else:
                _tile2x2(A, B, bias, C, i, j)
            i += 2
        if i < M:
            if relu:
                _tile_r1x2(A, B, bias, C, i, j)
            else:
                _tile1x2(A, B, bias, C, i, j)
        j += 2 * L
    if j + L <= N:
        i = 0
        while i + 6 <= M:
            if relu:
                _tile_r6x1(A, B, bias, C, i, j)
            else:
                _tile6x1(A, B, bias, C, i, j)
            i += 6
        while i + 2 <= M:
            if relu:
                _tile_r2x1(A, B, bias, C, i, j)
            else:
                _tile2x1(A, B, bias, C, i, j)
            i += 2
        if i < M:
            if relu:
                _tile_r1x1(A, B, bias, C, i, j)
            else:
                _tile1x1(A, B, bias, C, i, j)
        j += L
    for i in range(M):
        for jj in range(j, N):
            acc = A[i, 0] * B[0, jj]
            for p in range(1, K):
                acc += A[i, p] * B[p, jj]
            z = acc + bias[jj]
            C[i, jj] = z if (not relu or z > 0.0) else 0.0


@numba.njit(**_JIT_MATH)
def _tiles_t(X, B, C, g):
    """C = X^T @ B and g = 1^T B (the weight and bias gradients A_{l-1}^T delta_l and 1^T delta_l:
    X is A_{l-1}, B is delta_l) for B and C with contiguous rows, in register tiles of up to 6 rows
    x 2 vectors of C, each summed down all of X's rows; the first tile of each column block also
    sums B's rows into g, as if X had a column of ones (g's additions use the vectors of B the tile
    loads anyway: the small network's 10x64 @ 64x32 and 1^T delta took 0.84 + 0.18 us in float64
    as a product and a separate column sum, and 0.87 together). The K + 1 rows of C and g are
    split into tiles as even as can be (10 + 1 rows: 5 + 1 and 5; 4 + 1 and 6 took 0.93 us): a tile of few
    rows has few chains of sums, each a multiply-add waiting on the last, the whole length of X
    (10x64 @ 64x32 in float64: 1.2 us with tiles of 6, 2 and 2, 0.85 with 5 and 5). 10x64 @ 64x32
    took 0.83 us in float64 and 0.43 in float32, against 1.6 and 1.0 for loops adding eight rows
    of B at a time into C and 2.8 / 2.4 for OpenBLAS."""
    M, K = X.shape
    N = B.shape[1]
    L = _lanes(B)
    tiles = (K + 6) // 6  # for K + 1 rows: X's K columns and the ones that make g
    j = 0
    while j + L <= N:
        two = j + 2 * L <= N
        size = (K + tiles) // tiles - 1  # X's columns in the first tile (rounded up), beside the ones: 1 .. 5
        if size == 5:
            if two:
                _tile_ts5x2(X, B, C, g, 0, j)
            else:
                _tile_ts5x1(X, B, C, g, 0, j)
        elif size == 4:
            if two:
                _tile_ts4x2(X, B, C, g, 0, j)
            else:
                _tile_ts4x1(X, B, C, g, 0, j)
        elif size == 3:
            if two:
                _tile_ts3x2(X, B, C, g, 0, j)
            else:
                _tile_ts3x1(X, B, C, g, 0, j)
        elif size == 2:
            if two:
                _tile_ts2x2(X, B, C, g, 0, j)
            else:
                _tile_ts2x1(X, B, C, g, 0, j)
        else:
            if two:
                _tile_ts1x2(X, B, C, g, 0, j)
            else:
                _tile_ts1x1(X, B, C, g, 0, j)
        p = size
        for t in range(1, tiles):
            size = (K - p) // (tiles - t)
            if size == 6:
                if two:
                    _tile_t6x2(X, B, C, p, j)
                else:
                    _tile_t6x1(X, B, C, p, j)
            elif size == 5:
                if two:
                    _tile_t5x2(X, B, C, p, j)
                else:
                    _tile_t5x1(X, B, C, p, j)
            elif size == 4:
                if two:
                    _tile_t4x2(X, B, C, p, j)
                else:
                    _tile_t4x1(X, B, C, p, j)
            elif size == 3:
                if two:
                    _tile_t3x2(X, B, C, p, j)
                else:
                    _tile_t3x1(X, B, C, p, j)
            elif size == 2:
                if two:
                    _tile_t2x2(X, B, C, p, j)
                else:
                    _tile_t2x1(X, B, C, p, j)
            else:
                if two:
                    _tile_t1x2(X, B, C, p, j)
                else:
                    _tile_t1x1(X, B, C, p, j)
            p += size
        j += 2 * L if two else L
    for jj in range(j, N):
        acc = B[0, jj]
        for i in range(1, M):
            acc += B[i, jj]
        g[jj] = acc
    for p in range(K):
        for jj in range(j, N):
            acc = X[0, p] * B[0, jj]
            for i in range(1, M):
                acc += X[i, p] * B[i, jj]
            C[p, jj] = acc


@numba.njit(**_JIT_DOT)
def _all_finite(a):
    """True when no element of the C-contiguous array a is NaN or infinite: x - x is 0 for every
    finite x and NaN otherwise, and the sum vectorises (np.isfinite(a).all() took 2.5 us for 64
    elements, mostly call overhead; this 0.5)."""
    f = _flat(a)
    acc = 0.0
    for i in range(f.size):
        acc += f[i] - f[i]
    return acc == 0.0


@numba.njit(**_JIT)
def _not_distribution(Y, tol):
    """The first row of Y (finite, 2-D) with a negative entry or a sum farther than tol from 1,
    or -1 when every row is a probability distribution."""
    for i in range(Y.shape[0]):
        total = 0.0
        low = 0.0
        for j in range(Y.shape[1]):
            total += Y[i, j]
            low = min(low, Y[i, j])
        if low < 0.0 or abs(total - 1.0) > tol:
            return i
    return -1


@numba.njit(**_JIT)
def _rows_contiguous(a):
    """True when the elements of each row of a lie next to each other (as _tiles' vectors need)."""
    return a.shape[1] <= 1 or a.strides[1] == a.itemsize


@numba.njit(**_JIT)
def _check(A, B, C):
    """Raise on shapes that do not make C = A @ B; False when C is empty (nothing to compute)."""
    if A.shape[1] != B.shape[0] or C.shape[0] != A.shape[0] or C.shape[1] != B.shape[1]:
        raise ValueError("matrix product of mismatched shapes")
    return A.shape[0] > 0 and B.shape[1] > 0


# Products are BLAS gemm, except where the call costs more than the arithmetic (timings in each
# loop's docstring). One entry point per orientation, so that each compiles only the loops it can
# use (compiling every loop for every orientation raised a module's first compile by 70 %).
# _tiles and _tiles_t take B with at least one vector of columns (4 float64, 8 float32; narrower,
# they would be all remainder) and at most 2**18 multiply-adds (beyond, BLAS's blocking and second
# thread catch up: 128x64 @ 64x128 took 50 us in float64 against OpenBLAS's 37).


#: _mm_route's answers: which loop computes a forward product.
_EMPTY, _ZERO, _MV, _OUTER, _TILES, _NARROW, _GEMM = range(7)


#: The register tiles compute the columns left over after whole vectors one element at a time, a
#: chain of K dependent multiply-adds each: with K this long or longer and such columns, BLAS is
#: faster (the multi-class output layer, 64x128 @ 128x10: 15 us in tiles, 2.7 (f32) / 3.5 (f64)
#: by BLAS; its A^T delta, 14 / 20 us against 2.2 / 3.2).
_LEFTOVER_K = 32


@numba.njit(**_JIT)
def _mm_route(A, B, bias, C):
    """Which loop computes C = A @ B + bias (for _mm and _mm_relu alike), after raising on shapes
    that do not make it: _EMPTY (C has no elements), _ZERO (inner width 0), _MV, _OUTER, _TILES,
    _NARROW or _GEMM."""
    if bias.shape[0] != B.shape[1]:
        raise ValueError("bias of mismatched length")
    if not _check(A, B, C):
        return _EMPTY
    K = A.shape[1]
    if K == 0:
        return _ZERO
    if B.shape[1] == 1:
        return _MV
    if K == 1:
        return _OUTER
    if B.shape[1] >= _lanes(B) and C.size * K <= 262144 and _rows_contiguous(B) and _rows_contiguous(C) \
            and (B.shape[1] % _lanes(B) == 0 or K < _LEFTOVER_K):
        return _TILES
    if K == 2 or K == 3 or K == 4:
        return _NARROW
    return _GEMM


@numba.njit(**_JIT)
def _mm(A, B, bias, C):
    """C = A @ B + bias (the forward pre-activations Z = A_{l-1} W + b). The bias is added in the
    products' own pass where they are loops of ours (a pass through C fewer: the small network's
    64x10 @ 10x32 + b took 0.96 us in float32 with the bias added after, 0.85 with it inside),
    after them otherwise; either way to the finished sum of products."""
    route = _mm_route(A, B, bias, C)
    if route == _EMPTY:
        return
    if route == _ZERO:
        C[:] = 0.0
    elif route == _MV:
        _mv(A, B, C)
    elif route == _OUTER:
        _outer(A, B, C)
    elif route == _TILES:
        _tiles(A, B, bias, C, False)
        return
    elif route == _NARROW:
        K = A.shape[1]
        if K == 2:
            _narrow2(A, B, bias, C)
        elif K == 3:
            _narrow3(A, B, bias, C)
        elif K == 4:
            _narrow4(A, B, bias, C)
        return
    else:
        _gemm(A, B, C)
    for i in range(C.shape[0]):
        for j in range(C.shape[1]):
            C[i, j] += bias[j]


@numba.njit(**_JIT)
def _mm_relu(A, B, bias, C):
    """C = max(A @ B + bias, 0) (z if z > 0 else 0: NaN and -0.0 give 0.0): a hidden ReLU layer's
    activations, whose pre-activations nothing reads. The ReLU is applied in _tiles' registers
    where _mm would use them, with the bias in one pass after BLAS's (one pass through C instead
    of a bias pass and a ReLU pass into another array), in place after _mm's other loops."""
    route = _mm_route(A, B, bias, C)
    if route == _TILES:
        _tiles(A, B, bias, C, True)
        return
    if route == _GEMM:
        _gemm(A, B, C)
        for i in range(C.shape[0]):
            for j in range(C.shape[1]):
                z = C[i, j] + bias[j]
                C[i, j] = z if z > 0.0 else 0.0
        return
    _mm(A, B, bias, C)
    for i in range(C.shape[0]):
        for j in range(C.shape[1]):
            z = C[i, j]
            C[i, j] = z if z > 0.0 else 0.0


@numba.njit(**_JIT)
def _mm_tn(A, B, C, g):
    """C = A^T @ B and g = 1^T B (the weight and bias gradients A_{l-1}^T delta_l and 1^T delta_l):
    g comes out of _tiles_t's own pass where it does the product, from _colsum otherwise."""
    if g.shape[0] != B.shape[1]:
        raise ValueError("bias gradient of mismatched length")
    At = A.T
    if not _check(At, B, C):
        _colsum(B, g)
        return
    if A.shape[0] == 0:
        C[:] = 0.0
    elif B.shape[1] == 1 and _lanes(A) <= A.shape[1] <= 8 * _lanes(A) and _rows_contiguous(A) and \
            C.strides[0] == C.itemsize:
        _columns(A, B, C)
    elif B.shape[1] == 1:
        _mtv(At, B, C)
    elif B.shape[1] >= _lanes(B) and B.size * A.shape[1] <= 262144 and _rows_contiguous(B) and _rows_contiguous(C) \
            and (B.shape[1] % _lanes(B) == 0 or A.shape[0] < _LEFTOVER_K):
        _tiles_t(A, B, C, g)
        return
    elif A.shape[1] == 2:
        _narrow_t2(At, B, C)
    elif A.shape[1] == 3:
        _narrow_t3(At, B, C)
    elif A.shape[1] == 4:
        _narrow_t4(At, B, C)
    else:
        _gemm(At, B, C)
    _colsum(B, g)


@numba.njit(**_JIT)
def _mm_nt(A, B, C):
    """C = A @ B^T (the backpropagated errors delta_l W_l^T)."""
    Bt = B.T
    if not _check(A, Bt, C):
        return
    if A.shape[1] == 0:
        C[:] = 0.0
    elif B.shape[0] == 1:
        _mv(A, Bt, C)
    elif A.shape[1] == 1:
        _outer(A, Bt, C)
    else:
        _gemm(A, Bt, C)


# Vectorisable exp, log, log1p, tanh and softplus. libm's are opaque calls that keep LLVM from
# vectorising an element loop (tanh alone was 40 % of a tiny network's step). These use
# arithmetic, selects and bit casts only, so a loop over them becomes SIMD code; they compute in
# float64 and are within 1 ulp (exp) and 2 ulp (tanh, log, log1p, softplus) of the exact value
# (tests/test_vmath.py). exp, tanh and softplus of a float32 compute in float32, within 1 ulp
# (softplus: 2) of float32: 8 lanes instead of 4, and shorter polynomials (tanh of 256 elements:
# 0.30 us against 0.57 in float64; it was a third of a tiny network's step).


def _mask(x, c):
    """x * c for a float x and a bool c (a product with an indicator, such as the ReLU derivative),
    computed as c ? x : x * 0, which gives the product's every value (NaN, infinities, the sign of
    zero) and stays in x's dtype. As a select it vectorises to a compare and a blend; the bool
    multiplying went through integer vectors and a conversion (the small network's ReLU backward
    loop, 64x32 in float64: 0.56 us against 0.37)."""
    return x * c


_primitive(_mask, lambda x, c: x if isinstance(x, numba.types.Float) and isinstance(c, numba.types.Boolean) else None,
           lambda context, builder, signature, args: builder.select(
               args[1], args[0], builder.fmul(args[0], llvmlite.ir.Constant(args[0].type, 0.0))),
           numba.types.Float, numba.types.Boolean)


def _as_bits(x):
    """The IEEE-754 bits of a float64, as an int64."""
    return np.float64(x).view(np.int64)


def _from_bits(x):
    """The float64 with the IEEE-754 bits x (an int64)."""
    return np.int64(x).view(np.float64)


_primitive(_as_bits, lambda x: numba.int64 if x == numba.float64 else None,
           lambda context, builder, signature, args: builder.bitcast(args[0], llvmlite.ir.IntType(64)),
           numba.types.float64)
_primitive(_from_bits, lambda x: numba.float64 if x == numba.int64 else None,
           lambda context, builder, signature, args: builder.bitcast(args[0], llvmlite.ir.DoubleType()),
           numba.types.int64)


_SHIFT = 6755399441055744.0  # 1.5 * 2**52: x + _SHIFT - _SHIFT rounds x to an integer
_TWO52 = 4503599627370496.0


@numba.njit(**_JIT_MATH)
def _pow2(j):
    """2**j for an integer-valued float j in [-1022, 1023]."""
    return _from_bits(_as_bits(j + (1023.0 + _TWO52)) << 52)


@numba.njit(**_JIT_MATH)
def _exp64(x):
    """e**x in float64: round(x / ln 2) = k, a degree-11 polynomial for e**r on |r| <= ln(2)/2, times 2**k."""
    x = np.float64(x)
    x = 710.0 if x > 710.0 else x  # NaN stays NaN
    x = -746.0 if x < -746.0 else x
    k = (x * 1.4426950408889634 + _SHIFT) - _SHIFT  # round(x / ln 2)
    r = (x - k * 0.6931471803691238) - k * 1.9082149292705877e-10  # x - k ln 2, |r| <= ln2/2
    p = 2.5110037605963777e-08
    p = p * r + 2.763263963904103e-07
    p = p * r + 2.755724091857897e-06
    p = p * r + 2.4801485482328494e-05
    p = p * r + 0.00019841269890047113
    p = p * r + 0.0013888888952314775
    p = p * r + 0.008333333333319601
    p = p * r + 0.0416666666664881
    p = p * r + 0.1666666666666668
    p = p * r + 0.5000000000000019
    p = p * r + 1.0
    p = p * r + 1.0
    k1 = (k * 0.5 + _SHIFT) - _SHIFT  # 2**k as 2**k1 * 2**(k - k1): no overflow, gradual underflow
    return p * _pow2(k1) * _pow2(k - k1)


@numba.njit(**_JIT_MATH)
def _tanh64(x):
    """tanh x in float64 (2 ulp): sign(x) m / (m + 2) with m = e**(2|x|) - 1 = 2**k (e**r - 1) +
    (2**k - 1), k = round(2|x| / ln 2), and e**r - 1 = r + r**2 P(r) on |r| <= ln(2)/2 (P: least
    squares, relative, on Chebyshev nodes, degree 9). One polynomial and no branch: 256 elements
    took 0.57 us, against 0.89 for a series below 0.625 and 1 - 2 / (e**(2|x|) + 1) above, both
    computed and one selected (1 ulp)."""
    x = np.float64(x)
    t = 2.0 * abs(x)
    t = 40.0 if t > 40.0 else t  # tanh(20) == 1.0 in float64; NaN stays NaN
    k = (t * 1.4426950408889634 + _SHIFT) - _SHIFT  # round(t / ln 2), 0 .. 58
    r = (t - k * 0.6931471803691238) - k * 1.9082149292705877e-10  # t - k ln 2, |r| <= ln2/2
    p = 2.510915989089397e-08
    p = p * r + 2.76263582777068e-07
    p = p * r + 2.7557243817979766e-06
    p = p * r + 2.4801504344197185e-05
    p = p * r + 0.00019841269886564238
    p = p * r + 0.001388888893249112
    p = p * r + 0.008333333333321431
    p = p * r + 0.041666666666573135
    p = p * r + 0.16666666666666677
    p = p * r + 0.5000000000000006
    s = _pow2(k)
    m = s * (r * r * p + r) + (s - 1.0)  # e**t - 1, without cancellation for small t (k = 0)
    y = m / (m + 2.0)
    y = y if x > 0.0 else -y
    return y if x != 0.0 else x  # tanh(-0.0) = -0.0


def _pow2f(j):
    """2**j as a float32, for an integer-valued float32 j in [-126, 127]."""
    return np.float32(2.0) ** j


def _pow2f_lower(context, builder, signature, args):
    f32, i32 = llvmlite.ir.FloatType(), llvmlite.ir.IntType(32)
    biased = builder.bitcast(builder.fadd(args[0], f32(8388735.0)), i32)  # 2**23 + 127 + j: low bits j + 127
    return builder.bitcast(builder.shl(biased, i32(23)), f32)


_primitive(_pow2f, lambda j: numba.float32 if j == numba.float32 else None, _pow2f_lower, numba.types.float32)
_F = np.float32


@numba.njit(**_JIT_MATH)
def _exp32_core(x):
    """(2**k, e**(x - k ln 2)) for a float32 x in [-150 ln 2, 128 ln 2]: k = round(x / ln 2), and a
    degree-6 polynomial on |x - k ln 2| <= ln(2)/2 (coefficients: least squares, relative, on
    Chebyshev nodes); e**x is their product, or two halves of 2**k for gradual underflow."""
    k = (x * _F(1.4426950408889634) + _F(12582912.0)) - _F(12582912.0)  # round(x / ln 2)
    r = (x - k * _F(0.693145751953125)) - k * _F(1.4286068203094172e-06)  # x - k ln 2 (k * hi is exact)
    e = _F(0.0013829420542372977)
    e = e * r + _F(0.008374771520076263)
    e = e * r + _F(0.041668358033705936)
    e = e * r + _F(0.16666420832120954)
    e = e * r + _F(0.4999999149303647)
    e = e * r + _F(1.0000000361258983)
    e = e * r + _F(1.0000000005920204)
    return k, e


@numba.njit(**_JIT_MATH)
def _exp32(x):
    """e**x for a float32 x, in float32, within 1 ulp of float32 (_exp32_core; 2**k in two halves,
    so that results below 2**-126 underflow gradually). A sigmoid of 64 float32 elements: 0.11 us
    against 0.18 through _exp64."""
    x = _F(89.0) if x > _F(89.0) else x  # e**89 overflows to inf in float32; NaN stays NaN
    x = _F(-104.0) if x < _F(-104.0) else x  # e**-104 underflows to 0
    k, e = _exp32_core(x)  # k in -150 .. 128
    k1 = (k * _F(0.5) + _F(12582912.0)) - _F(12582912.0)
    return e * _pow2f(k1) * _pow2f(k - k1)


@numba.njit(**_JIT_MATH)
def _tanh32(x):
    """tanh x for a float32 x, in float32 (8 lanes where float64 has 4), within 1 ulp of float32:
    x + x^3 P(x^2) for |x| < 0.625 (P: least squares, relative, on Chebyshev nodes), else
    sign(x) (1 - 2 / (e**(2|x|) + 1)) with e**(2|x|) from _exp32_core."""
    a = abs(x)
    z = x * x
    p = _F(-0.005718978858801284)
    p = p * z + _F(0.020653140829106742)
    p = p * z - _F(0.053744663627331324)
    p = p * z + _F(0.13331512746511115)
    p = p * z - _F(0.33333285223367654)
    small = x + x * z * p
    t = _F(2.0) * a
    t = _F(20.0) if t > _F(20.0) else t  # tanh(10) == 1.0 in float32; NaN stays NaN
    k, e = _exp32_core(t)  # k in 0 .. 29: no clamps or halves needed
    big = _F(1.0) - _F(2.0) / (e * _pow2f(k) + _F(1.0))
    big = big if x > _F(0.0) else -big
    r = small if a < _F(0.625) else big
    return r if x != _F(0.0) else x  # tanh(-0.0) = -0.0


def _by_precision(name, f32, f64):
    """The element function `name`: f32 for a float32 argument, f64 for anything else, in Python
    and (by a Numba overload, resolved when the caller compiles) in the kernels."""

    def fn(x):
        return f32(x) if isinstance(x, np.float32) else f64(x)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"{name[1:]} x in the precision of x: {f32.__name__} for a float32, {f64.__name__} otherwise."
    numba.extending.overload(fn, jit_options=_JIT_MATH)(
        lambda x: (lambda x: f32(x)) if x == numba.float32 else (lambda x: f64(x)))
    return fn


_exp = _by_precision("_exp", _exp32, _exp64)
_tanh = _by_precision("_tanh", _tanh32, _tanh64)


@numba.njit(**_JIT_ELEM)
def _log_ratio(s):
    """log((1 + s) / (1 - s)) = 2 atanh s = 2s + s z R(z), z = s**2, for |s| <= 3 - 2 sqrt(2)
    (the ratio in [sqrt(1/2), sqrt(2)])."""
    z = s * s
    q = 0.13086626147840102
    q = q * z + 0.13268773138656886
    q = q * z + 0.15386239702814658
    q = q * z + 0.18181795640132906
    q = q * z + 0.22222222391713917
    q = q * z + 0.28571428570803614
    q = q * z + 0.4000000000000088
    q = q * z + 0.6666666666666666
    return s * z * q + 2.0 * s


@numba.njit(**_JIT_ELEM)
def _log(x):
    """log x: x = m 2**e with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh((m - 1) / (m + 1))."""
    x = np.float64(x)
    tiny = x < 2.2250738585072014e-308  # subnormal: scale up by 2**54 first
    y = x * 18014398509481984.0 if tiny else x
    bits = _as_bits(y)
    e = _from_bits(((bits >> 52) & 0x7FF) | 0x4330000000000000) - (_TWO52 + 1023.0)
    e = e - 54.0 if tiny else e
    m = _from_bits((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)  # y = m 2**e, m in [1, 2)
    high = m > 1.4142135623730951
    m = 0.5 * m if high else m
    e = e + 1.0 if high else e
    r = e * 0.6931471803691238 + (_log_ratio((m - 1.0) / (m + 1.0)) + e * 1.9082149292705877e-10)
    r = r if x > 0.0 else (-math.inf if x == 0.0 else math.nan)
    return x if x == math.inf else r


@numba.njit(**_JIT_ELEM)
def _log1p(x):
    """log(1 + x), corrected for the rounding of 1 + x."""
    x = np.float64(x)
    w = 1.0 + x
    c = ((w - 1.0) - x) / w if (w > 0.0 and w < math.inf) else 0.0  # rounding error of 1 + x
    return x if w == 1.0 else _log(w) - c


# softplus x = log(1 + e**x) = max(x, 0) + log1p(u), u = e**-|x| in [0, 1]. On that interval
# log1p needs no exponent or rounding correction: 1 + u = m 2**e with e = 0 (u <= sqrt(2) - 1)
# or 1 (then m = (1 + u)/2), and log m = _log_ratio(s) with s = (m - 1)/(m + 1), that is
# u/(u + 2) or (u - 1)/(u + 3), exact in the numerator: one division against _log1p(_exp(...))'s
# two and its bit fiddling. softplus of a float32 computes in float32, with 8 lanes (the binary
# cross-entropy of 64 logits: 0.63 -> 0.44 us in float64, 0.45 -> 0.17 in float32).


@numba.njit(**_JIT_MATH)
def _softplus64(x):
    """softplus x = log(1 + e**x) in float64, overflow-free (2 ulp)."""
    x = np.float64(x)
    u = _exp64(-abs(x))
    high = u > 0.41421356237309503
    s = (u - 1.0 if high else u) / (u + 3.0 if high else u + 2.0)
    r = _log_ratio(s)
    r = 0.6931471803691238 + (r + 1.9082149292705877e-10) if high else r
    return max(x, 0.0) + r


@numba.njit(**_JIT_MATH)
def _softplus32(x):
    """softplus x for a float32 x, in float32 (8 lanes), within 2 ulp of float32 (the rounding of
    its division adds to _exp32's): as _softplus64, with a degree-2 R (least squares, relative, on
    Chebyshev nodes)."""
    u = _exp32(-abs(x))
    high = u > _F(0.41421356)
    s2 = (_F(2.0) * u - _F(2.0) if high else _F(2.0) * u) / (u + _F(3.0) if high else u + _F(2.0))  # 2s
    z = _F(0.25) * s2 * s2
    q = _F(0.29876095056533813)
    q = q * z + _F(0.3997734487056732)
    q = q * z + _F(0.6666677594184875)
    r = (_F(0.5) * z * q) * s2 + s2  # 2s rather than 2 (u/(u + 2)): a subnormal u stays exact
    r = _F(0.6931471805599453) + r if high else r
    return max(x, _F(0.0)) + r


_softplus = _by_precision("_softplus", _softplus32, _softplus64)


# --------------------------------------------------------------------------- the training loop's pieces


@numba.njit(**_JIT)
def _epoch_seed(seed, epoch):
    """The random stream of one epoch (shuffle, then dropout masks) depends on (seed, epoch) only,
    so 10 epochs in one call equal 5 + 5 in two calls (progress, resuming a saved run)."""
    return (seed % 4294967296 * 1000003 + epoch) % 4294967296


@numba.njit(**_JIT)
def _seed_epoch(seed, epoch):
    """Seed NumPy's random stream of this thread (which the kernels' dropout masks draw from) for
    an epoch of train(..., seed=seed)."""
    np.random.seed(_epoch_seed(seed, epoch))


@numba.njit(**_JIT)
def _shuffle_epoch(perm, seed, epoch):
    """perm = the row order of an epoch of train(..., shuffle=True, seed=seed): the stream of
    (seed, epoch), then a shuffle of 0 .. n - 1 (the dropout masks draw on after it)."""
    np.random.seed(_epoch_seed(seed, epoch))
    for i in range(perm.shape[0]):
        perm[i] = i
    np.random.shuffle(perm)


@numba.njit(**_JIT)
def _gather(X, Y, perm, s, r, Xb, Yb):
    """Rows perm[s], ..., perm[s + r - 1] of X and Y into the first r rows of Xb and Yb."""
    for i in range(r):
        row = perm[s + i]
        for j in range(X.shape[1]):
            Xb[i, j] = X[row, j]
        for j in range(Y.shape[1]):
            Yb[i, j] = Y[row, j]


@numba.njit(**_JIT)
def _norm(W):
    """The Frobenius norm of a matrix, summed row by row in float64."""
    acc = 0.0
    for i in range(W.shape[0]):
        for j in range(W.shape[1]):
            acc += W[i, j] * W[i, j]
    return math.sqrt(acc)


@numba.njit(**_JIT_NRT)
def _permutations(n, epochs, seed, epoch0):
    """The row order of epochs epoch0 .. epoch0 + epochs - 1 of train(..., shuffle=True, seed=seed)."""
    out = np.empty((epochs, n), dtype=np.int64)
    for e in range(epochs):
        _shuffle_epoch(out[e], seed, epoch0 + e)
    return out


# --------------------------------------------------------------------------- sharing compiled code
# A shared function is called from a model's kernel through a primitive (below) whose lowering
# declares the function's stable symbol and calls it with Numba's calling convention, exactly as
# Numba calls a jitted function it has linked in, but without linking it: the symbol resolves to
# the machine code compiled here (llvmlite.binding.add_symbol). The primitive's signatures are
# declared, so that link(dtype) can register every symbol a cached model may refer to before
# that model's cache is loaded (a symbol LLVM cannot resolve aborts the process).

#: Argument codes of the declared signatures: arrays of the float dtype (f1, f2) or of int64 (i1),
#: C-contiguous; scalars intp (i) or float64 (d).
_ARGS = {"f1": (1, None), "f2": (2, None), "i1": (1, numba.int64), "i": (0, numba.intp), "d": (0, numba.float64),
         "d1": (1, numba.float64)}
#: name -> (dispatcher, [declared signatures]); a symbol, or a NumPy dtype whose symbols all are,
#: -> True once registered in this process.
_SHARED = {}
_LINKED = {}
_LINK_LOCK = threading.RLock()  # (re-entered when a kernel compiled for its symbol calls another)


def _declared(codes, dtype):
    """The argument types of a declared signature for the float dtype."""
    out = []
    for code in codes.split():
        ndim, fixed = _ARGS[code]
        t = fixed or dtype
        out.append(numba.types.Array(t, ndim, "C") if ndim else t)
    return tuple(out)


def _symbol(name, argtypes, prefix=None):
    tags = "_".join(f"{t.dtype}x{t.ndim}" if isinstance(t, numba.types.Array) else str(t) for t in argtypes)
    return f"derive_{prefix or SHA}_{name}_{tags}"


def _link_one(impl, name, argtypes, prefix=None):
    """Register impl's machine code for argtypes under its symbol (compiling or loading it first)."""
    symbol = _symbol(name, argtypes, prefix)
    if symbol in _LINKED:
        return symbol
    with _LINK_LOCK:
        if symbol not in _LINKED:
            impl.compile(argtypes)
            cres = impl.overloads[argtypes]
            llvmlite.binding.add_symbol(symbol, cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name))
            _LINKED[symbol] = True
    return symbol


def link(dtype=np.float64):
    """Compile (or load from the cache) every shared function for arrays of dtype and register its
    symbol: each model's Python API calls this before its kernels, whose cached code refers to
    these symbols. About 0.2 s the first time in a process with the cache warm; free after."""
    if numba.config.DISABLE_JIT:
        return
    dtype = np.dtype(dtype)
    if dtype in _LINKED:
        return
    for name, (impl, signatures) in _SHARED.items():
        for codes in signatures:
            _link_one(impl, name, _declared(codes, numba.from_dtype(dtype)))
    _LINKED[dtype] = True


def _matches(actual, declared):
    for a, d in zip(actual, declared):
        if isinstance(d, numba.types.Array):
            if not (isinstance(a, numba.types.Array) and a.dtype == d.dtype and a.ndim == d.ndim
                    and a.layout == "C"):  # (a read-only array casts to the declared type as is)
                return False
        elif not isinstance(a, numba.types.Integer if isinstance(d, numba.types.Integer) else numba.types.Number):
            return False
    return len(actual) == len(declared)


def _shared(impl, *signatures, prefix=None):
    """The function that kernels call to run impl's shared compiled code (see above); as Python
    (and under NUMBA_DISABLE_JIT) it calls impl. signatures: argument codes (_ARGS), one string
    per signature, each declared for float32 and float64 arrays. prefix: the symbols' prefix, the
    runtime's SHA for its own functions (registered for link()), a model's key for its kernels."""
    name = impl.__name__.lstrip("_")
    py = getattr(impl, "py_func", impl)

    def call(*args):
        return impl(*args)

    def typer(*args):
        for codes in signatures:
            for dtype in (numba.float64, numba.float32):
                declared = _declared(codes, dtype)
                if _matches(args, declared):
                    impl.compile(declared)
                    # read-only arrays stay read-only here (they share the declared type's layout in
                    # memory, and Numba converts no array to a writeable one); scalars convert
                    return numba.core.typing.signature(
                        impl.overloads[declared].signature.return_type,
                        *[a if isinstance(a, numba.types.Array) else d for a, d in zip(args, declared)])
        return None

    def lower(context, builder, signature, args):
        declared = tuple(t.copy(readonly=False) if isinstance(t, numba.types.Array) else t for t in signature.args)
        symbol = _link_one(impl, name, declared, prefix)
        fnty = context.call_conv.get_function_type(signature.return_type, declared)
        fn = numba.core.cgutils.get_or_insert_function(builder.module, fnty, symbol)
        status, result = context.call_conv.call_function(builder, fn, signature.return_type, declared, args)
        with numba.core.cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return result

    call.__name__ = call.__qualname__ = name
    call.__doc__ = py.__doc__
    call.__signature__ = typer.__signature__ = inspect.signature(py)
    if not numba.config.DISABLE_JIT:
        if prefix is None:
            _SHARED[name] = (impl, signatures)
        numba.extending.type_callable(call)(lambda context: typer)
        numba.extending.lower_builtin(call, *[numba.types.Any] * len(signatures[0].split()))(lower)
    return call


def _file_key(path):
    """The symbol prefix of a model module's separate kernels: its content hash, read as the
    module is imported (each of its kernels reads it, ~20 us each). Not cached per path: a module
    rebuilt at the same path and imported again in the same process (a notebook) would get the
    old module's symbols, and its train() would run the old kernels."""
    with open(path, "rb") as f:
        return "m" + hashlib.sha256(f.read()).hexdigest()[:16]


def separate(path, codes):
    """Decorator for a model kernel that its callers call through a stable symbol, as they call
    the runtime's shared functions, instead of linking its code into theirs: Numba optimises a
    caller together with everything linked into it (a model's training loop, when it linked its
    step and all the step calls, spent about 1.5 s of a new model's first train() optimising that
    code again). codes: the
    kernel's argument codes (_ARGS, the arrays in the model's float dtype); path: the model
    module's file, whose content hash names the symbols (a rebuilt module gets new ones). The
    returned function has link(dtype), which the model's API calls before its kernels run (their
    cached code refers to the symbol), address(dtype), the address of its machine code (what the
    training loop calls), and py_func, the kernel as Python."""
    prefix = _file_key(path)

    def wrap(impl):
        call = _shared(impl, codes, prefix=prefix)
        name = impl.__name__.lstrip("_")

        def link_kernel(dtype):
            if not numba.config.DISABLE_JIT:
                return _link_one(impl, name, _declared(codes, numba.from_dtype(np.dtype(dtype))), prefix)
            return None

        addresses = {}

        def address(dtype):
            """The address of the kernel's machine code for arrays of dtype (compiled or loaded and
            registered first); under NUMBA_DISABLE_JIT, the kernel as Python."""
            found = addresses.get(dtype)
            if found is None:
                symbol = link_kernel(dtype)
                found = call.py_func if symbol is None else llvmlite.binding.address_of_symbol(symbol)
                addresses[dtype] = found
            return found

        call.link = link_kernel
        call.address = address
        call.py_func = getattr(impl, "py_func", impl)
        call.dispatcher = impl
        return call

    return wrap


def entry(kernel, dtype):
    """What the training loops call for a model's step: the address of the machine code of its
    _batch_at (a separate kernel) for arrays of dtype, or the function itself when it runs as
    Python (under NUMBA_DISABLE_JIT, or swapped for its Python function)."""
    address = getattr(kernel, "address", None)
    return kernel if address is None else address(dtype)


mm = _shared(_mm, "f2 f2 f1 f2")
mm_relu = _shared(_mm_relu, "f2 f2 f1 f2")
mm_tn = _shared(_mm_tn, "f2 f2 f2 f1")
mm_nt = _shared(_mm_nt, "f2 f2 f2")


# --------------------------------------------------------------------------- the training loop
# One training loop for every model, compiled here once per dtype (and cached with the runtime):
# it calls the model's _batch_at, one step, through the address of its machine code (call_at).
# _batch_at finds the model's arrays in a table: per array three int64, (address, rows, columns),
# in the order API.layout gives; one row of the table per buffer direction (the step reads the
# parameters and optimizer state from one buffer and writes the other; the next step goes back).
# So a new model compiles no loop of its own: a loop with 60 array arguments and their two call
# sites took a 3-layer Adam model's first train() 1.2 s to compile; its _batch_at takes ~0.45 s.


def _at(tab, k, like, ndim):
    """As Python: a view through ctypes of the array of entry k of the table tab."""
    shape = (int(tab[k + 1]), int(tab[k + 2]))[:ndim]
    size = int(np.prod(shape)) * like.dtype.itemsize
    return np.frombuffer((ctypes.c_char * size).from_address(int(tab[k])), like.dtype).reshape(shape)


def view1(tab, k, like):
    """The 1-D array of entry k of a model's table (see above), of like's dtype."""
    return _at(tab, k, like, 1)


def view2(tab, k, like):
    """The 2-D array of entry k of a model's table (see above), of like's dtype."""
    return _at(tab, k, like, 2)


def rows2(tab, k, r, like):
    """The first r rows of view2(tab, k, like) (a work array cut to a batch)."""
    return _at(tab, k, like, 2)[:r]


def _view_lower(context, builder, signature, args):
    tab_type, k_type = signature.args[:2]
    out_type = signature.return_type
    tab = context.make_array(tab_type)(context, builder, args[0])
    k = context.cast(builder, args[1], k_type, numba.intp)

    def field(i):  # tab[k + i]: 0 the address, 1 the rows, 2 the columns
        index = builder.add(k, context.get_constant(numba.intp, i))
        return builder.load(numba.core.cgutils.get_item_pointer(context, builder, tab_type, tab, [index]))

    shape = [field(1 + d) for d in range(out_type.ndim)]
    if len(args) == 4:  # rows2: r rows
        shape[0] = context.cast(builder, args[2], signature.args[2], numba.intp)
    itemsize = context.get_constant(numba.intp, context.get_abi_sizeof(context.get_data_type(out_type.dtype)))
    strides = [itemsize] if out_type.ndim == 1 else [builder.mul(shape[1], itemsize), itemsize]
    data = builder.inttoptr(field(0), context.get_data_type(out_type.dtype).as_pointer())
    out = context.make_array(out_type)(context, builder)
    numba.np.arrayobj.populate_array(out, data=data, shape=shape, strides=strides, itemsize=itemsize, meminfo=None)
    return numba.core.imputils.impl_ret_untracked(context, builder, out_type, out._getvalue())


def _view_type(ndim, tab, ints, like):
    if isinstance(tab, numba.types.Array) and tab.dtype == numba.int64 and tab.ndim == 1 and \
            all(isinstance(i, numba.types.Integer) for i in ints) and isinstance(like, numba.types.Array):
        return numba.types.Array(like.dtype, ndim, "C")
    return None


_primitive(view1, lambda tab, k, like: _view_type(1, tab, (k,), like), _view_lower,
           numba.types.Array, numba.types.Integer, numba.types.Array)
_primitive(view2, lambda tab, k, like: _view_type(2, tab, (k,), like), _view_lower,
           numba.types.Array, numba.types.Integer, numba.types.Array)
_primitive(rows2, lambda tab, k, r, like: _view_type(2, tab, (k, r), like), _view_lower,
           numba.types.Array, numba.types.Integer, numba.types.Integer, numba.types.Array)


def call_at(fn, X, Y, r, tab, t, epoch, hv):
    """fn(X, Y, r, tab, t, epoch, hv): a model's _batch_at; compiled, fn is the address of its
    machine code, called with Numba's calling convention (its exceptions reach the caller)."""
    return fn(X, Y, r, tab, t, epoch, hv)


def _call_at_typer(fn, X, Y, r, tab, t, epoch, hv):
    if isinstance(fn, numba.types.Integer) and isinstance(X, numba.types.Array):
        return numba.core.typing.signature(numba.float64, fn, X, Y, r, tab, t, epoch, hv)
    return None


def _call_at_lower(context, builder, signature, args):
    declared = tuple(numba.types.Array(t.dtype, t.ndim, "C") if isinstance(t, numba.types.Array) else numba.intp
                     for t in signature.args[1:])
    values = [v if isinstance(t, numba.types.Array) else context.cast(builder, v, t, numba.intp)
              for v, t in zip(args[1:], signature.args[1:])]
    fnty = context.call_conv.get_function_type(numba.float64, declared)
    fn = builder.inttoptr(context.cast(builder, args[0], signature.args[0], numba.intp), fnty.as_pointer())
    status, result = context.call_conv.call_function(builder, fn, numba.float64, declared, values)
    with numba.core.cgutils.if_unlikely(builder, status.is_error):
        context.call_conv.return_status_propagate(builder, status)
    return result


_primitive(call_at, _call_at_typer, _call_at_lower, *[numba.types.Any] * 8)


@numba.njit(**_JIT)
def _train_loop(fn, X, Y, tab, Xb, Yb, perm, history, gnorm, gw, epochs, batch_size, shuffle, seeded, seed, t0,
                epoch0, hv):
    """The whole run: epochs x mini-batches, fresh shuffle per epoch, in one compiled call; each
    step is fn (a model's _batch_at) with the table row of its buffer direction. Records the mean
    loss (history[e]) and the mean norm of each layer's weight gradient (gnorm[e, l]; the
    gradients are table entries gw[l]) of every epoch, when gnorm has rows. seeded: the model
    draws dropout masks, from the stream of (seed, epoch) after the row order.
    Returns (status, epoch, batch, steps, flip): status 1 when a batch loss was not finite
    (then no update was made for it); flip 1 when the latest parameters are in the second buffer."""
    n = X.shape[0]
    B = min(batch_size, n)
    nb = (n + B - 1) // B
    t = t0
    flip = 0
    for e in range(epochs):
        if shuffle:  # the stream of (seed, epoch): the row order, then any dropout masks
            _shuffle_epoch(perm, seed, epoch0 + e)
        elif seeded:
            _seed_epoch(seed, epoch0 + e)
        track = e < gnorm.shape[0]
        if track:
            for l in range(gnorm.shape[1]):
                gnorm[e, l] = 0.0
        total = 0.0
        for b in range(nb):
            s = b * B
            r = min(B, n - s)
            if shuffle:
                _gather(X, Y, perm, s, r, Xb, Yb)
                value = call_at(fn, Xb[:r], Yb[:r], r, tab[flip], t + 1, epoch0 + e, hv)
            else:  # the rows in order: the batch is a slice, no copy (~1.6 MB a step for large)
                value = call_at(fn, X[s:s + r], Y[s:s + r], r, tab[flip], t + 1, epoch0 + e, hv)
            if not math.isfinite(value):
                return 1, e, b, t - t0, flip
            t += 1
            flip = 1 - flip
            total += value * r
            if track:
                for l in range(gw.size):
                    gnorm[e, l] += _norm(view2(tab[0], gw[l], X)) / nb
        history[e] = total / n
    return 0, epochs, 0, t - t0, flip


@numba.njit(**_JIT_NRT, parallel=True)
def _train_many_loop(fn, X, Y, tabs, Xbs, Ybs, perms, histories, gnorms, gw, epochs, batch_size, shuffle, seeded,
                     seeds, t0, epoch0, results, hvs):
    """_train_loop for K independent runs (restarts, sweeps) at once, spread over the cores: every
    per-run array (the tables, hvs: each run's hyperparameters) has a leading axis of length K;
    results[k] = (status, epoch, batch, steps, flip)."""
    for k in numba.prange(results.shape[0]):
        status, epoch, batch, steps, flip = _train_loop(fn, X, Y, tabs[k], Xbs[k], Ybs[k], perms[k], histories[k],
                                                        gnorms[k], gw, epochs, batch_size, shuffle, seeded, seeds[k],
                                                        t0, epoch0, hvs[k])
        results[k, 0], results[k, 1], results[k, 2], results[k, 3], results[k, 4] = status, epoch, batch, steps, flip


# --------------------------------------------------------------------------- modules and caches


def _module_of(namespace):
    """The module whose globals are namespace, registered in sys.modules under its __name__ when
    it is not (a module executed from a file path without registering it): Numba records the
    module of every compiled function by name, and one it cannot import becomes '<dynamic>', a
    cache entry that no later process can load."""
    name = namespace["__name__"]
    module = sys.modules.get(name)
    if module is not None and module.__dict__ is namespace:
        return module
    if module is not None:  # the name belongs to another module: compile, but write no cache
        return None
    for ref in gc.get_referrers(namespace):
        if isinstance(ref, types.ModuleType) and ref.__dict__ is namespace:
            sys.modules[name] = ref
            return ref
    return None


def _guard(dispatcher, save):
    """Make a cache entry this process cannot load a cache miss (it is then recompiled and
    rewritten) instead of an error from inside Numba; with save False, write no entries."""
    cache = getattr(dispatcher, "_cache", None)
    if cache is None or getattr(cache, "_derive_guarded", False):
        return
    load = cache.load_overload

    def load_overload(sig, target_context):
        try:
            return load(sig, target_context)
        except Exception:  # e.g. ModuleNotFoundError: an entry compiled under another module name
            return None

    cache.load_overload = load_overload
    if not save:
        cache.save_overload = lambda sig, data: None
    cache._derive_guarded = True


def adopt(namespace):
    """Guard the caches of every Numba dispatcher defined in the module of namespace (its
    globals()), after registering the module in sys.modules where it is not (see _module_of)."""
    if numba.config.DISABLE_JIT:
        return
    save = _module_of(namespace) is not None
    for value in list(namespace.values()):
        value = getattr(value, "dispatcher", value)  # a kernel called through a symbol (separate)
        if isinstance(value, numba.core.dispatcher.Dispatcher) and \
                getattr(value.py_func, "__module__", None) == namespace["__name__"]:
            _guard(value, save)


def check(abi, sha, module):
    """Raise ImportError unless this is the runtime a model module was built with."""
    if abi != ABI or sha != SHA:
        here = os.path.dirname(os.path.abspath(__file__))
        raise ImportError(
            f"{module} was built with derive's kernel runtime {sha} (interface {abi}), but "
            f"{os.path.join(here, os.path.basename(__file__))} is runtime {SHA} (interface {ABI}); "
            "run `derive build` to regenerate the package (or copy the model and _kernel_runtime.py "
            "from the same build)")


# --------------------------------------------------------------------------- the Python API

#: The dtypes the kernels take (comparing with these dtype objects is ~6x faster than with the types).
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
#: Initialisers of init_params (as torch.nn.init; gain = the layer activation's gain in INIT).
INIT_SCHEMES = ("xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "torch_linear")
#: The last work arrays of train() and step() in this thread, per model (see API._scratch).
_SCRATCH = threading.local()


def _nans(shape):
    """A float64 array of NaN (np.full took twice as long for the small arrays of train())."""
    out = np.empty(shape)
    out.fill(np.nan)
    return out


def _empty(shape, dtype, fill=None):
    """np.empty(shape, dtype) starting on a 64-byte cache line, every element set from fill
    (broadcast and converted) when given. NumPy aligns to 16 bytes, so a 32-byte vector load of
    the register tiles crossed a cache line in every other load or none, by chance: the small
    network's float64 step took 5.2 us with its work arrays 16 bytes past a line and 4.9 us on it."""
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    buf = np.empty(size + 64, np.uint8)
    start = -buf.__array_interface__["data"][0] % 64
    out = buf[start:start + size].view(dtype).reshape(shape)
    if fill is not None:
        out[...] = fill
    return out


class API:
    """The Python side of one generated model: checks every argument, allocates the work arrays,
    and calls the model's kernels through its adapters (functions of the model module that know
    the kernels' argument lists). A model module creates one and binds its public functions to it.

    model: the model's constants, as the module defines them (name, SPEC, PARAM_NAMES, HYPER,
    HYPER_RANGES, STATE_NAMES, SCALAR_STATE, INIT, DROPOUT) and its adapters (state_init, forward,
    loss, gradients, step, and entry: dtype -> the model's _batch_at for the training loops)."""

    def __init__(self, **model):
        for key, value in model.items():
            setattr(self, key, value)
        self.state_keys = [f"{s}_{p}" for s in self.STATE_NAMES for p in self.PARAM_NAMES] + list(self.SCALAR_STATE)
        self.param_keys = frozenset(self.PARAM_NAMES)
        self.param_ndim = tuple(2 if name[0] == "W" else 1 for name in self.PARAM_NAMES)
        self.linked = set()  # the dtypes whose runtime functions and separate kernels are linked
        self.seeded = any(self.DROPOUT)  # the training loop seeds the dropout masks of each epoch
        # The table's entries (see layout): P parameter arrays and their second buffers, the work
        # arrays (Z, A per layer; H, M too after dropout), the deltas, the gradients, S state
        # arrays and their second buffers, C scalar states and theirs. swap: the order of the
        # entries for the other buffer direction; gw: the entries of the weight gradients.
        P, C = len(self.PARAM_NAMES), len(self.SCALAR_STATE)
        S = len(self.state_keys) - C
        L = P // 2
        g = 2 * P + 2 * L + 2 * sum(1 for p in self.DROPOUT if p) + L  # the first gradient's entry
        order = [*range(P, 2 * P), *range(P), *range(2 * P, g + P)]
        order += [*range(g + P + S, g + P + 2 * S), *range(g + P, g + P + S)]
        order += [*range(g + P + 2 * S + C, g + P + 2 * S + 2 * C), *range(g + P + 2 * S, g + P + 2 * S + C)]
        self.swap = np.array([3 * i + j for i in order for j in range(3)], dtype=np.int64)
        self.gw = np.array([3 * (g + i) for i in range(0, P, 2)], dtype=np.int64)

    def fail(self, message):
        raise ValueError(f"{self.name}: {message}")

    # ----------------------------------------------------------------------- checks

    def params(self, params, writeable=False):
        """The parameter arrays in PARAM_NAMES order, checked: dtype, shapes, contiguity."""
        names = self.PARAM_NAMES
        if not isinstance(params, dict):
            self.fail(f"params must be a dict of arrays keyed {names}, got {type(params).__name__}")
        if not params.keys() >= self.param_keys:
            missing = [k for k in names if k not in params]
            self.fail(f"params is missing {missing}; expected keys {names}")
        arrays = [params[k] for k in names]
        dtype = None
        for name, arr, ndim in zip(names, arrays, self.param_ndim):
            if type(arr) is not np.ndarray:
                self.fail(f"params[{name!r}] must be a plain numpy array, got {type(arr).__name__}; "
                          "use np.asarray(...)")
            if dtype is None or arr.dtype != dtype:  # (not `dtype != arr.dtype` alone: NumPy reads None as float64)
                if arr.dtype not in _FLOATS:
                    self.fail(f"params[{name!r}] has dtype {arr.dtype}; use float32 or float64")
                if dtype is not None:
                    self.fail(f"params[{name!r}] is {arr.dtype} but params[{names[0]!r}] is {dtype}; use one dtype")
                dtype = arr.dtype
            if arr.ndim != ndim:
                self.fail(f"params[{name!r}] must be {ndim}-D, got shape {arr.shape}")
            flags = arr.flags
            if not flags.c_contiguous:
                self.fail(f"params[{name!r}] is not C-contiguous; pass np.ascontiguousarray(...)")
            if writeable and not flags.writeable:
                self.fail(f"params[{name!r}] is read-only; step() updates parameters in place")
        for l in range(0, len(arrays), 2):
            W, b = arrays[l], arrays[l + 1]
            if b.shape != (W.shape[1],):
                self.fail(f"params[{names[l + 1]!r}] has shape {b.shape}, expected ({W.shape[1]},) to match {names[l]}")
            if l and W.shape[0] != arrays[l - 2].shape[1]:
                self.fail(f"params[{names[l]!r}] has {W.shape[0]} rows but the previous layer has "
                          f"{arrays[l - 2].shape[1]} units")
        self.link(dtype)
        return arrays

    def link(self, dtype):
        """Compile (or load from the cache) and register the runtime's functions and this model's
        separate kernels for arrays of dtype, once per process."""
        if dtype not in self.linked:
            link(dtype)
            for kernel in getattr(self, "KERNELS", ()):
                kernel.link(dtype)
            self.linked.add(dtype)

    def data(self, name, arr, dtype, cols):
        if type(arr) is not np.ndarray:
            self.fail(f"{name} must be a plain numpy array, got {type(arr).__name__}; use np.asarray({name})")
        if arr.dtype != dtype:
            self.fail(f"{name} has dtype {arr.dtype} but the parameters are {dtype}; convert with "
                      f"{name}.astype(np.{dtype})")
        if arr.ndim != 2 or arr.shape[1] != cols:
            self.fail(f"{name} must have shape (n_samples, {cols}), got {arr.shape}")
        if arr.shape[0] == 0:
            self.fail(f"{name} is empty (0 samples)")
        if not arr.flags.c_contiguous:
            self.fail(f"{name} is not C-contiguous; pass np.ascontiguousarray({name})")
        if not _all_finite(arr):
            bad = np.argwhere(~np.isfinite(arr))[0]
            self.fail(f"{name} has a non-finite value {arr[tuple(bad)]} at row {bad[0]}, column {bad[1]}")
        return arr

    def targets(self, Y, dtype, cols):
        """Y of a softmax model (TARGETS = "distribution"): rows of class probabilities (one-hot or
        not), or class labels 0 .. cols-1 as a 1-D integer array, returned as one-hot rows."""
        if type(Y) is np.ndarray and Y.ndim == 1 and Y.dtype.kind in "iub":
            bad = np.flatnonzero((Y < 0) | (Y >= cols))
            if bad.size:
                self.fail(f"Y has the class label {Y[bad[0]]} at row {bad[0]}, but the softmax output has {cols} "
                          f"classes: labels must be 0 .. {cols - 1}")
            onehot = np.zeros((Y.shape[0], cols), dtype)
            onehot[np.arange(Y.shape[0]), Y] = 1.0
            Y = onehot
        Y = self.data("Y", Y, dtype, cols)
        row = _not_distribution(Y, 1e-6 if dtype == np.float64 else 1e-4)
        if row >= 0:
            self.fail(f"Y row {row} is not a probability distribution (entries >= 0 summing to 1; it sums to "
                      f"{float(Y[row].sum()):.6g}, smallest entry {float(Y[row].min()):.6g}): pass one-hot rows, "
                      "class probabilities, or class labels as a 1-D integer array")
        return Y

    def inputs(self, params, X, Y=None, writeable=False):
        arrays = self.params(params, writeable)
        X = self.data("X", X, arrays[0].dtype, arrays[0].shape[0])
        if Y is not None:
            if getattr(self, "TARGETS", None) == "distribution":
                Y = self.targets(Y, arrays[0].dtype, arrays[-1].shape[0])
            else:
                Y = self.data("Y", Y, arrays[0].dtype, arrays[-1].shape[0])
            if Y.shape[0] != X.shape[0]:
                self.fail(f"X has {X.shape[0]} samples but Y has {Y.shape[0]}")
        return arrays, X, Y

    def hyper(self, hyper):
        """(values in HYPER order, dict) with defaults filled in; every value checked."""
        HYPER = self.HYPER
        if not hyper.keys() <= HYPER.keys():
            unknown = sorted(set(hyper) - set(HYPER))
            self.fail(f"unknown hyperparameter {unknown[0]!r}; this module takes {sorted(HYPER)}")
        values = {**HYPER, **hyper}
        for k, v in values.items():
            if type(v) is float and v - v == 0.0:  # a finite Python float (the common case, checked fast)
                continue
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) or \
                    not math.isfinite(v):
                self.fail(f"hyperparameter {k} must be a finite number, got {v!r}")
        for k, (low, low_open, high, high_open, text) in self.HYPER_RANGES.items():
            v = values[k]
            if (v <= low if low_open else v < low) or (v >= high if high_open else v > high):
                self.fail(f"hyperparameter {k} must lie in {text}, got {v!r}")
        return [float(values[k]) for k in HYPER], values

    def int(self, name, value, low):
        if type(value) is int and value >= low:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            self.fail(f"{name} must be an integer >= {low}, got {value!r}")
        return int(value)

    def seed(self, seed):
        seed = self.int("seed", seed, 0)
        if seed >= 2**32:
            self.fail(f"seed must be below 2**32, got {seed}")
        return seed

    def state(self, state, arrays):
        if not isinstance(state, dict) or "t" not in state or "epoch" not in state:
            self.fail("state must be the dict returned by init_state(params)")
        for key in ("t", "epoch"):
            v = state[key]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                self.fail(f"state[{key!r}] must be an integer >= 0, got {v!r}")
        for sname in self.STATE_NAMES:
            for pname, arr in zip(self.PARAM_NAMES, arrays):
                key = f"{sname}_{pname}"
                s = state.get(key)
                if not isinstance(s, np.ndarray) or s.shape != arr.shape or s.dtype != arr.dtype:
                    self.fail(f"state[{key!r}] must be an array like params[{pname!r}] ({arr.dtype}, {arr.shape}); "
                              "call init_state(params) again after changing the parameters")
                if not s.flags.c_contiguous or not s.flags.writeable:
                    self.fail(f"state[{key!r}] must be a writeable C-contiguous array")
        for sname in self.SCALAR_STATE:
            s = state.get(sname)
            if not isinstance(s, np.ndarray) or s.shape != (1,) or s.dtype != np.float64:
                self.fail(f"state[{sname!r}] must be a float64 array of shape (1,), as init_state makes it")
        return state

    # ----------------------------------------------------------------------- work arrays

    def workspace(self, arrays, n):
        """Pre-activations Z_l, activations A_l and deltas D_l (N x n_l); for layers with dropout
        also the dropped-out activations H_l and the masks M_l (None for the others)."""
        widths = [arrays[l].shape[1] for l in range(0, len(arrays), 2)]
        dtype = arrays[0].dtype
        Zs = [_empty((n, w), dtype) for w in widths]
        As = [_empty((n, w), dtype) for w in widths]
        Ds = [_empty((n, w), dtype) for w in widths]
        drops = self.DROPOUT + (0.0,)
        Hs = [_empty((n, w), dtype) if p else None for w, p in zip(widths, drops)]
        Ms = [_empty((n, w), dtype) if p else None for w, p in zip(widths, drops)]
        return Zs, As, Ds, Hs, Ms

    def scratch(self, arrays, n):
        """The work arrays of train() and step() for batches of n rows: workspace()'s, the
        gradients, the batch buffers Xb, Yb, and train()'s second buffers of the parameters (outs)
        and optimizer state (state_out). Kept for the next call in the same thread with the same
        model, shapes and dtype (allocating them was a quarter of train()'s fixed cost per call;
        keeping the second buffers too, with faster checks, took a tiny network's call from 31 to
        24 us): none of them reaches the caller, each thread has its own (the kernels release the
        GIL), and train() reads a second buffer only after a step has written all of it."""
        key = (self, arrays[0].dtype, n, *[a.shape for a in arrays])
        entry = getattr(_SCRATCH, "entry", None)
        if entry is None or entry[0] != key:
            Zs, As, Ds, Hs, Ms = self.workspace(arrays, n)
            grads = [_empty(p.shape, p.dtype) for p in arrays]
            Xb = _empty((n, arrays[0].shape[0]), arrays[0].dtype)
            Yb = _empty((n, arrays[-1].shape[0]), arrays[0].dtype)
            outs = [_empty(p.shape, p.dtype) for p in arrays]
            state_out = {f"{s}_{p}": _empty(a.shape, a.dtype)
                         for s in self.STATE_NAMES for p, a in zip(self.PARAM_NAMES, arrays)}
            state_out.update({s: np.empty(1) for s in self.SCALAR_STATE})
            entry = _SCRATCH.entry = (key, (Zs, As, Ds, Hs, Ms, grads, Xb, Yb, outs, state_out))
        return entry[1]

    def layout(self, arrays, outs, grads, state, state_out, Zs, As, Ds, Hs, Ms):
        """The arrays of the model's _batch_at in the order of its table: the parameters, their
        second buffers, per layer Z, A (and H, M with dropout), the deltas, the gradients, the
        optimizer state arrays and their second buffers, the scalar state and its second buffer
        (self.swap and self.gw index this order)."""
        n = len(self.state_keys) - len(self.SCALAR_STATE)
        st = [state[k] for k in self.state_keys]
        so = [state_out[k] for k in self.state_keys]
        work = [x for z, a, h, m in zip(Zs, As, Hs, Ms) for x in ((z, a) if h is None else (z, a, h, m))]
        return [*arrays, *outs, *work, *Ds, *grads, *st[:n], *so[:n], *st[n:], *so[n:]]

    def table(self, entries, runs=0):
        """The table of the training loops (see _train_loop): for each array of entries (layout's
        order) its address, rows and columns; row 0 for the steps that read the first buffers and
        write the second, row 1 for the others. runs: K for train_many, whose arrays have a
        leading run axis: then a (K, 2, 3 x entries) table, run k's entries at a[k]."""
        # an array's address, kept per thread under a weak reference (a.ctypes.data costs ~1 us:
        # a tiny model's train() calls alternating between two runs took 67 us without this, 35
        # with it); the reference does not keep the array alive, and a dead one's id may be reused
        known = getattr(_SCRATCH, "addresses", None)
        if known is None or len(known) > 512:
            known = _SCRATCH.addresses = {}
        flat = []
        for a in entries:
            hit = known.get(id(a))
            if hit is None or hit[0]() is not a:
                hit = known[id(a)] = (weakref.ref(a), a.ctypes.data)
            shape = a.shape[1:] if runs else a.shape
            flat += (hit[1], shape[0], shape[1] if len(shape) == 2 else 1)
        row = np.array(flat, dtype=np.int64)
        if not runs:
            tab = np.empty((2, row.size), dtype=np.int64)
            tab[0] = row
            tab[1] = row[self.swap]
            return tab
        tab = np.empty((runs, 2, row.size), dtype=np.int64)
        tab[:, 0] = row
        tab[:, 0, 0::3] += np.arange(runs)[:, None] * np.array([a.strides[0] for a in entries], dtype=np.int64)
        tab[:, 1] = tab[:, 0][:, self.swap]
        return tab

    # ----------------------------------------------------------------------- the public functions

    def init_params(self, seed=0, dtype=np.float64, init=None, widths=None):
        seed = self.int("seed", seed, 0)
        if np.dtype(dtype) not in (np.float32, np.float64):
            self.fail(f"dtype must be float32 or float64, got {dtype!r}")
        n_layers = len(self.SPEC["layers"])
        schemes = [s for s, _ in self.INIT] if init is None else [init] * n_layers if isinstance(init, str) \
            else list(init)
        if len(schemes) != n_layers:
            self.fail(f"init needs one initialiser per layer ({n_layers}), got {len(schemes)}")
        for scheme in schemes:
            if scheme not in INIT_SCHEMES:
                self.fail(f"unknown initialiser {scheme!r}; choose from {INIT_SCHEMES}")
        hidden = [layer[0] for layer in self.SPEC["layers"][:-1]]
        if widths is not None:  # the kernels read widths from the arrays: any hidden widths train
            widths = list(widths)
            if len(widths) != len(hidden) or any(type(w) is not int and not isinstance(w, np.integer) or w < 1
                                                 for w in widths):
                self.fail(f"widths must be {len(hidden)} positive integers (the hidden layers), got {widths!r}")
            hidden = [int(w) for w in widths]
        rng = np.random.default_rng(seed)
        widths = [self.SPEC["inputs"], *hidden, self.SPEC["layers"][-1][0]]
        params = {}
        for l in range(1, len(widths)):
            fan_in, fan_out = widths[l - 1], widths[l]
            scheme, gain = schemes[l - 1], self.INIT[l - 1][1]
            b = np.zeros(fan_out)
            if scheme == "xavier_uniform":
                a = gain * math.sqrt(6.0 / (fan_in + fan_out))
                W = rng.uniform(-a, a, size=(fan_in, fan_out))
            elif scheme == "xavier_normal":
                W = rng.normal(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), size=(fan_in, fan_out))
            elif scheme == "he_uniform":
                a = gain * math.sqrt(3.0 / fan_in)
                W = rng.uniform(-a, a, size=(fan_in, fan_out))
            elif scheme == "he_normal":
                W = rng.normal(0.0, gain / math.sqrt(fan_in), size=(fan_in, fan_out))
            else:  # torch_linear
                a = 1.0 / math.sqrt(fan_in)
                W = rng.uniform(-a, a, size=(fan_in, fan_out))
                b = rng.uniform(-a, a, size=fan_out)
            params[f"W{l}"] = _empty(W.shape, dtype, W)
            params[f"b{l}"] = _empty(b.shape, dtype, b)
        return params

    def init_state(self, params, hyper):
        arrays = self.params(params)
        _, values = self.hyper(hyper)
        per_param, scalar = self.state_init(values)
        state = {"t": 0, "epoch": 0}
        for name, value in per_param.items():
            for pname, arr in zip(self.PARAM_NAMES, arrays):
                state[f"{name}_{pname}"] = _empty(arr.shape, arr.dtype, value)
        for name, value in scalar.items():
            state[name] = np.full(1, value, dtype=np.float64)
        return state

    def run_forward(self, params, X):
        arrays, X, _ = self.inputs(params, X)
        Zs, As, _, Hs, Ms = self.workspace(arrays, X.shape[0])
        self.forward(arrays, X, Zs, As, Hs, Ms)
        return As[-1]

    def run_loss(self, params, X, Y, hyper):
        arrays, X, Y = self.inputs(params, X, Y)
        _, hd = self.hyper(hyper)
        Zs, As, Ds, Hs, Ms = self.workspace(arrays, X.shape[0])
        return self.loss(arrays, X, Y, Zs, As, Ds, Hs, Ms, hd)

    def run_gradients(self, params, X, Y, hyper):
        arrays, X, Y = self.inputs(params, X, Y)
        _, hd = self.hyper(hyper)
        Zs, As, Ds, Hs, Ms = self.workspace(arrays, X.shape[0])
        grads = [np.empty_like(p) for p in arrays]
        self.gradients(arrays, X, Y, Zs, As, Ds, Hs, Ms, grads, hd)
        return dict(zip(self.PARAM_NAMES, grads))

    def run_step(self, params, state, X, Y, hyper):
        hv, _ = self.hyper(hyper)
        arrays, X, Y = self.inputs(params, X, Y, writeable=True)
        state = self.state(state, arrays)
        t = int(state["t"]) + 1
        epoch = int(state["epoch"])
        Zs, As, Ds, Hs, Ms, grads, *_ = self.scratch(arrays, X.shape[0])
        value = float(self.step(arrays, state, X, Y, Zs, As, Ds, Hs, Ms, grads, t, epoch, hv))
        if math.isfinite(value):
            state["t"] = t
        return value

    def run_permutations(self, n, epochs, seed, start):
        return _permutations(self.int("n", n, 1), self.int("epochs", epochs, 0), self.seed(seed),
                             self.int("start", start, 0))

    def run_train(self, params, state, X, Y, epochs, batch_size, seed, shuffle, grad_norms, hyper):
        hv, _ = self.hyper(hyper)
        arrays, X, Y = self.inputs(params, X, Y, writeable=True)
        state = self.state(state, arrays)
        epochs = self.int("epochs", epochs, 0)
        batch_size = self.int("batch_size", batch_size, 1)
        seed = self.seed(seed)
        n = X.shape[0]
        B = min(batch_size, n)
        Zs, As, Ds, Hs, Ms, grads, Xb, Yb, outs, state_out = self.scratch(arrays, B)
        perm = np.empty(n, dtype=np.int64)
        history = _nans(epochs)
        gnorm = _nans((epochs if grad_norms else 0, len(self.PARAM_NAMES) // 2))
        t0 = int(state["t"])
        epoch0 = int(state["epoch"])
        # the table of the last call in this thread, when its arrays are these (a train() of a
        # tiny network in a loop: building it took 5-15 us a call)
        user = (*arrays, *[state[k] for k in self.state_keys])
        last = getattr(_SCRATCH, "table", None)
        if last is not None and last[0] is Zs and len(last[1]) == len(user) and \
                all(a is b for a, b in zip(last[1], user)):
            tab = last[2]
        else:
            tab = self.table(self.layout(arrays, outs, grads, state, state_out, Zs, As, Ds, Hs, Ms))
            last = _SCRATCH.table = (Zs, user, tab, None, None)
        if last[3] != hv:
            last = _SCRATCH.table = (*last[:3], hv, np.array(hv, dtype=np.float64))
        fn = self.entry(arrays[0].dtype)
        status, epoch, batch, steps, flip = (_train_loop.py_func if callable(fn) else _train_loop)(
            fn, X, Y, tab, Xb, Yb, perm, history, gnorm, self.gw, epochs, batch_size, bool(shuffle), self.seeded,
            seed, t0, epoch0, last[4])
        return self.finish(arrays, outs, state, state_out, history, gnorm, epochs, t0, status, epoch, batch, steps,
                           flip)

    def finish(self, arrays, outs, state, state_out, history, gnorm, epochs, t0, status, epoch, batch, steps, flip):
        """Bring the latest (or, after a non-finite loss, the last finite) buffer back into params
        and state, and build the result of train()."""
        if status == 1 and steps > 0:
            flip = 1 - flip  # the last finite parameters are in the other buffer
            steps -= 1
        if flip == 1:
            for p, o in zip(arrays, outs):
                p[...] = o
            for k in self.state_keys:
                state[k][...] = state_out[k]
        state["t"] = int(t0 + steps)
        done = int(epoch) if status else epochs
        state["epoch"] = int(state["epoch"]) + done
        return {"loss": history[:done], "grad_norm": gnorm[:done], "status": "non-finite" if status else "ok",
                "epoch": int(epoch), "batch": int(batch), "steps": int(steps)}

    def per_run(self, hyper, K):
        """The hyperparameters of K runs: each value one number for all, or a sequence of K numbers
        (per-run values); returns one float64 array of K values per hyperparameter, in HYPER order."""
        runs = [{} for _ in range(K)]
        for key, value in hyper.items():
            if isinstance(value, (list, tuple, np.ndarray)):
                values = np.asarray(value).ravel() if isinstance(value, np.ndarray) else value
                if len(values) != K or (isinstance(value, np.ndarray) and value.ndim != 1):
                    self.fail(f"hyperparameter {key} has {len(values)} values, expected one number or one per run "
                              f"({K})")
                for k in range(K):
                    runs[k][key] = values[k].item() if isinstance(values[k], np.generic) else values[k]
            else:
                for k in range(K):
                    runs[k][key] = value
        table = []
        for k in range(K):
            try:
                table.append(self.hyper(runs[k])[0])
            except ValueError as exc:
                raise ValueError(f"{exc} (run {k})") from None
        return [np.array([row[j] for row in table], dtype=np.float64) for j in range(len(self.HYPER))]

    def run_train_many(self, params_list, states, X, Y, epochs, batch_size, seeds, shuffle, grad_norms, hyper):
        if not isinstance(params_list, (list, tuple)) or not params_list:
            self.fail("params_list must be a non-empty list of params dicts")
        K = len(params_list)
        hv = self.per_run(hyper, K)
        if not isinstance(states, (list, tuple)) or len(states) != K:
            self.fail(f"states must be a list of {K} state dicts, one per params dict")
        runs = []
        for k in range(K):
            arrays, X, Y = self.inputs(params_list[k], X, Y, writeable=True)
            if k and any(a.shape != b.shape or a.dtype != b.dtype for a, b in zip(arrays, runs[0][0])):
                self.fail(f"params_list[{k}] differs in shape or dtype from params_list[0]")
            st = self.state(states[k], arrays)
            if k and (st["t"] != runs[0][1]["t"] or st["epoch"] != runs[0][1]["epoch"]):
                self.fail(f"states[{k}] is at a different step or epoch than states[0]; restarts run in lockstep")
            runs.append((arrays, st))
        seeds = list(range(K)) if seeds is None else list(seeds)
        if len(seeds) != K:
            self.fail(f"seeds must have one seed per run ({K}), got {len(seeds)}")
        seed = np.array([self.seed(s) for s in seeds], dtype=np.int64)
        epochs = self.int("epochs", epochs, 0)
        batch_size = self.int("batch_size", batch_size, 1)
        n = X.shape[0]
        B = min(batch_size, n)
        # train()'s arrays with a leading run axis, under the same names
        arrays = [np.stack([r[0][i] for r in runs]) for i in range(len(self.PARAM_NAMES))]
        outs = [a.copy() for a in arrays]
        grads = [np.empty_like(a) for a in arrays]
        state = {k: np.stack([r[1][k] for r in runs]) for k in self.state_keys}
        state_out = {k: v.copy() for k, v in state.items()}
        Zs, As, Ds, Hs, Ms = [[None if w is None else np.stack([w] * K) for w in ws]
                              for ws in self.workspace(runs[0][0], B)]
        Xb = np.empty((K, B, X.shape[1]), X.dtype)
        Yb = np.empty((K, B, Y.shape[1]), Y.dtype)
        perm = np.empty((K, n), dtype=np.int64)
        history = _nans((K, epochs))
        gnorm = _nans((K, epochs if grad_norms else 0, len(self.PARAM_NAMES) // 2))
        results = np.zeros((K, 5), dtype=np.int64)
        t0 = int(runs[0][1]["t"])
        epoch0 = int(runs[0][1]["epoch"])
        tabs = self.table(self.layout(arrays, outs, grads, state, state_out, Zs, As, Ds, Hs, Ms), K)
        hvs = np.stack(hv, axis=1) if hv else np.empty((K, 0))
        fn = self.entry(arrays[0].dtype)
        (_train_many_loop.py_func if callable(fn) else _train_many_loop)(
            fn, X, Y, tabs, Xb, Yb, perm, history, gnorm, self.gw, epochs, batch_size, bool(shuffle), self.seeded,
            seed, t0, epoch0, results, hvs)
        out = []
        for k, (arrs, st) in enumerate(runs):
            status, epoch, batch, steps, flip = (int(v) for v in results[k])
            for p, a in zip(arrs, arrays):
                p[...] = a[k]
            for key in self.state_keys:
                st[key][...] = state[key][k]
            out.append(self.finish(arrs, [o[k] for o in outs], st, {key: v[k] for key, v in state_out.items()},
                                   history[k], gnorm[k], epochs, t0, status, epoch, batch, steps, flip))
        return out


adopt(globals())
