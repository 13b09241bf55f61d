#!/bin/sh
# The kernel tables' objects must keep their kernel code in their own namespace
# (kernels/detail/isa.hpp): a kernel symbol outside it would be shared with other
# sets' copies and the linker would keep one of them for all. And the objects
# must sit in the archive in ascending order, so that what they do share (the
# standard library's inline functions, flamingo::fail, ...) is kept from the
# lowest set that uses it: the linker keeps the first copy it loads. Needs
# binutils (nm, ar, objdump).
#   check_kernel_symbols.sh LIBFLAMINGO.a
set -eu
lib=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0

order=$(ar t "$lib" | grep -n 'kernels_\(sse2\|avx2\|avxvnni\|avx512\)' | cut -d: -f2 | tr '\n' ' ')
if [ "$order" != "kernels_sse2.cpp.o kernels_avx2.cpp.o kernels_avxvnni.cpp.o kernels_avx512.cpp.o " ]; then
  echo "FAIL: archive order of the kernel tables is '$order', want sse2 avx2 avxvnni avx512"
  status=1
fi

cd "$tmp"
ar x "$lib"
for set in sse2 avx2 avxvnni avx512; do
  obj=kernels_$set.cpp.o
  # Defined symbols that name kernel code, minus those in the set's namespace,
  # the one deliberately shared switch (gemm.hpp: bf16_dot_switch) and the
  # accessors of the types and the constant all sets share (emitted when not inlined, as at -O1;
  # covered by the archive order like the standard library's functions).
  bad=$(nm -C --defined-only "$obj" | cut -c20- | grep 'flamingo::kernels::' |
        grep -v "flamingo::kernels::dispatch_$set::" | grep -v 'flamingo::kernels::bf16_dot_switch()' |
        grep -v '^flamingo::kernels::\(QMatrix\|QBuffer\|RopeTable\|AttentionArgs\)::' |
        grep -v '^flamingo::kernels::kQBlock$' || true)
  if [ -n "$bad" ]; then
    echo "FAIL: $obj defines kernel symbols outside flamingo::kernels::dispatch_$set:"
    echo "$bad" | head -20
    status=1
  fi
  n=$(nm -C --defined-only "$obj" | grep -c "flamingo::kernels::dispatch_$set::" || true)
  echo "$obj: $n symbols in dispatch_$set"
  [ "$n" -gt 0 ] || { echo "FAIL: $obj has no kernels in dispatch_$set"; status=1; }
done

# The compile flags reached the objects: no 256/512-bit registers in sse2, no
# 512-bit or mask registers in avx2 and avxvnni, and the wide ones (and
# avxvnni's vpdpbusd) where they belong.
count() { objdump -d "$1" | grep -cE "$2" || true; }
[ "$(count kernels_sse2.cpp.o '%[yz]mm')" -eq 0 ] || { echo "FAIL: kernels_sse2 uses ymm/zmm registers"; status=1; }
[ "$(count kernels_avx2.cpp.o '%zmm|%k[0-7]')" -eq 0 ] || { echo "FAIL: kernels_avx2 uses AVX-512 registers"; status=1; }
[ "$(count kernels_avx2.cpp.o '%ymm')" -gt 0 ] || { echo "FAIL: kernels_avx2 has no AVX code"; status=1; }
[ "$(count kernels_avxvnni.cpp.o '%zmm|%k[0-7]')" -eq 0 ] || { echo "FAIL: kernels_avxvnni uses AVX-512 registers"; status=1; }
[ "$(count kernels_avxvnni.cpp.o 'vpdpbusd')" -gt 0 ] || { echo "FAIL: kernels_avxvnni has no vpdpbusd"; status=1; }
[ "$(count kernels_avx512.cpp.o '%zmm')" -gt 0 ] || { echo "FAIL: kernels_avx512 has no AVX-512 code"; status=1; }
# avxvnni sits before avx512 in the archive, so a shared function that both use
# is kept from avxvnni and may run on an AVX-512 CPU without AVX-VNNI (Zen 4):
# vpdpbusd, avxvnni's only instruction beyond avx2, must stay in its namespace.
stray=$(objdump -d -C kernels_avxvnni.cpp.o | awk '/^[0-9a-f]+ <.*>:$/ {fn = $0} /vpdpbusd/ {print fn}' |
        sort -u | grep -v 'flamingo::kernels::dispatch_avxvnni::' || true)
[ -z "$stray" ] || { echo "FAIL: vpdpbusd outside dispatch_avxvnni:"; echo "$stray" | head; status=1; }
exit $status
