/*
 * jsonl-get - check that stdin is JSON Lines (every line one JSON object,
 * nothing else) and print, for each line, the values of the given keys
 * separated by tabs: strings raw, numbers as %.17g, the rest as compact
 * JSON, a missing key as "-".  Exits 1 on the first line that is not a
 * JSON object, naming it.
 */
#define TOOL "jsonl-get"
#include "../../bin/tool.h"

static void
put_value(const sa_json *v)
{
	if (!v)
		fputs("-", stdout);
	else if (v->type == SA_JSON_STR)
		fwrite(v->str, 1, v->len, stdout);
	else if (v->type == SA_JSON_NUM)
		printf("%.17g", v->num);
	else
		sa_json_put(stdout, v);
}

int
main(int argc, char **argv)
{
	char *data, *line, *nl;
	size_t len;
	long lineno = 0;

	setprogname_(argv[0]);
	if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		puts("usage: jsonl-get [KEY ...] < FILE.jsonl");
		close_stdout();
		return 0;
	}
	TRY(sa_file_read("-", &data, &len));
	if (len == 0)
		die(1, "stdin: empty");
	if (data[len - 1] != '\n')
		die(1, "stdin: last line has no newline");
	for (line = data; line < data + len; line = nl + 1) {
		sa_json j;
		nl = memchr(line, '\n', (size_t)(data + len - line));
		lineno++;
		if (sa_json_parse(line, (size_t)(nl - line), &j) != SA_OK)
			die(1, "line %ld: %s", lineno, sa_error());
		if (j.type != SA_JSON_OBJ)
			die(1, "line %ld: not an object", lineno);
		for (int i = 1; i < argc; i++) {
			if (i > 1)
				putchar('\t');
			put_value(sa_json_get(&j, argv[i]));
		}
		if (argc > 1)
			putchar('\n');
		sa_json_free(&j);
	}
	free(data);
	close_stdout();
	return 0;
}
