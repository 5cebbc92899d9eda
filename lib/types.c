/*
 * types.c - ggml tensor types: names, block sizes, and the conversions of the
 * types this build computes with (F32, F16, BF16, Q8_0 and the Q4_0 .. Q6_K
 * blocks of llama-quantize's presets) to and from F32.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sa.h"
#include "kernels_impl.h"
#include "types_impl.h"

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
_Static_assert(sizeof(sa_block_q4_0) == 18 && sizeof(sa_block_q4_1) == 20 &&
    sizeof(sa_block_q5_0) == 22 && sizeof(sa_block_q5_1) == 24, "Q4/Q5 block sizes");
_Static_assert(sizeof(sa_block_q2_k) == 84 && sizeof(sa_block_q3_k) == 110 &&
    sizeof(sa_block_q4_k) == 144 && sizeof(sa_block_q5_k) == 176 &&
    sizeof(sa_block_q6_k) == 210, "K-quant block sizes");

int
sa_type_block(int type, int64_t *block_elems, size_t *block_bytes)
{
	if (type < 0 || type >= N_TYPES || !type_table[type].name)
		return 0;
	*block_elems = type_table[type].block_elems;
	*block_bytes = type_table[type].block_bytes;
	return 1;
}

int
sa_type_scales(int type, size_t off[2])
{
	off[0] = 0;
	off[1] = 2;
	switch (type) {
	case SA_TYPE_Q4_0: case SA_TYPE_Q5_0: case SA_TYPE_Q8_0: return 1;
	case SA_TYPE_Q4_1: case SA_TYPE_Q5_1: case SA_TYPE_Q4_K: case SA_TYPE_Q5_K: return 2;
	case SA_TYPE_Q2_K: off[0] = offsetof(sa_block_q2_k, d); off[1] = off[0] + 2; return 2;
	case SA_TYPE_Q3_K: off[0] = offsetof(sa_block_q3_k, d); return 1;
	case SA_TYPE_Q6_K: off[0] = offsetof(sa_block_q6_k, d); return 1;
	}
	return 0;
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
	switch (type) {
	case SA_TYPE_F32: case SA_TYPE_F16: case SA_TYPE_BF16: case SA_TYPE_Q8_0:
	case SA_TYPE_Q4_0: case SA_TYPE_Q4_1: case SA_TYPE_Q5_0: case SA_TYPE_Q5_1:
	case SA_TYPE_Q2_K: case SA_TYPE_Q3_K: case SA_TYPE_Q4_K: case SA_TYPE_Q5_K:
	case SA_TYPE_Q6_K:
		return 1;
	}
	return 0;
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

/*
 * Q4_0 .. Q6_K blocks -> f32 [n], in the operation order of ggml's
 * dequantize_row_* (the products are not fused), so the floats are the
 * same bits llama.cpp computes with.
 */
static float
h2f(uint16_t h)
{
	return sa_fp16_to_fp32(h);
}

static void
q4_0_to_f32(const sa_block_q4_0 *b, float *y, int64_t nb)
{
	for (int64_t i = 0; i < nb; i++, y += SA_QK) {
		float d = h2f(b[i].d);
		for (int j = 0; j < 16; j++) {
			y[j] = ((b[i].qs[j] & 0xf) - 8) * d;
			y[j + 16] = ((b[i].qs[j] >> 4) - 8) * d;
		}
	}
}

static void
q4_1_to_f32(const sa_block_q4_1 *b, float *y, int64_t nb)
{
	for (int64_t i = 0; i < nb; i++, y += SA_QK) {
		float d = h2f(b[i].d), m = h2f(b[i].m);
		for (int j = 0; j < 16; j++) {
			y[j] = (b[i].qs[j] & 0xf) * d + m;
			y[j + 16] = (b[i].qs[j] >> 4) * d + m;
		}
	}
}

