/*
 * blas.c - which OpenBLAS kernels to ask for.
 *
 * OpenBLAS picks its kernels once, when it is loaded, from the CPU model.
 * On a CPU newer than the installed OpenBLAS knows (common in virtual
 * machines that report a generic model), it falls back to Prescott (SSE3),
 * four to five times slower than the AVX-512 or AVX2 kernels the CPU can
 * run.  The only remedy is OPENBLAS_CORETYPE in the environment before the
 * library loads, so the tools re-execute themselves once with it set.
 */
#include <cpuid.h>
#include <stdlib.h>
#include <strings.h>

#include <cblas.h>

#include "sa.h"

/* The OS saves the AVX (bits 1, 2) and AVX-512 (bits 5-7) register state. */
static unsigned long long
xcr0(void)
{
	unsigned int lo, hi;

	__asm__ volatile ("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return (unsigned long long)hi << 32 | lo;
}

const char *
sa_blas_coretype(void)
{
	unsigned int a, b, c, d, a1 = 0, b1, c1, d1;
	const char *name = openblas_get_corename();

	if (getenv("OPENBLAS_CORETYPE") || !name ||
	    (strcasecmp(name, "prescott") && strcasecmp(name, "generic")))
		return NULL;
	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE) || !(c & bit_FMA))
		return NULL;
	unsigned long long x = xcr0();
	if ((x & 0x6) != 0x6 || !__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & bit_AVX2))
		return NULL;
	int avx512 = (x & 0xe0) == 0xe0 && (b & bit_AVX512F) && (b & bit_AVX512DQ) &&
	    (b & bit_AVX512BW) && (b & bit_AVX512VL);
	if (!avx512)
		return "Haswell";
	__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1);
	return (a1 & (1u << 5)) ? "Cooperlake" : "SkylakeX";   /* AVX512_BF16 */
}
