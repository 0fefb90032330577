"""Explicit float32 vector operations on rows of labels, as numba intrinsics.

The mean-field kernels spend their time on rows of labels: ``acc += w * row`` over the
d+1 corners of a simplex, for every point. Left to itself the compiler keeps ``acc`` in
memory (it cannot prove the rows do not overlap) and vectorises only rows whose length it
can split into its preferred blocks, so 21 labels would need padding to 32. Written as
LLVM vector code, the accumulator stays in a register across the corners and a row is
any multiple of :data:`ROW_STEP` long: blocks of :data:`LANES` floats, then one block of
4 where the length is not a multiple of 8 (21 labels -> 24, 2 labels -> 4: a two-label
volume moves half the memory it would padded to 8).

Every function here expects C-contiguous 2-D float32 arrays (int32 offsets) whose row
length is a multiple of ROW_STEP; callers check that (:func:`whole_lanes`).
"""

from __future__ import annotations

import numba as nb
from llvmlite import ir  # type: ignore[import-untyped]  # llvmlite ships no type hints
from numba.core import cgutils, types
from numba.extending import intrinsic

#: Floats per vector operation (256-bit registers: AVX2 and AVX-512 machines alike).
LANES = 8
#: Rows are a multiple of this long: whole vectors, then at most one half vector.
ROW_STEP = 4

_F32 = ir.FloatType()
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_VEC = ir.VectorType(_F32, LANES)
_HALF_VEC = ir.VectorType(_F32, ROW_STEP)
# Reassociation and fused multiply-adds are allowed: summation order is not specified.
_FAST = ("fast",)


@nb.njit(cache=True, nogil=True)
def whole_lanes(width: int) -> bool:
    """Whether rows of ``width`` floats can use these operations."""
    return width > 0 and width % ROW_STEP == 0


def _row_ptr(context, builder, aryty, ary, row):
    """float* to ary[row, 0] of a C-contiguous 2-D float32 array."""
    a = context.make_array(aryty)(context, builder, ary)
    stride = cgutils.unpack_tuple(builder, a.strides, 2)[0]
    base = builder.ptrtoint(a.data, _I64)
    return builder.inttoptr(builder.add(base, builder.mul(row, stride)), _F32.as_pointer())


def _width(context, builder, aryty, ary):
    a = context.make_array(aryty)(context, builder, ary)
    return cgutils.unpack_tuple(builder, a.shape, 2)[1]


def _arg_row(context, builder, signature, args, array, row):
    """float* to row ``args[row]`` of the 2-D array ``args[array]`` of an intrinsic."""
    aryty, ary = signature.args[array], args[array]
    index = _int64(context, builder, args[row], signature.args[row])
    return _row_ptr(context, builder, aryty, ary, index)


def _arg_width(context, builder, signature, args, array):
    """Row length of the 2-D array ``args[array]`` of an intrinsic."""
    return _width(context, builder, signature.args[array], args[array])


def _item(context, builder, aryty, ary, i, j):
    a = context.make_array(aryty)(context, builder, ary)
    shape = cgutils.unpack_tuple(builder, a.shape, 2)
    strides = cgutils.unpack_tuple(builder, a.strides, 2)
    ptr = cgutils.get_item_pointer2(context, builder, a.data, shape, strides, aryty.layout, [i, j])
    return builder.load(ptr)


def _load(builder, row, col, vec=_VEC):
    return builder.load(builder.bitcast(builder.gep(row, [col]), vec.as_pointer()), align=4)


def _store(builder, value, row, col):
    builder.store(value, builder.bitcast(builder.gep(row, [col]), value.type.as_pointer()), align=4)


def _broadcast(builder, x, vec=_VEC):
    v = builder.insert_element(ir.Constant(vec, ir.Undefined), x, ir.Constant(_I32, 0))
    mask = ir.Constant(ir.VectorType(_I32, vec.count), [0] * vec.count)
    return builder.shuffle_vector(v, ir.Constant(vec, ir.Undefined), mask)


