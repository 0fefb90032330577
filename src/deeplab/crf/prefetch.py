"""Software prefetch as numba intrinsics: ask for a cache line before it is needed.

Hash-table probes and lattice-row gathers miss the caches at random; a loop that knows
its next addresses a few iterations ahead can have them on their way meanwhile
(``llvm.prefetch``: a hint, never a fault, so an index past the array is harmless but
wasted; callers clamp it).
"""

from __future__ import annotations

from llvmlite import ir  # type: ignore[import-untyped]  # llvmlite ships no type hints
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["prefetch", "prefetch_row"]

_I32 = ir.IntType(32)
_BYTES = ir.IntType(8).as_pointer()


def _emit(builder, ptr) -> None:
    fnty = ir.FunctionType(ir.VoidType(), [_BYTES, _I32, _I32, _I32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
    # (address, read, locality 3: keep in all cache levels, data cache)
    args = [ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)]
    builder.call(fn, [builder.bitcast(ptr, _BYTES), *args])


@intrinsic
def prefetch(typingctx, array, index):
    """Prefetch ``array[index]`` of a 1-D array."""
    sig = types.void(array, index)

    def codegen(context, builder, signature, args):
        aryty, idxty = signature.args
        a = context.make_array(aryty)(context, builder, args[0])
        i = context.cast(builder, args[1], idxty, types.intp)
        _emit(builder, cgutils.get_item_pointer(context, builder, aryty, a, [i]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def prefetch_row(typingctx, array, row):
    """Prefetch the start of row ``row`` of a 2-D array."""
    sig = types.void(array, row)

    def codegen(context, builder, signature, args):
        aryty, idxty = signature.args
        a = context.make_array(aryty)(context, builder, args[0])
        i = context.cast(builder, args[1], idxty, types.intp)
        zero = ir.Constant(i.type, 0)
        _emit(builder, cgutils.get_item_pointer(context, builder, aryty, a, [i, zero]))
        return context.get_dummy_value()

    return sig, codegen
