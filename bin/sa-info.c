/*
 * sa-info - what a file is: a delta's header, or for a GGUF file its kind
 * (model, StreamAdapter adapter, LoRA adapter, vocabulary) with the
 * metadata that matters here, its tensor count and types, and the
 * fingerprint that binds adapters and deltas to it (lib/describe.c).
 */
#define TOOL "sa-info"
#include "tool.h"

static const char usage_text[] = "usage: sa-info [-j] [FILE ...]\n";

int
main(int argc, char **argv)
{
	static char *stdin_only[] = { "-" };
	char **files;
	int n, json = 0, status = 0, printed = 0;
	const tool_opt table[] = {
		TEXT("\nDescribe deltas, adapters and models.  FILE '-' is stdin; with no FILE,\n"
		    "read stdin.\n"),
		{ "json", 'j', NULL, FLAG(&json, 1), "one JSON object per file, one per line" },
		OPTIONS_END,
	};

	setprogname_(argv[0]);
	opts_parse(argc, argv, table, usage_text, NULL, NULL);
	files = optind < argc ? argv + optind : stdin_only;
	n = optind < argc ? argc - optind : 1;
	stdin_operands(files, n, "a delta or GGUF file");
	for (int i = 0; i < n; i++) {
		FILE *fp;
		char *buf = NULL;
		size_t len = 0;
		int rc;

		/* Each description is printed whole or not at all: a file is
		 * checked in full before any of it is told. */
		if (!(fp = open_memstream(&buf, &len)))
			die(SA_EINTERNAL, "out of memory");
		rc = sa_file_describe(fp, files[i], json);
		fclose(fp);
		if (rc == SA_OK) {
			if (!json && printed++)
				putchar('\n');
			fwrite(buf, 1, len, stdout);
			/* stop at the first failed write, with its reason */
			if (fflush(stdout) == EOF)
				die(SA_EIO, "stdout: %s", strerror(errno));
		}
		free(buf);
		if (rc != SA_OK) {
			warnx_("%s", sa_error());
			if (!status)
				status = rc;
		}
	}
	close_stdout();
	return status;
}
