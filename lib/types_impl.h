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

/* One Q8_0 block: 32 weights sharing one fp16 scale (ggml's block_q8_0). */
#define SA_QK8_0 32
typedef struct sa_block_q8_0 {
	uint16_t d;
	int8_t qs[SA_QK8_0];
} sa_block_q8_0;

#endif
