/*
 * types.c - ggml tensor types: names, block sizes, and the conversions of the
 * types this build computes with (F32, F16, BF16, Q8_0) to and from F32.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sa.h"
#include "kernels_impl.h"
#include "types_impl.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

/* Names and block geometry by ggml id (ggml.h); ids 4, 5, 31-33 and 36-38
 * were removed from the format and stay empty. */
static const struct {
	const char *name;
	int64_t block_elems;
	size_t block_bytes;
} type_table[] = {
	[0] = { "F32", 1, 4 },
	[1] = { "F16", 1, 2 },
	[2] = { "Q4_0", 32, 18 },
	[3] = { "Q4_1", 32, 20 },
	[6] = { "Q5_0", 32, 22 },
	[7] = { "Q5_1", 32, 24 },
	[8] = { "Q8_0", 32, 34 },
	[9] = { "Q8_1", 32, 36 },
	[10] = { "Q2_K", 256, 84 },
	[11] = { "Q3_K", 256, 110 },
	[12] = { "Q4_K", 256, 144 },
	[13] = { "Q5_K", 256, 176 },
	[14] = { "Q6_K", 256, 210 },
	[15] = { "Q8_K", 256, 292 },
	[16] = { "IQ2_XXS", 256, 66 },
	[17] = { "IQ2_XS", 256, 74 },
	[18] = { "IQ3_XXS", 256, 98 },
	[19] = { "IQ1_S", 256, 50 },
	[20] = { "IQ4_NL", 32, 18 },
	[21] = { "IQ3_S", 256, 110 },
	[22] = { "IQ2_S", 256, 82 },
	[23] = { "IQ4_XS", 256, 136 },
	[24] = { "I8", 1, 1 },
	[25] = { "I16", 1, 2 },
	[26] = { "I32", 1, 4 },
	[27] = { "I64", 1, 8 },
	[28] = { "F64", 1, 8 },
	[29] = { "IQ1_M", 256, 56 },
	[30] = { "BF16", 1, 2 },
	[34] = { "TQ1_0", 256, 54 },
	[35] = { "TQ2_0", 256, 66 },
	[39] = { "MXFP4", 32, 17 },
	[40] = { "NVFP4", 64, 36 },
	[41] = { "Q1_0", 128, 18 },
	[42] = { "Q2_0", 64, 18 },
};
#define N_TYPES ((int)(sizeof type_table / sizeof type_table[0]))

_Static_assert(sizeof(sa_block_q8_0) == 34, "block_q8_0 is 34 bytes in GGUF");

int
sa_type_block(int type, int64_t *block_elems, size_t *block_bytes)
{
	if (type < 0 || type >= N_TYPES || !type_table[type].name)
		return 0;
	*block_elems = type_table[type].block_elems;
	*block_bytes = type_table[type].block_bytes;
	return 1;
}

const char *
sa_type_name(int type)
{
	static _Thread_local char buf[24];

	if (type >= 0 && type < N_TYPES && type_table[type].name)
		return type_table[type].name;
	snprintf(buf, sizeof buf, "type %d", type);
	return buf;
}

int
sa_type_supported(int type)
{
	return type == SA_TYPE_F32 || type == SA_TYPE_F16 || type == SA_TYPE_BF16 ||
	    type == SA_TYPE_Q8_0;
}

size_t
sa_type_row_size(int type, int64_t n)
{
	int64_t be;
	size_t bb;

	if (!sa_type_supported(type) || n < 0 || !sa_type_block(type, &be, &bb) || n % be)
		return 0;
	if ((uint64_t)(n / be) > SIZE_MAX / bb)
		return 0;
	return (size_t)(n / be) * bb;
}

/* ------------------------------------------------------ scalar conversion */

static uint32_t
f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static float
bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

float
sa_fp16_to_fp32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exp = (h >> 10) & 0x1f;
	uint32_t mant = h & 0x3ff;

	if (exp == 0) {
		/* zero or subnormal: mant * 2^-24, exact in binary32 */
		float v = (float)mant * 0x1p-24f;
		return bits_f32(f32_bits(v) | sign);
	}
	if (exp == 31)
		return bits_f32(sign | 0x7f800000 | (mant << 13));
	return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t
sa_fp32_to_fp16(float f)
{
	uint32_t x = f32_bits(f);
	uint16_t sign = (x >> 16) & 0x8000;
	uint32_t ax = x & 0x7fffffff;
	uint32_t e = ax >> 23, m = ax & 0x7fffff;

	if (ax >= 0x7f800000) {
		if (ax > 0x7f800000)  /* NaN: keep it quiet and keep the top payload */
			return sign | 0x7e00 | (m >> 13);
		return sign | 0x7c00;
	}
	/* 65520 is halfway between 65504 (largest half) and 65536: ties go to
	 * the even neighbour, which is infinity. */
	if (ax >= 0x477ff000)
		return sign | 0x7c00;
	if (ax < 0x38800000) {
		/* below the smallest normal half: a multiple of 2^-24, or zero */
		if (e < 102)
			return sign;
		uint32_t mant = m | 0x800000, shift = 126 - e;
		uint32_t r = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
		if (rem > half || (rem == half && (r & 1)))
			r++;
		return sign | (uint16_t)r;
	}
	uint32_t h = ((e - 112) << 10) | (m >> 13), rem = m & 0x1fff;
	if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
		h++;  /* a carry into the exponent is still the right value */
	return sign | (uint16_t)h;
}

float
sa_bf16_to_fp32(uint16_t h)
{
	return bits_f32((uint32_t)h << 16);
}

