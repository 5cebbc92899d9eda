/*
 * deltaset.c - the deltas of many requests over one base model: each
 * request's deltas (files at scales, demonstrations encoded through the
 * cache, LoRA files) become side paths of their own, held while they are
 * used and after, up to a count and a size; the least recently used go
 * first.  A set is known by its files' names, scales and identities (a
 * file rewritten is read again).
 * Switching deltas is then choosing other side paths: the base weights
 * are never touched, and a request's answer is that of sa-run --unmerged
 * with the same deltas, bit for bit (the same side paths, sa_side_add;
 * only their A, an adapter's W2, is the adapter's own here, which the set
 * keeps loaded until it is freed).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sa.h"

typedef struct held {
	char *key;                /* what was asked for, canonical */
	sa_sides sides;
	int users;                /* sa_deltaset_get without its put */
	uint64_t used;            /* tick of the last get */
} held;

struct sa_deltaset {
	sa_model *m;
	sa_deltaset_opts o;
	sa_adapter **adapters;    /* loaded once, found by path or fingerprint */
	int n_adapters;
	held **h;                 /* [n], each its own allocation: handles stay put */
	int n;
	size_t bytes;
	uint64_t tick, serial;
};

int
sa_deltaset_new(sa_deltaset **out, sa_model *m, const sa_deltaset_opts *o)
{
	sa_deltaset *ds;

	*out = NULL;
	if (!(ds = sa_calloc(1, sizeof *ds)))
		return SA_EINTERNAL;
	ds->m = m;
	ds->o = *o;
	*out = ds;
	return SA_OK;
}

static void
held_free(sa_deltaset *ds, held *h)
{
	sa_side_free(h->sides.side, ds->m);
	free(h->key);
	free(h);
}

void
sa_deltaset_free(sa_deltaset *ds)
{
	if (!ds)
		return;
	for (int i = 0; i < ds->n; i++)
		held_free(ds, ds->h[i]);
	for (int i = 0; i < ds->n_adapters; i++)
		sa_adapter_free(ds->adapters[i]);
	free(ds->adapters);
	free(ds->h);
	free(ds);
}

size_t
sa_deltaset_bytes(const sa_deltaset *ds)
{
	return ds->bytes;
}

/* ------------------------------------------------------------ keys */

/* A file by name and by what it is now: a file rewritten in place is
 * another key, and is read again. */
static void
key_file(FILE *fp, char kind, double scale, const char *path)
{
	struct stat st;

	if (stat(path, &st) != 0)
		memset(&st, 0, sizeof st);
	fprintf(fp, "%c %.17g %llx %llx %lld %lld.%09ld %s\n", kind, scale,
	    (unsigned long long)st.st_dev, (unsigned long long)st.st_ino, (long long)st.st_size,
	    (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, path);
}

/* The request as one string: equal strings, equal side paths. */
static char *
spec_key(const sa_delta_spec *sp)
{
	char *key = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&key, &len);

	if (!fp)
		return NULL;
	for (int i = 0; i < sp->n; i++)
		key_file(fp, 'd', sp->scale[i], sp->path[i]);
	for (int i = 0; i < sp->n_lora; i++)
		key_file(fp, 'l', sp->lora_scale[i], sp->lora[i]);
	for (int i = 0; i < sp->n_demos; i++)
		key_file(fp, 'e', 1, sp->demos[i]);
	if (fclose(fp) != 0) {
		free(key);
		return NULL;
	}
	return key;
}

/* --------------------------------------------------------- adapters */

/* *a, loaded with status rc, checked against the model and kept. */
static int
adapter_keep(sa_deltaset *ds, int rc, sa_adapter **ap, const sa_adapter **out)
{
	sa_adapter **p = NULL, *a = *ap;

	if (rc == SA_OK)
		rc = sa_adapter_check(a, ds->m);
	if (rc == SA_OK && !(p = realloc(ds->adapters, (size_t)(ds->n_adapters + 1) * sizeof *p)))
		rc = sa_fail(SA_EINTERNAL, "out of memory");
	if (rc != SA_OK) {
		sa_adapter_free(a);
		return rc;
	}
	ds->adapters = p;
	ds->adapters[ds->n_adapters++] = a;
	*out = a;
	return SA_OK;
}

