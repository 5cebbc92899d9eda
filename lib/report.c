/*
 * report.c - what sa-eval(1) prints of evaluate.c's run: the Markdown
 * tables, row by row as they are scored (the CSV of a map run beside
 * them), the means over seen and unseen tasks, the costs, and each query's
 * record as a line of JSON.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sa.h"

/* Method m in the first table, or in the cost table. */
static const char *
title(const sa_eval_report *r, const sa_eval_table *t, int m, int cost)
{
	return r->what == SA_EVAL_MAP ? t->method[m] : cost && r->what == SA_EVAL_TASKS ?
	    r->name[m] : r->head[m];
}

void
sa_eval_report_start(sa_eval_report *r, const sa_eval_table *t)
{
	static const char *const task_head[] = { "zero-shot", "ICL k%s", "SA k%s", "SA K" },
	    *task_name[] = { "zero-shot", "ICL (k%s)", "StreamAdapter (k%s)", "StreamAdapter (K)" },
	    *text_head[] = { "no context", "previous in prompt", "delta of previous",
	    "delta of %d previous", "itself in prompt", "delta of itself" };
	int n = t->n_methods, tasks = r->what == SA_EVAL_TASKS, text = r->what == SA_EVAL_TEXT,
	    map = r->what == SA_EVAL_MAP;
	FILE *out = r->out, *csv = r->csv;

	r->k_same = 1;
	r->k_used[0] = 0;
	for (int i = 0; tasks && i < t->n_rows; i++)
		r->k_same &= t->row[i].k == t->row[0].k;
	/* the k of the header is the one every task used, else a column says */
	if (tasks && r->k_same)
		snprintf(r->k_used, sizeof r->k_used, "=%d", t->row[0].k);
	for (int m = 0; m < n && tasks; m++) {
		snprintf(r->head[m], sizeof r->head[m], task_head[m], r->k_used);
		snprintf(r->name[m], sizeof r->name[m], task_name[m], r->k_used);
	}
	for (int m = 0; m < n && text; m++)
		snprintf(r->head[m], sizeof r->head[m], text_head[m], r->many);
	fputs(map ? "| pairs | records | tokens | queries |" : text ? "| text | passages | tokens |"
	    : "| task | set | kind | queries |", out);
	for (int m = 0; m < n; m++)
		fprintf(out, " %s |", title(r, t, m, 0));
	if (tasks)
		fputs(r->k_same ? " K |" : " k | K |", out);
	fputs(map ? "\n|---:|---:|---:|---:|" : text ? "\n|---|---:|---:|" : "\n|---|---|---|---:|",
	    out);
	for (int m = 0; m < n + (tasks ? 2 - r->k_same : 0); m++)
		fputs("---:|", out);
	fputc('\n', out);
	fflush(out);
	if (!csv)
		return;
	fputs("pairs,records,tokens,queries", csv);
	for (int m = 0; m < n; m++) {
		/* a header without commas or quotes: gnuplot reads it as a title */
		fputc(',', csv);
		for (const char *p = t->method[m]; *p; p++)
			fputc(*p == ',' || *p == '"' ? '_' : *p, csv);
	}
	fputc('\n', csv);
}

void
sa_eval_report_row(sa_eval_report *r, const sa_eval_table *t, int i)
{
	const sa_eval_row *w = &t->row[i];
	int tasks = r->what == SA_EVAL_TASKS, text = r->what == SA_EVAL_TEXT;
	FILE *out = r->out, *csv = r->csv;

	if (r->what == SA_EVAL_MAP)
		fprintf(out, "| %d | %d | %.0f | %d |", w->n, w->records, w->tokens, w->queries);
	else if (text)
		fprintf(out, "| %s | %d | %ld |", w->name, w->n, (long)w->tokens);
	else
		fprintf(out, "| %s | %s | %s | %d |", w->name, w->set < 0 ? "-" : w->set ? "seen" : "unseen",
		    w->kind == SA_KIND_CLASS ? "class" : "gen", w->n);
	if (csv)
		fprintf(csv, "%d,%d,%.0f,%d", w->n, w->records, w->tokens, w->queries);
	for (int m = 0; m < t->n_methods; m++) {
		if (isnan(w->score[m]))
			fputs(" n/a |", out);
		else
			fprintf(out, " %.*f |", text ? 3 : 1, w->score[m]);
		if (csv)
			fprintf(csv, isnan(w->score[m]) ? "," : ",%.2f", w->score[m]);
	}
	if (tasks && !r->k_same)
		fprintf(out, " %d |", w->k);
	if (tasks)
		fprintf(out, " %d |", w->K);
	fputc('\n', out);
	if (csv)
		fputc('\n', csv);
	fflush(out);
}