/* The fifth bit of weight j is bit j of the little-endian qh. */
static uint32_t
qh32(const uint8_t qh[4])
{
	return qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

static void
q5_0_to_f32(const sa_block_q5_0 *b, float *y, int64_t nb)
{
	for (int64_t i = 0; i < nb; i++, y += SA_QK) {
		float d = h2f(b[i].d);
		uint32_t qh = qh32(b[i].qh);
		for (int j = 0; j < 16; j++) {
			y[j] = ((int)((b[i].qs[j] & 0xf) | (qh >> j & 1) << 4) - 16) * d;
			y[j + 16] = ((int)((b[i].qs[j] >> 4) | (qh >> (j + 16) & 1) << 4) - 16) * d;
		}
	}
}

static void
q5_1_to_f32(const sa_block_q5_1 *b, float *y, int64_t nb)
{
	for (int64_t i = 0; i < nb; i++, y += SA_QK) {
		float d = h2f(b[i].d), m = h2f(b[i].m);
		uint32_t qh = qh32(b[i].qh);
		for (int j = 0; j < 16; j++) {
			y[j] = (int)((b[i].qs[j] & 0xf) | (qh >> j & 1) << 4) * d + m;
			y[j + 16] = (int)((b[i].qs[j] >> 4) | (qh >> (j + 16) & 1) << 4) * d + m;
		}
	}
}

/*
 * Where weight e (0..255) of a K-quant block keeps its bits.  Q2_K and
 * Q3_K: 2 bits at shift 2*(e/32 % 4) of qs[e/128*32 + e%32], sub-block
 * e/16; Q3_K's third bit is bit e/32 of hmask[e%32].  Q4_K and Q5_K: the
 * low or high nibble (sub-block e/32 odd or even) of qs[e/64*32 + e%32],
 * Q5_K's fifth bit is bit e/32 of qh[e%32].  Q6_K: 4 bits in the nibble
 * e/64 % 2 of ql[e/128*64 + e/32 % 2*32 + e%32], 2 bits at shift
 * 2*(e/32 % 4) of qh[e/128*32 + e%32], sub-block e/16.  The loops below
 * take a sub-block at a time, where all but e%32 is fixed, so that they
 * vectorize.
 */

static void
q2_k_to_f32(const sa_block_q2_k *b, float *y, int64_t nb)
{
	for (int64_t i = 0; i < nb; i++, y += SA_QK_K) {
		float d = h2f(b[i].d), min = h2f(b[i].dmin);
		for (int s = 0; s < 16; s++) {
			const uint8_t *q = b[i].qs + s / 8 * 32 + s % 2 * 16;
			int shift = 2 * (s / 2 % 4);
			float dl = d * (b[i].scales[s] & 0xf), ml = min * (b[i].scales[s] >> 4);
			for (int l = 0; l < 16; l++)
				y[s * 16 + l] = dl * (q[l] >> shift & 3) - ml;
		}
	}
}

static void
q3_k_to_f32(const sa_block_q3_k *b, float *y, int64_t nb)
{
	for (int64_t i = 0; i < nb; i++, y += SA_QK_K) {
		float d = h2f(b[i].d);
		for (int s = 0; s < 16; s++) {
			const uint8_t *q = b[i].qs + s / 8 * 32 + s % 2 * 16;
			const uint8_t *hm = b[i].hmask + s % 2 * 16;
			int shift = 2 * (s / 2 % 4), bit = s / 2;
			float dl = d * sa_q3_k_scale(b[i].scales, s);
			for (int l = 0; l < 16; l++)
				y[s * 16 + l] = dl * ((q[l] >> shift & 3) - (hm[l] >> bit & 1 ? 0 : 4));
		}
	}
}

/* Q4_K and Q5_K: Q5_K is Q4_K with a fifth bit per weight in qh. */
static void
q4_5_k_to_f32(int q5, const uint8_t *src, float *y, int64_t nb)
{
	size_t bb = q5 ? sizeof(sa_block_q5_k) : sizeof(sa_block_q4_k);

	for (int64_t i = 0; i < nb; i++, y += SA_QK_K) {
		const sa_block_q4_k *b = (const sa_block_q4_k *)(src + i * bb);
		const uint8_t *qh = q5 ? ((const sa_block_q5_k *)b)->qh : NULL;
		const uint8_t *qs = q5 ? ((const sa_block_q5_k *)b)->qs : b->qs;
		float d = h2f(b->d), min = h2f(b->dmin);
		for (int s = 0; s < 8; s++) {
			int sc, m;
			sa_k4_scale_min(b->scales, s, &sc, &m);
			float d1 = d * sc, m1 = min * m;
			const uint8_t *q = qs + s / 2 * 32;
			int shift = s % 2 * 4;
			if (qh)
				for (int l = 0; l < 32; l++)
					y[s * 32 + l] = d1 * ((q[l] >> shift & 0xf) + (qh[l] >> s & 1) * 16) - m1;
			else
				for (int l = 0; l < 32; l++)
					y[s * 32 + l] = d1 * (q[l] >> shift & 0xf) - m1;
		}
	}
}

static void
q6_k_to_f32(const sa_block_q6_k *b, float *y, int64_t nb)
{
	for (int64_t i = 0; i < nb; i++, y += SA_QK_K) {
		float d = h2f(b[i].d);
		for (int s = 0; s < 16; s++) {
			const uint8_t *ql = b[i].ql + s / 8 * 64 + s / 2 % 2 * 32 + s % 2 * 16;
			const uint8_t *qh = b[i].qh + s / 8 * 32 + s % 2 * 16;
			int lo = s / 4 % 2 * 4, hi = 2 * (s / 2 % 4);
			for (int l = 0; l < 16; l++)
				y[s * 16 + l] = d * b[i].scales[s] *
				    (((ql[l] >> lo & 0xf) | (qh[l] >> hi & 3) << 4) - 32);
		}
	}
}

/*
 * f32 [n] -> Q4_0 .. Q5_1 blocks, as ggml's quantize_row_*_ref write them:
 * Q4_0 and Q5_0 scale by the value of largest magnitude (d = max / -8 or
 * -16), Q4_1 and Q5_1 span [min, max].
 */
static void
f32_to_q4_q5(int type, const float *x, uint8_t *dst, int64_t nb)
{
	int bits = type == SA_TYPE_Q4_0 || type == SA_TYPE_Q4_1 ? 4 : 5;
	int sym = type == SA_TYPE_Q4_0 || type == SA_TYPE_Q5_0;
	size_t bb = bits == 4 ? (sym ? 18 : 20) : (sym ? 22 : 24);
	int top = (1 << bits) - 1;

	for (int64_t i = 0; i < nb; i++, x += SA_QK) {
		uint8_t *blk = dst + i * bb, *qs = blk + bb - 16;
		float amax = 0, max = 0, min = x[0], hi = x[0], d, m = 0, id;
		uint32_t qh = 0;
		for (int j = 0; j < SA_QK; j++) {
			if (amax < fabsf(x[j])) {
				amax = fabsf(x[j]);
				max = x[j];
			}
			min = fminf(min, x[j]);
			hi = fmaxf(hi, x[j]);
		}
		if (sym) {
			d = max / -(1 << (bits - 1));
		} else {
			d = (hi - min) / top;
			m = min;
		}
		id = d ? 1.0f / d : 0.0f;
		for (int j = 0; j < 16; j++) {
			int q[2];
			for (int k = 0; k < 2; k++) {
				float v = sym ? x[j + 16 * k] * id + ((1 << (bits - 1)) + 0.5f)
				    : (x[j + 16 * k] - m) * id + 0.5f;
				q[k] = (int)v < top ? (int)v : top;
			}
			qs[j] = (uint8_t)((q[0] & 0xf) | (q[1] & 0xf) << 4);
			qh |= (uint32_t)(q[0] >> 4 & 1) << j | (uint32_t)(q[1] >> 4 & 1) << (j + 16);
		}
		uint16_t h[2] = { sa_fp32_to_fp16(d), sa_fp32_to_fp16(m) };
		memcpy(blk, h, sym ? 2 : 4);
		if (bits == 5)
			for (int k = 0; k < 4; k++)
				blk[(sym ? 2 : 4) + k] = (uint8_t)(qh >> (8 * k));
	}
}

static int
clampi(float v, int lo, int hi)
{
	int q = (int)lroundf(v);
	return q < lo ? lo : q > hi ? hi : q;
}

/*
 * f32 [256] -> the scales of a K-quant block by rounding to nearest: each
 * sub-block of len weights gets scale (max - min) / top and min -min
 * (min <= 0), or with sym its largest magnitude / half the range; the
 * block's d and dmin are the largest of them over smax, the sub-block's
 * ints sc[] and m[] their ratios.  Simpler than llama-quantize's search,
 * enough to make models for tests.  Returns the scales actually used in
 * dl[] and ml[].
 */
static void
k_scales(const float *x, int len, int top, int sym, int smax, uint16_t *d16, uint16_t *dmin16,
    int *sc, int *m, float *dl, float *ml)
{
	int ns = SA_QK_K / len;
	float s[16], mn[16], smx = 0, mmx = 0;

	for (int b = 0; b < ns; b++) {
		float lo = 0, hi = 0, amax = 0;
		for (int j = b * len; j < b * len + len; j++) {
			lo = fminf(lo, x[j]);
			hi = fmaxf(hi, x[j]);
			amax = fmaxf(amax, fabsf(x[j]));
		}
		s[b] = sym ? amax / ((top + 1) / 2) : (hi - lo) / top;
		mn[b] = -lo;
		smx = fmaxf(smx, s[b]);
		mmx = fmaxf(mmx, mn[b]);
	}
	*d16 = sa_fp32_to_fp16(smx / smax);
	*dmin16 = sa_fp32_to_fp16(mmx / smax);
	float d = sa_fp16_to_fp32(*d16), dmin = sa_fp16_to_fp32(*dmin16);
	for (int b = 0; b < ns; b++) {
		sc[b] = d > 0 ? clampi(s[b] / d, 0, smax) : 0;
		m[b] = sym || dmin <= 0 ? 0 : clampi(mn[b] / dmin, 0, smax);
		dl[b] = d * sc[b];
		ml[b] = dmin * m[b];
	}
}

/* The nearest level q of x in [lo, hi] given the sub-block's scale and min. */
static int
k_level(float x, float dl, float ml, int lo, int hi)
{
	return dl > 0 ? clampi((x + ml) / dl, lo, hi) : (lo < 0 ? 0 : lo);
}

static void
f32_to_k(int type, const float *x, uint8_t *dst, int64_t nb)
{
	size_t bb = 0;
	int64_t be;

	sa_type_block(type, &be, &bb);
	for (int64_t i = 0; i < nb; i++, x += SA_QK_K) {
		uint8_t *blk = dst + i * bb;
		int sc[16], m[16];
		float dl[16], ml[16];
		uint16_t d, dmin;
		memset(blk, 0, bb);
		switch (type) {
		case SA_TYPE_Q2_K: {
			sa_block_q2_k *b = (sa_block_q2_k *)blk;
			k_scales(x, 16, 3, 0, 15, &d, &dmin, sc, m, dl, ml);
			for (int s = 0; s < 16; s++)
				b->scales[s] = (uint8_t)(sc[s] | m[s] << 4);
			for (int e = 0; e < SA_QK_K; e++)
				b->qs[e / 128 * 32 + e % 32] |= (uint8_t)(k_level(x[e], dl[e / 16],
				    ml[e / 16], 0, 3) << (2 * (e / 32 % 4)));
			break;
		}
		case SA_TYPE_Q3_K: {
			sa_block_q3_k *b = (sa_block_q3_k *)blk;
			k_scales(x, 16, 7, 1, 31, &d, &dmin, sc, m, dl, ml);
			for (int s = 0; s < 16; s++) {
				int v = sc[s] + 32;
				b->scales[s < 8 ? s : s - 8] |= (uint8_t)((v & 0xf) << (s < 8 ? 0 : 4));
				b->scales[8 + s % 4] |= (uint8_t)((v >> 4) << (2 * (s / 4)));
			}
			for (int e = 0; e < SA_QK_K; e++) {
				int q = k_level(x[e], dl[e / 16], 0, -4, 3) + 4;
				b->qs[e / 128 * 32 + e % 32] |= (uint8_t)((q & 3) << (2 * (e / 32 % 4)));
				b->hmask[e % 32] |= (uint8_t)((q >> 2) << (e / 32));
			}
			break;
		}
		case SA_TYPE_Q4_K:
		case SA_TYPE_Q5_K: {
			int q5 = type == SA_TYPE_Q5_K;
			sa_block_q4_k *b = (sa_block_q4_k *)blk;   /* Q5_K starts the same */
			uint8_t *qh = q5 ? ((sa_block_q5_k *)blk)->qh : NULL;
			uint8_t *qs = q5 ? ((sa_block_q5_k *)blk)->qs : b->qs;
			k_scales(x, 32, q5 ? 31 : 15, 0, 63, &d, &dmin, sc, m, dl, ml);
			for (int s = 0; s < 8; s++) {
				if (s < 4) {
					b->scales[s] = (uint8_t)sc[s];
					b->scales[s + 4] = (uint8_t)m[s];
				} else {
					b->scales[s + 4] = (uint8_t)((sc[s] & 0xf) | (m[s] & 0xf) << 4);
					b->scales[s - 4] |= (uint8_t)((sc[s] >> 4) << 6);
					b->scales[s] |= (uint8_t)((m[s] >> 4) << 6);
				}
			}
			for (int e = 0; e < SA_QK_K; e++) {
				int q = k_level(x[e], dl[e / 32], ml[e / 32], 0, q5 ? 31 : 15);
				qs[e / 64 * 32 + e % 32] |= (uint8_t)((q & 0xf) << (e / 32 % 2 * 4));
				if (q5)
					qh[e % 32] |= (uint8_t)((q >> 4) << (e / 32));
			}
			break;
		}
		case SA_TYPE_Q6_K: {
			sa_block_q6_k *b = (sa_block_q6_k *)blk;
			k_scales(x, 16, 63, 1, 127, &d, &dmin, sc, m, dl, ml);
			for (int s = 0; s < 16; s++)
				b->scales[s] = (int8_t)sc[s];
			for (int e = 0; e < SA_QK_K; e++) {
				int q = k_level(x[e], dl[e / 16], 0, -32, 31) + 32;
				b->ql[e / 128 * 64 + e / 32 % 2 * 32 + e % 32] |=
				    (uint8_t)((q & 0xf) << (e / 64 % 2 * 4));
				b->qh[e / 128 * 32 + e % 32] |= (uint8_t)((q >> 4) << (2 * (e / 32 % 4)));
			}
			break;
		}
		}
		/* d, and dmin where the type has one */
		size_t off[2];
		uint16_t h[2] = { d, dmin };
		for (int k = 0; k < sa_type_scales(type, off); k++)
			memcpy(blk + off[k], &h[k], 2);
	}
}

/* f32 [n] <-> Q8_K blocks, the rounding of the input of K-quant matrices
 * (ggml's quantize_row_q8_K_ref): q = nearest even of x * -127/max, with
 * max the value of largest magnitude, d = 1/(-127/max) kept as a float,
 * and the sums of q per 16. */
static void
f32_to_q8_k(const float *x, sa_block_q8_k *b, int64_t nb)
{
	for (int64_t i = 0; i < nb; i++, x += SA_QK_K) {
		float max = 0, amax = 0;
		for (int j = 0; j < SA_QK_K; j++)
			if (fabsf(x[j]) > amax) {
				amax = fabsf(x[j]);
				max = x[j];
			}
		memset(b[i].qs, 0, SA_QK_K);
		b[i].d = 0;
		if (amax) {
			float iscale = -127.f / max;
			for (int j = 0; j < SA_QK_K; j++) {
				long v = lrintf(iscale * x[j]);
				b[i].qs[j] = (int8_t)(v < 127 ? v : 127);
			}
			b[i].d = 1 / iscale;
		}
		for (int s = 0; s < SA_QK_K / 16; s++) {
			int sum = 0;
			for (int j = 0; j < 16; j++)
				sum += b[i].qs[s * 16 + j];
			b[i].bsums[s] = (int16_t)sum;
		}
	}
}

static void
q8_k_to_f32(const sa_block_q8_k *b, float *y, int64_t nb)
{
	for (int64_t i = 0; i < nb; i++, y += SA_QK_K)
		for (int j = 0; j < SA_QK_K; j++)
			y[j] = b[i].d * b[i].qs[j];
}

void
sa_row_to_f32(int type, const void *src, float *dst, int64_t n)
{
	switch (type) {
	case SA_TYPE_F32:
		memcpy(dst, src, (size_t)n * sizeof(float));
		break;
	case SA_TYPE_F16:
		sa_fp16_to_fp32_n(src, dst, n);
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
	case SA_TYPE_Q4_0: q4_0_to_f32(src, dst, n / SA_QK); break;
	case SA_TYPE_Q4_1: q4_1_to_f32(src, dst, n / SA_QK); break;
	case SA_TYPE_Q5_0: q5_0_to_f32(src, dst, n / SA_QK); break;
	case SA_TYPE_Q5_1: q5_1_to_f32(src, dst, n / SA_QK); break;
	case SA_TYPE_Q2_K: q2_k_to_f32(src, dst, n / SA_QK_K); break;
	case SA_TYPE_Q3_K: q3_k_to_f32(src, dst, n / SA_QK_K); break;
	case SA_TYPE_Q4_K: q4_5_k_to_f32(0, src, dst, n / SA_QK_K); break;
	case SA_TYPE_Q5_K: q4_5_k_to_f32(1, src, dst, n / SA_QK_K); break;
	case SA_TYPE_Q6_K: q6_k_to_f32(src, dst, n / SA_QK_K); break;
	case SA_TYPE_Q8_K: q8_k_to_f32(src, dst, n / SA_QK_K); break;
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
		sa_fp32_to_fp16_n(src, dst, n);
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
	case SA_TYPE_Q4_0: case SA_TYPE_Q4_1: case SA_TYPE_Q5_0: case SA_TYPE_Q5_1:
		f32_to_q4_q5(type, src, dst, n / SA_QK);
		break;
	case SA_TYPE_Q2_K: case SA_TYPE_Q3_K: case SA_TYPE_Q4_K: case SA_TYPE_Q5_K:
	case SA_TYPE_Q6_K:
		f32_to_k(type, src, dst, n / SA_QK_K);
		break;
	case SA_TYPE_Q8_K:
		f32_to_q8_k(src, dst, n / SA_QK_K);
		break;
	default:
		break;
	}
}
