/*
 * fuzz-replay - run the fuzzing harnesses of tests/fuzz/ on given files,
 * without libFuzzer, so the regression inputs are part of the ordinary
 * test suite (tests/fuzz.bats).  A harness aborts on a wrong result; a
 * crash is a crash.  Exit 0 when every file ran.
 *
 * usage: fuzz-replay HARNESS FILE...
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LLVMFuzzerTestOneInput fuzz_gguf
#include "../fuzz/fuzz_gguf.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_delta
#include "../fuzz/fuzz_delta.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_adapter
#include "../fuzz/fuzz_adapter.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_demos
#include "../fuzz/fuzz_demos.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_json
#include "../fuzz/fuzz_json.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_tokenizer
#include "../fuzz/fuzz_tokenizer.c"
#undef LLVMFuzzerTestOneInput

static const struct {
	const char *name;
	int (*run)(const uint8_t *, size_t);
} harness[] = {
	{ "gguf", fuzz_gguf }, { "delta", fuzz_delta }, { "adapter", fuzz_adapter },
	{ "demos", fuzz_demos }, { "json", fuzz_json }, { "tokenizer", fuzz_tokenizer },
};

int
main(int argc, char **argv)
{
	int (*run)(const uint8_t *, size_t) = NULL;

	if (argc < 2) {
		fprintf(stderr, "usage: fuzz-replay HARNESS FILE...\n");
		return 64;
	}
	for (size_t i = 0; i < sizeof harness / sizeof harness[0]; i++)
		if (strcmp(argv[1], harness[i].name) == 0)
			run = harness[i].run;
	if (!run) {
		fprintf(stderr, "fuzz-replay: unknown harness %s\n", argv[1]);
		return 64;
	}
	for (int i = 2; i < argc; i++) {
		char *data;
		size_t len;
		if (sa_file_read(argv[i], &data, &len) != SA_OK) {
			fprintf(stderr, "fuzz-replay: %s\n", sa_error());
			return 66;
		}
		run((const uint8_t *)data, len);
		free(data);
	}
	printf("%s: %d inputs\n", argv[1], argc - 2);
	return 0;
}