def _int64(context, builder, value, ty):
    return context.cast(builder, value, ty, types.int64)


def _blocks(builder, width, body):
    """body(col, vec) over a row of ``width`` floats: LANES-wide blocks, then the last
    half block (columns width-4 .. width-1) where width is not a multiple of LANES."""
    with cgutils.for_range(builder, builder.udiv(width, ir.Constant(_I64, LANES))) as chunk:
        body(builder.mul(chunk.index, ir.Constant(_I64, LANES)), _VEC)
    tail = builder.urem(width, ir.Constant(_I64, LANES))
    with builder.if_then(builder.icmp_unsigned("!=", tail, ir.Constant(_I64, 0))):
        body(builder.sub(width, ir.Constant(_I64, ROW_STEP)), _HALF_VEC)


@intrinsic
def gather_point(typingctx, out, b, base, values, offsets, weights, k):
    """out[b] = base[k] + sum_r weights[k, r] * values[offsets[k, r]] (rows of labels).

    The sum over corners r runs in a register, block by block of LANES labels.
    """
    sig = types.void(out, b, base, values, offsets, weights, k)

    def codegen(context, builder, signature, args):
        out_v, b_v, base_v, val_v, off_v, w_v, k_v = args
        out_t, b_t, base_t, val_t, off_t, w_t, k_t = signature.args
        k64 = _int64(context, builder, k_v, k_t)
        corners = _width(context, builder, off_t, off_v)
        out_row = _row_ptr(context, builder, out_t, out_v, _int64(context, builder, b_v, b_t))
        base_row = _row_ptr(context, builder, base_t, base_v, k64)

        def block(col, vec):
            acc = cgutils.alloca_once_value(builder, _load(builder, base_row, col, vec))
            with cgutils.for_range(builder, corners) as corner:
                r = corner.index
                o = builder.sext(_item(context, builder, off_t, off_v, k64, r), _I64)
                w = _broadcast(builder, _item(context, builder, w_t, w_v, k64, r), vec)
                v = _load(builder, _row_ptr(context, builder, val_t, val_v, o), col, vec)
                term = builder.fmul(w, v, flags=_FAST)
                builder.store(builder.fadd(builder.load(acc), term, flags=_FAST), acc)
            _store(builder, builder.load(acc), out_row, col)

        _blocks(builder, _width(context, builder, out_t, out_v), block)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def scatter_point(typingctx, buf, offsets, weights, k, rows, b):
    """buf[offsets[k, r]] += weights[k, r] * rows[b] for every corner r."""
    sig = types.void(buf, offsets, weights, k, rows, b)

    def codegen(context, builder, signature, args):
        buf_v, off_v, w_v, k_v, rows_v, b_v = args
        buf_t, off_t, w_t, k_t, rows_t, b_t = signature.args
        k64 = _int64(context, builder, k_v, k_t)
        corners = _width(context, builder, off_t, off_v)
        src = _row_ptr(context, builder, rows_t, rows_v, _int64(context, builder, b_v, b_t))

        def block(col, vec):
            q = _load(builder, src, col, vec)
            with cgutils.for_range(builder, corners) as corner:
                r = corner.index
                o = builder.sext(_item(context, builder, off_t, off_v, k64, r), _I64)
                w = _broadcast(builder, _item(context, builder, w_t, w_v, k64, r), vec)
                dst = _row_ptr(context, builder, buf_t, buf_v, o)
                term = builder.fmul(w, q, flags=_FAST)
                total = builder.fadd(_load(builder, dst, col, vec), term, flags=_FAST)
                _store(builder, total, dst, col)

        _blocks(builder, _width(context, builder, rows_t, rows_v), block)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def blur_point(typingctx, dst, src, v, a, b):
    """dst[v] = src[v] + (src[a] + src[b]) / 2: one vertex's blur along one lattice axis."""
    sig = types.void(dst, src, v, a, b)

    def codegen(context, builder, signature, args):
        dst_v, src_v, v_v, a_v, b_v = args
        dst_t, src_t, v_t, a_t, b_t = signature.args
        out = _row_ptr(context, builder, dst_t, dst_v, _int64(context, builder, v_v, v_t))
        mid = _row_ptr(context, builder, src_t, src_v, _int64(context, builder, v_v, v_t))
        lo = _row_ptr(context, builder, src_t, src_v, _int64(context, builder, a_v, a_t))
        hi = _row_ptr(context, builder, src_t, src_v, _int64(context, builder, b_v, b_t))

        def block(col, vec):
            half = _broadcast(builder, ir.Constant(_F32, 0.5), vec)
            lo_hi = _load(builder, lo, col, vec), _load(builder, hi, col, vec)
            side = builder.fadd(*lo_hi, flags=_FAST)
            value = builder.fadd(
                _load(builder, mid, col, vec), builder.fmul(half, side, flags=_FAST), flags=_FAST
            )
            _store(builder, value, out, col)

        _blocks(builder, _width(context, builder, src_t, src_v), block)
        return context.get_dummy_value()

    return sig, codegen


