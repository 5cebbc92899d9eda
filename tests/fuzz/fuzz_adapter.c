/*
 * fuzz_adapter.c - the adapter reader (sa_adapter_load) on arbitrary
 * bytes.  An adapter that loads must have a fingerprint that matches its
 * data and must make an empty delta of its shape.
 */
#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sa_adapter *a;
	sa_delta *d;
	char path[64];
	int fd, rc;

	if (fuzz_path(data, size, path, &fd) != 0)
		return 0;
	rc = sa_adapter_load(&a, path);
	fuzz_check_status(rc, SA_EDATA, "sa_adapter_load");
	if (rc == SA_OK) {
		if (sa_adapter_fingerprint(a) != a->fingerprint)
			abort();
		if (sa_delta_new(&d, a) != SA_OK) {
			fprintf(stderr, "adapter that loads makes no delta: %s\n", sa_error());
			abort();
		}
		sa_delta_free(d);
		sa_adapter_free(a);
	}
	fuzz_path_close(fd);
	return 0;
}
