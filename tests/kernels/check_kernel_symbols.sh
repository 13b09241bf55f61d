#!/bin/sh
# The kernel tables' objects must keep their kernel code in their own namespace
# (kernels/detail/isa.hpp): a kernel symbol outside it would be shared with other
# sets' copies and the linker would keep one of them for all. And the objects
# must sit in the archive in ascending order, so that what they do share (the
# standard library's inline functions, flamingo::fail, ...) is kept from the
# lowest set that uses it: the linker keeps the first copy it loads.
#   check_kernel_symbols.sh LIBFLAMINGO.a
set -eu
lib=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0

order=$(ar t "$lib" | grep -n 'kernels_\(sse2\|avx2\|avx512\)' | cut -d: -f2 | tr '\n' ' ')
if [ "$order" != "kernels_sse2.cpp.o kernels_avx2.cpp.o kernels_avx512.cpp.o " ]; then
  echo "FAIL: archive order of the kernel tables is '$order', want sse2 avx2 avx512"
  status=1
fi

cd "$tmp"
ar x "$lib"
for set in sse2 avx2 avx512; do
  obj=kernels_$set.cpp.o
  # Defined symbols that name kernel code, minus those in the set's namespace and
  # the one deliberately shared switch (gemm.hpp: bf16_dot_switch).
  bad=$(nm -C --defined-only "$obj" | cut -c20- | grep 'flamingo::kernels::' |
        grep -v "flamingo::kernels::dispatch_$set::" | grep -v 'flamingo::kernels::bf16_dot_switch()' || true)
  if [ -n "$bad" ]; then
    echo "FAIL: $obj defines kernel symbols outside flamingo::kernels::dispatch_$set:"
    echo "$bad" | head -20
    status=1
  fi
  n=$(nm -C --defined-only "$obj" | grep -c "flamingo::kernels::dispatch_$set::" || true)
  echo "$obj: $n symbols in dispatch_$set"
  [ "$n" -gt 0 ] || { echo "FAIL: $obj has no kernels in dispatch_$set"; status=1; }
done
exit $status