def _larger(builder, a, b):
    return builder.select(builder.fcmp_ordered(">", a, b), a, b)


def _add(builder, a, b):
    return builder.fadd(a, b, flags=_FAST)


def _fold_row(builder, row, width, start, combine):
    """combine() of a row's floats from the float ``start``: over its blocks as vectors,
    then over their lanes (a row's maximum or sum)."""
    acc = cgutils.alloca_once_value(builder, start)
    acc8 = cgutils.alloca_once_value(builder, _broadcast(builder, start))

    def block(col, vec):
        x = _load(builder, row, col, vec)
        if vec is _VEC:
            builder.store(combine(builder, x, builder.load(acc8)), acc8)
            return
        out = builder.load(acc)
        for i in range(vec.count):
            out = combine(builder, builder.extract_element(x, ir.Constant(_I32, i)), out)
        builder.store(out, acc)

    _blocks(builder, width, block)
    vec = builder.load(acc8)
    out = builder.load(acc)
    for i in range(LANES):
        out = combine(builder, builder.extract_element(vec, ir.Constant(_I32, i)), out)
    return out


@intrinsic
def row_max(typingctx, rows, b):
    """max_j rows[b, j]."""
    sig = types.float32(rows, b)

    def codegen(context, builder, signature, args):
        src = _arg_row(context, builder, signature, args, 0, 1)
        first = builder.load(src)  # max is idempotent: start from the row's first float
        width = _arg_width(context, builder, signature, args, 0)
        return _fold_row(builder, src, width, first, _larger)

    return sig, codegen


@intrinsic
def subtract_row(typingctx, out, rows, b, m):
    """out[b] = rows[b] - m."""
    sig = types.void(out, rows, b, m)

    def codegen(context, builder, signature, args):
        dst = _arg_row(context, builder, signature, args, 0, 2)
        src = _arg_row(context, builder, signature, args, 1, 2)
        m = context.cast(builder, args[3], signature.args[3], types.float32)

        def block(col, vec):
            diff = builder.fsub(
                _load(builder, src, col, vec), _broadcast(builder, m, vec), flags=_FAST
            )
            _store(builder, diff, dst, col)

        _blocks(builder, _arg_width(context, builder, signature, args, 1), block)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def normalize_row(typingctx, rows, b):
    """rows[b] /= sum_j rows[b, j] (a row of exponentials becomes a softmax)."""
    sig = types.void(rows, b)

    def codegen(context, builder, signature, args):
        row = _arg_row(context, builder, signature, args, 0, 1)
        width = _arg_width(context, builder, signature, args, 0)
        s = _fold_row(builder, row, width, ir.Constant(_F32, 0.0), _add)
        inv = builder.fdiv(ir.Constant(_F32, 1.0), s, flags=_FAST)

        def block(col, vec):
            scaled = builder.fmul(
                _load(builder, row, col, vec), _broadcast(builder, inv, vec), flags=_FAST
            )
            _store(builder, scaled, row, col)

        _blocks(builder, width, block)
        return context.get_dummy_value()

    return sig, codegen