uint16_t
sa_fp32_to_bf16(float f)
{
	uint32_t x = f32_bits(f);

	if ((x & 0x7fffffff) > 0x7f800000)
		return (uint16_t)((x >> 16) | 0x40);
	return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

/* --------------------------------------------------------- row conversion */

#ifdef HAVE_X86
/* src [n] fp16 -> dst [n] f32; the hardware conversion is exact. */
__attribute__((target("avx,f16c")))
static void
f16_to_f32_f16c(const uint16_t *src, float *dst, int64_t n)
{
	int64_t i = 0;

	for (; i + 8 <= n; i += 8) {
		__m128i h = _mm_loadu_si128((const __m128i *)(src + i));
		_mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
	}
	for (; i < n; i++)
		dst[i] = sa_fp16_to_fp32(src[i]);
}

/* src [n] f32 -> dst [n] fp16, round to nearest even like the scalar path. */
__attribute__((target("avx,f16c")))
static void
f32_to_f16_f16c(const float *src, uint16_t *dst, int64_t n)
{
	int64_t i = 0;

	for (; i + 8 <= n; i += 8) {
		__m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
		_mm_storeu_si128((__m128i *)(dst + i), h);
	}
	for (; i < n; i++)
		dst[i] = sa_fp32_to_fp16(src[i]);
}

/* The kernels' choice (kernels.c), whose AVX2 set needs F16C, so that
 * SA_KERNELS=generic holds here too. */
static int
have_f16c(void)
{
	return !strcmp(sa_kernels_name(), "avx2");
}
#endif

static void
f16_to_f32(const uint16_t *src, float *dst, int64_t n)
{
#ifdef HAVE_X86
	if (have_f16c()) {
		f16_to_f32_f16c(src, dst, n);
		return;
	}
#endif
	for (int64_t i = 0; i < n; i++)
		dst[i] = sa_fp16_to_fp32(src[i]);
}

static void
f32_to_f16(const float *src, uint16_t *dst, int64_t n)
{
#ifdef HAVE_X86
	if (have_f16c()) {
		f32_to_f16_f16c(src, dst, n);
		return;
	}
#endif
	for (int64_t i = 0; i < n; i++)
		dst[i] = sa_fp32_to_fp16(src[i]);
}

/* Q8_0 blocks -> f32 [n]: x = d * q.  Blocks are read bytewise: a row
 * may start at any address (34-byte blocks keep only 2-byte alignment). */
static void
q8_0_to_f32(const uint8_t *src, float *dst, int64_t n)
{
	for (int64_t i = 0; i < n / SA_QK8_0; i++) {
		const uint8_t *blk = src + i * sizeof(sa_block_q8_0);
		const int8_t *qs = (const int8_t *)(blk + 2);
		uint16_t d16;
		memcpy(&d16, blk, 2);
		float d = sa_fp16_to_fp32(d16);
		for (int j = 0; j < SA_QK8_0; j++)
			dst[i * SA_QK8_0 + j] = d * (float)qs[j];
	}
}

/* f32 [n] -> Q8_0 blocks: d = amax/127, q = round(x/d).  The quotient is
 * taken as x * (1/d) with the unrounded d, as ggml does, so the bytes match
 * what llama.cpp's quantizer writes. */
static void
f32_to_q8_0(const float *src, uint8_t *dst, int64_t n)
{
	for (int64_t i = 0; i < n / SA_QK8_0; i++) {
		const float *x = src + i * SA_QK8_0;
		uint8_t *blk = dst + i * sizeof(sa_block_q8_0);
		int8_t *qs = (int8_t *)(blk + 2);
		float amax = 0;
		for (int j = 0; j < SA_QK8_0; j++)
			amax = fmaxf(amax, fabsf(x[j]));
		float d = amax / 127;
		float id = d != 0 ? 1 / d : 0;
		uint16_t d16 = sa_fp32_to_fp16(d);
		memcpy(blk, &d16, 2);
		for (int j = 0; j < SA_QK8_0; j++)
			qs[j] = (int8_t)roundf(x[j] * id);
	}
}

void
sa_row_to_f32(int type, const void *src, float *dst, int64_t n)
{
	switch (type) {
	case SA_TYPE_F32:
		memcpy(dst, src, (size_t)n * sizeof(float));
		break;
	case SA_TYPE_F16:
		f16_to_f32(src, dst, n);
		break;
	case SA_TYPE_BF16: {
		const uint16_t *s = src;
		for (int64_t i = 0; i < n; i++)
			dst[i] = sa_bf16_to_fp32(s[i]);
		break;
	}
	case SA_TYPE_Q8_0:
		q8_0_to_f32(src, dst, n);
		break;
	default:
		/* unsupported: callers check sa_type_supported(); zeros beat garbage */
		memset(dst, 0, (size_t)n * sizeof(float));
		break;
	}
}

void
sa_row_from_f32(int type, const float *src, void *dst, int64_t n)
{
	switch (type) {
	case SA_TYPE_F32:
		memcpy(dst, src, (size_t)n * sizeof(float));
		break;
	case SA_TYPE_F16:
		f32_to_f16(src, dst, n);
		break;
	case SA_TYPE_BF16: {
		uint16_t *d = dst;
		for (int64_t i = 0; i < n; i++)
			d[i] = sa_fp32_to_bf16(src[i]);
		break;
	}
	case SA_TYPE_Q8_0:
		f32_to_q8_0(src, dst, n);
		break;
	default:
		break;
	}
}
