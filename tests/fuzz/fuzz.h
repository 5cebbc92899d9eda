/*
 * fuzz.h - what the fuzzing harnesses share.  Each fuzz_<name>.c defines
 * LLVMFuzzerTestOneInput; built with -fsanitize=fuzzer it is a libFuzzer
 * target (make fuzz), and tests/helpers/fuzz-replay.c includes every
 * harness under its own name to replay the regression inputs without
 * libFuzzer.
 */
#ifndef FUZZ_H
#define FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sa.h"

/* A path that reads back the bytes: an anonymous memory file, so readers
 * that open and mmap a path see exactly the input and nothing touches the
 * disk.  *fd is closed by fuzz_path_close. */
static int __attribute__((unused))
fuzz_path(const uint8_t *data, size_t size, char path[64], int *fd)
{
	*fd = memfd_create("fuzz", MFD_CLOEXEC);
	if (*fd < 0)
		return -1;
	for (size_t off = 0; off < size;) {
		ssize_t w = write(*fd, data + off, size - off);
		if (w <= 0) {
			close(*fd);
			return -1;
		}
		off += (size_t)w;
	}
	snprintf(path, 64, "/proc/self/fd/%d", *fd);
	return 0;
}

static void __attribute__((unused))
fuzz_path_close(int fd)
{
	close(fd);
}

/* Bad input must give SA_EDATA (or the one other status `also` a caller
 * allows) with a one-line message.  SA_EINTERNAL would mean an allocation
 * failed, which libFuzzer's malloc limit reports before it gets here. */
static void __attribute__((unused))
fuzz_check_status(int rc, int also, const char *what)
{
	if (rc == SA_OK)
		return;
	if (rc != SA_EDATA && rc != also) {
		fprintf(stderr, "%s: unexpected status %d (%s)\n", what, rc, sa_error());
		abort();
	}
	if (!*sa_error()) {
		fprintf(stderr, "%s: status %d without a message\n", what, rc);
		abort();
	}
	if (strchr(sa_error(), '\n')) {
		fprintf(stderr, "%s: message of more than one line: %s\n", what, sa_error());
		abort();
	}
}

/* The reference vocabularies of tests/data/vocab: 0 SentencePiece (Llama 2),
 * 1 GPT-2, 2 Llama 3, 3 Qwen2; loaded once, from $SA_FUZZ_VOCAB (default
 * tests/data/vocab, for runs from the top of the tree). */
static const char *const fuzz_vocab_files[4] = {
	"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf",
	"ggml-vocab-llama-bpe.gguf", "ggml-vocab-qwen2.gguf",
};

static const char * __attribute__((unused))
fuzz_vocab_name(int i)
{
	return fuzz_vocab_files[i];
}

static const sa_vocab * __attribute__((unused))
fuzz_vocab(int i)
{
	static sa_vocab *vocab[4];
	const char *dir = getenv("SA_FUZZ_VOCAB");

	if (vocab[i])
		return vocab[i];
	if (!dir)
		dir = "tests/data/vocab";
	{
		char path[4096];
		sa_gguf *g;
		snprintf(path, sizeof path, "%s/%s", dir, fuzz_vocab_files[i]);
		if (sa_gguf_open(&g, path) != SA_OK || sa_vocab_load(&vocab[i], g) != SA_OK) {
			fprintf(stderr, "fuzz: %s (set SA_FUZZ_VOCAB)\n", sa_error());
			exit(1);
		}
		sa_gguf_close(g);
	}
	return vocab[i];
}

#endif