/* The means over the seen, the unseen (and all) tasks. */
static void
means(const sa_eval_report *r, const sa_eval_table *t)
{
	static const char *const label[] = { "all (avg)", "unseen (avg)", "seen (avg)" };
	int any_none = 0, any_partial = 0;

	for (int i = 0; i < t->n_rows; i++)
		any_none |= t->row[i].set < 0;
	for (int set = 1; set >= (any_none ? -1 : 0); set--) {
		int n, partial;
		sa_eval_mean(t, set, 0, &n, &partial);
		fprintf(r->out, "| %s | | | %d tasks |", label[set + 1], n);
		for (int m = 0; m < t->n_methods; m++) {
			double a = sa_eval_mean(t, set, m, &n, &partial);
			if (isnan(a))
				fputs(" n/a |", r->out);
			else
				fprintf(r->out, " %.1f%s |", a, partial ? "*" : "");
			any_partial |= !isnan(a) && partial;
		}
		fputs(r->k_same ? " |\n" : " | |\n", r->out);
	}
	if (any_partial)
		fputs("\n\\* mean over the tasks where the method applies (ICL: where k demonstrations fit the context).\n",
		    r->out);
}

void
sa_eval_report_end(sa_eval_report *r, const sa_eval_table *t)
{
	const char *unit = r->what == SA_EVAL_TEXT ? "passage" : "query";

	if (r->what == SA_EVAL_TASKS)
		means(r, t);
	fprintf(r->out, "\n| method | time/%s (ms) | KV cache/%s (KiB) | prompt tokens/%s | encode+merge (ms/delta) |\n"
	    "|---|---:|---:|---:|---:|\n", unit, unit, unit);
	for (int m = 0; m < t->n_methods; m++) {
		const sa_eval_cost *c = &t->cost[m];
		fprintf(r->out, "| %s |", title(r, t, m, 1));
		if (!c->n)
			fputs(" n/a | n/a | n/a |", r->out);
		else
			fprintf(r->out, " %.2f | %.1f | %.1f |", c->time / c->n * 1e3, c->kv / c->n / 1024,
			    c->prompt / c->n);
		if (c->n_enc)
			fprintf(r->out, " %.1f |\n", c->enc_time / c->n_enc * 1e3);
		else
			fputs(" |\n", r->out);
	}
}

/* "key":"s", after a comma unless it comes first */
static void
json_str(FILE *fp, int first, const char *key, const char *s)
{
	fprintf(fp, "%s\"%s\":", first ? "" : ",", key);
	sa_json_put_str(fp, s, strlen(s));
}

void
sa_eval_record_print(FILE *fp, const sa_eval_record *r, int what)
{
	fputc('{', fp);
	if (what == SA_EVAL_MAP)
		fprintf(fp, "\"pairs\":%d,\"episode\":%d", r->pairs, r->episode);
	else
		json_str(fp, 1, what == SA_EVAL_TEXT ? "text" : "task", r->task);
	json_str(fp, 0, "method", r->method);
	if (what == SA_EVAL_TASKS)
		fprintf(fp, ",\"k\":%d", r->k);
	fprintf(fp, ",\"index\":%d", r->index);
	if (what == SA_EVAL_TEXT) {
		fprintf(fp, ",\"tokens\":%d,\"logprob\":", r->tokens);
		sa_json_put_num(fp, r->logprob);
	} else {
		if (what == SA_EVAL_MAP)
			json_str(fp, 0, "input", r->input);
		json_str(fp, 0, "gold", r->gold);
		json_str(fp, 0, "prediction", r->prediction);
		fprintf(fp, ",\"correct\":%s", r->correct ? "true" : "false");
	}
	fputs(",\"time\":", fp);
	sa_json_put_num(fp, r->time);
	if (what == SA_EVAL_TASKS)
		fprintf(fp, ",\"kv_bytes\":%zu", r->kv_bytes);
	fputs("}\n", fp);
}