/* The adapter file path, loaded once. */
static int
adapter_at(sa_deltaset *ds, const char *path, const sa_adapter **out)
{
	sa_adapter *a = NULL;

	for (int i = 0; i < ds->n_adapters; i++)
		if (ds->adapters[i]->path && strcmp(ds->adapters[i]->path, path) == 0) {
			*out = ds->adapters[i];
			return SA_OK;
		}
	return adapter_keep(ds, sa_adapter_load(&a, path), &a, out);
}

/* The adapter of delta d (read from path), as sa-run finds it: the one
 * given, else the one d records (sa_delta_adapter); each loaded once. */
static int
adapter_for(sa_deltaset *ds, const sa_delta *d, const char *path, const sa_adapter **out)
{
	sa_adapter *a = NULL;

	if (ds->o.adapter)
		return adapter_at(ds, ds->o.adapter, out);
	for (int i = 0; i < ds->n_adapters; i++)
		if (ds->adapters[i]->fingerprint == d->adapter_fingerprint) {
			*out = ds->adapters[i];
			return SA_OK;
		}
	return adapter_keep(ds, sa_delta_adapter(&a, d, path, ds->o.fallback), &a, out);
}

/* The adapter of demonstrations without deltas: the one given, else the
 * default (sa-run --demos). */
static int
adapter_default(sa_deltaset *ds, const sa_adapter **out)
{
	const char *path = ds->o.adapter ? ds->o.adapter : ds->o.fallback;

	if (!path)
		return sa_fail(SA_EUSAGE, "no adapter for the demonstrations: give -a ADAPTER");
	return adapter_at(ds, path, out);
}

/* ------------------------------------------------------- side paths */

/* Demonstrations encoded as sa-run --demos does, over the bare base: side
 * paths of the command line's deltas are set aside meanwhile. */
static int
demos_delta(sa_deltaset *ds, const sa_delta_spec *sp, const sa_adapter *a, sa_delta **d)
{
	sa_lowrank *side = ds->m->side;
	int hit, rc;

	ds->m->side = NULL;
	rc = sa_cache_encode(d, ds->o.cache_dir, ds->m, a, (char *const *)sp->demos, sp->n_demos,
	    ds->o.demos_format, &hit, NULL, NULL);
	ds->m->side = side;
	return rc;
}

/* The model's own side paths, then the deltas at their scales, the
 * demonstrations and the LoRA adapters: sa-run's order, so that the ranks
 * concatenate as there. */
static int
build(sa_deltaset *ds, const sa_delta_spec *sp, sa_lowrank **side)
{
	const sa_model *m = ds->m;
	const sa_adapter *a = NULL;
	sa_deltas *dl = NULL;
	int rc = SA_OK;

	if (sp->n_demos && m->merged)
		return sa_fail(SA_EDATA, "demonstrations in a request need the base model as it is: "
		    "give the command line's deltas with --unmerged");
	rc = sa_side_copy(side, m, m->side);
	if (rc == SA_OK && sp->n) {
		rc = sa_deltas_load(&dl, (char *const *)sp->path, sp->scale, sp->n);
		if (rc == SA_OK)
			rc = adapter_for(ds, dl->d[0], dl->path[0], &a);
		for (int i = 0; i < sp->n && rc == SA_OK; i++)
			rc = sa_binding_check(m, a, dl->d[i], dl->path[i]);
		for (int i = 0; i < sp->n && rc == SA_OK; i++)
			rc = sa_delta_sides(side, m, a, dl->d[i], (float)dl->scale[i]);
		sa_deltas_free(dl);
	}
	if (rc == SA_OK && sp->n_demos) {
		sa_delta *d;

		if (!a)
			rc = adapter_default(ds, &a);
		if (rc == SA_OK && (rc = demos_delta(ds, sp, a, &d)) == SA_OK) {
			rc = sa_delta_sides(side, m, a, d, 1);
			sa_delta_free(d);
		}
	}
	for (int i = 0; i < sp->n_lora && rc == SA_OK; i++)
		rc = sa_lora_sides(side, m, sp->lora[i], sp->lora_scale[i]);
	return rc;
}

