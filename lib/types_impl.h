/*
 * types_impl.h - block geometry of every ggml type, for code that must size
 * tensors it cannot compute with (the GGUF reader lists them all).
 */
#ifndef TYPES_IMPL_H
#define TYPES_IMPL_H

#include <stddef.h>
#include <stdint.h>

/* Elements per block and bytes per block of a ggml type; 0 if the id is
 * unknown or was removed from the format. */
int sa_type_block(int type, int64_t *block_elems, size_t *block_bytes);

/* Where the fp16 scales of a block of a supported block type are: the
 * number of them (1 or 2; 0 for F32, F16, BF16) and their byte offsets. */
int sa_type_scales(int type, size_t off[2]);

/* Not a weight type: the blocks llama.cpp rounds the input of K-quant
 * matrices to; sa_row_from_f32 writes them, the K-quant row kernels read
 * them. */
#define SA_TYPE_Q8_K 15

/* One Q8_0 block: 32 weights sharing one fp16 scale (ggml's block_q8_0). */
#define SA_QK8_0 32
typedef struct sa_block_q8_0 {
	uint16_t d;
	int8_t qs[SA_QK8_0];
} sa_block_q8_0;

/*
 * The blocks of llama-quantize's common presets, as ggml lays them out
 * (ggml-common.h).  fp16 fields hold scales d and minimums m; a weight is
 * d * q (+ m) with q the integer the low bits (qs) and high bits (qh) give.
 * K-quants group 256 weights in sub-blocks that carry their own 4-, 6- or
 * 8-bit scale, itself scaled by the block's d (and dmin for the minimums).
 */
#define SA_QK 32      /* weights per block of Q4_0 .. Q5_1 */
#define SA_QK_K 256   /* weights per block of the K-quants */
typedef struct { uint16_t d; uint8_t qs[16]; } sa_block_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[16]; } sa_block_q4_1;
typedef struct { uint16_t d; uint8_t qh[4], qs[16]; } sa_block_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4], qs[16]; } sa_block_q5_1;
/* 16 sub-blocks of 16: scales = 4-bit scale | 4-bit min << 4; 2-bit q */
typedef struct { uint8_t scales[16], qs[64]; uint16_t d, dmin; } sa_block_q2_k;
/* 16 sub-blocks of 16: 6-bit scales - 32; q = 2 low bits | 1 high bit, - 4 */
typedef struct { uint8_t hmask[32], qs[64], scales[12]; uint16_t d; } sa_block_q3_k;

/* Q3_K's 16 6-bit scales: low 4 bits in the nibbles of bytes 0..7, high
 * 2 bits in bytes 8..11. */
static inline int
sa_q3_k_scale(const uint8_t *s, int j)
{
	int lo = j < 8 ? s[j] & 0xf : s[j - 8] >> 4;
	return (lo | (s[8 + j % 4] >> (2 * (j / 4)) & 3) << 4) - 32;
}
/* 8 sub-blocks of 32: 6-bit scales and mins packed in 12 bytes */
typedef struct { uint16_t d, dmin; uint8_t scales[12], qs[128]; } sa_block_q4_k;

/* Scale and min of sub-block j (0..7) of Q4_K and Q5_K, 6 bits each: j < 4
 * in the low bits of bytes j and j+4, the others in bytes 8..11 and the top
 * bits of bytes 0..7 (ggml's get_scale_min_k4). */
static inline void
sa_k4_scale_min(const uint8_t *q, int j, int *sc, int *m)
{
	if (j < 4) {
		*sc = q[j] & 63;
		*m = q[j + 4] & 63;
	} else {
		*sc = (q[j + 4] & 0xf) | (q[j - 4] >> 6) << 4;
		*m = (q[j + 4] >> 4) | (q[j] >> 6) << 4;
	}
}
typedef struct { uint16_t d, dmin; uint8_t scales[12], qh[32], qs[128]; } sa_block_q5_k;
/* 16 sub-blocks of 16: int8 scales; q = 4 low bits | 2 high bits, - 32 */
typedef struct { uint8_t ql[128], qh[64]; int8_t scales[16]; uint16_t d; } sa_block_q6_k;

/* One Q8_K block (ggml's block_q8_K): x = d * q over 256 values, and the
 * sums of q over each 16 of them, for the minimums and offsets of the
 * weights, which multiply a whole sub-block. */
typedef struct { float d; int8_t qs[SA_QK_K]; int16_t bsums[SA_QK_K / 16]; } sa_block_q8_k;

#endif