/* Make room for `need` more bytes and one more entry: the least recently
 * used that no request is using go first. */
static void
evict(sa_deltaset *ds, size_t need)
{
	while (ds->n > 0 && (ds->n >= ds->o.max_held ||
	    (ds->o.max_bytes && ds->bytes + need > ds->o.max_bytes))) {
		int lru = -1;

		for (int i = 0; i < ds->n; i++)
			if (!ds->h[i]->users && (lru < 0 || ds->h[i]->used < ds->h[lru]->used))
				lru = i;
		if (lru < 0)
			return;
		ds->bytes -= ds->h[lru]->sides.bytes;
		held_free(ds, ds->h[lru]);
		ds->h[lru] = ds->h[--ds->n];
	}
}

int
sa_deltaset_get(sa_deltaset *ds, const sa_delta_spec *sp, const sa_sides **out)
{
	sa_lowrank *side = NULL;
	held *h, **hh;
	char *key;
	int rc;

	*out = NULL;
	if (!(key = spec_key(sp)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	for (int i = 0; i < ds->n; i++)
		if (strcmp(ds->h[i]->key, key) == 0) {
			free(key);
			ds->h[i]->users++;
			ds->h[i]->used = ++ds->tick;
			*out = &ds->h[i]->sides;
			return SA_OK;
		}
	if ((rc = build(ds, sp, &side)) != SA_OK) {
		sa_side_free(side, ds->m);
		free(key);
		return rc;
	}
	evict(ds, sa_side_bytes(side, ds->m));
	if (!(hh = realloc(ds->h, (size_t)(ds->n + 1) * sizeof *hh)) || !(h = sa_malloc(sizeof *h))) {
		if (hh)
			ds->h = hh;
		sa_side_free(side, ds->m);
		free(key);
		return SA_EINTERNAL;
	}
	ds->h = hh;
	ds->h[ds->n++] = h;
	*h = (held){ key, { side, sa_side_bytes(side, ds->m), ++ds->serial }, 1, ++ds->tick };
	ds->bytes += h->sides.bytes;
	*out = &h->sides;
	return SA_OK;
}

void
sa_deltaset_put(sa_deltaset *ds, const sa_sides *s)
{
	for (int i = 0; s && i < ds->n; i++)
		if (&ds->h[i]->sides == s) {
			ds->h[i]->users--;
			return;
		}
}

/* --------------------------------------------------- the model's own */

/* The deltas of sa-run's command line go into the model itself, in the
 * order build() puts a request's on side paths. */
int
sa_delta_spec_apply(sa_model *m, const sa_delta_spec *sp, const sa_deltaset_opts *o, int merged,
    sa_cache_note note, sa_cache_note detail, void *ctx)
{
	sa_deltas *dl = NULL;
	char msg[128];
	int hit, rc = SA_OK;

	if (sp->n || sp->n_demos) {
		if ((rc = sa_deltas_load(&dl, (char *const *)sp->path, sp->scale, sp->n)) == SA_OK)
			rc = sa_deltas_bind(dl, m, o->adapter, o->fallback);
		if (rc == SA_OK && sp->n_demos)
			rc = sa_deltas_add_demos(dl, m, o->cache_dir, (char *const *)sp->demos,
			    sp->n_demos, o->demos_format, &hit, note, ctx);
		if (rc == SA_OK && sp->n_demos && detail) {
			const sa_delta *d = dl->d[dl->n - 1];

			snprintf(msg, sizeof msg, "demonstrations: %s, %llu tokens, %llu demonstrations",
			    hit ? "cache hit" : "encoded", (unsigned long long)d->n_tokens,
			    (unsigned long long)d->n_demos);
			detail(ctx, msg);
		}
		if (rc == SA_OK)
			rc = sa_deltas_apply(m, dl, merged);
		sa_deltas_free(dl);
	}
	for (int i = 0; i < sp->n_lora && rc == SA_OK; i++)
		rc = sa_lora_apply(m, sp->lora[i], sp->lora_scale[i], merged);
	return rc;
}
