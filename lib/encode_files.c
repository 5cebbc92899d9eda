/*
 * encode_files.c - the one path from files of demonstrations to a delta,
 * for sa-encode, sa-run --demos and sa-eval: each file's records, packed
 * into segments, fed to an encoder; through the cache when there is one.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sa.h"

static void __attribute__((format(printf, 3, 4)))
tell(sa_cache_note fn, void *ctx, const char *fmt, ...)
{
	char msg[1100];
	va_list ap;

	if (!fn)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	fn(ctx, msg);
}

/* Look key up in dir: SA_OK with *out a hit, SA_ENOINPUT a miss (the
 * lock *lock then held), another failure. */
static int
cache_lookup(const sa_encoding *e, const char *dir, const char *key, sa_model *m,
    const sa_adapter *a, sa_delta **out, int *lock)
{
	int rc = sa_cache_get(dir, key, m, a, e->files, e->n, out);

	if (rc == SA_ENOINPUT || rc == SA_EDATA) {
		tell(e->detail, e->ctx, "cache miss: %s/%s.delta", dir, key);
		/* another process may have stored it meanwhile */
		*lock = sa_cache_lock(dir, key, e->detail, e->ctx);
		rc = sa_cache_get(dir, key, m, a, e->files, e->n, out);
	}
	if (rc == SA_EDATA) {
		tell(e->note, e->ctx, "%s; encoding again", sa_error());
		rc = SA_ENOINPUT;
	}
	return rc;
}

/* The files through a new encoder: its delta, cloned. */
static int
encode(const sa_encoding *e, sa_model *m, const sa_adapter *a, sa_delta **out)
{
	sa_encoder *enc;
	int rc;

	if ((rc = sa_encoder_new(&enc, m, a, e->start)) != SA_OK)
		return rc;
	for (int f = 0; f < e->n && rc == SA_OK; f++) {
		int is_stdin = strcmp(e->files[f], "-") == 0;
		sa_demos *d;

		if ((rc = sa_demos_read(&d, e->files[f], is_stdin ? e->stdin_data : NULL, e->stdin_len,
		    e->formats[f], e->tmpl)) != SA_OK)
			break;
		d->special = e->special;
		rc = sa_encoder_feed_demos(enc, d, e->n_ctx, e->step, e->ctx);
		sa_demos_free(d);
	}
	if (rc == SA_OK)
		rc = sa_delta_clone(out, sa_encoder_delta(enc));
	sa_encoder_free(enc);
	return rc;
}

int
sa_encode_files(sa_delta **out, sa_model *m, const sa_adapter *a, const sa_encoding *e, int *hit)
{
	/* The cache holds encodings from an empty state, of templates whose
	 * text is text (its key does not tell chat turns apart). */
	const char *dir = e->start || e->special ? NULL : e->cache_dir;
	char key[SA_CACHE_KEY_LEN + 1], abspath[PATH_MAX], *params = NULL;
	int lock = -1, rc = SA_ENOINPUT;

	*out = NULL;
	*hit = 0;
	if (dir && (rc = sa_cache_key(key, m, a, e->n_ctx, e->tmpl, e->files, e->formats, e->n,
	    e->stdin_data, e->stdin_len)) != SA_OK)
		return rc;
	if (dir)
		rc = cache_lookup(e, dir, key, m, a, out, &lock);
	if (rc == SA_ENOINPUT)
		rc = encode(e, m, a, out);
	else
		*hit = rc == SA_OK;
	if (rc != SA_OK)
		goto done;
	/* What the delta records: its adapter, absolute, and how it was made. */
	if (a->path && realpath(a->path, abspath)) {
		free((*out)->adapter_path);
		if (!((*out)->adapter_path = strdup(abspath))) {
			rc = sa_fail(SA_EINTERNAL, "out of memory");
			goto done;
		}
	}
	if (!(params = sa_demos_params(e->formats, e->n, e->n_ctx, e->tmpl)) ||
	    (rc = sa_delta_join_params(*out, params)) != SA_OK) {
		rc = params ? rc : SA_EINTERNAL;
		goto done;
	}
	if (*hit)
		tell(e->detail, e->ctx, "cache hit: %s/%s.delta, %llu tokens encoded before", dir, key,
		    (unsigned long long)(*out)->n_tokens);
	else if (dir && sa_cache_put(dir, key, *out) != SA_OK)
		tell(e->note, e->ctx, "%s (not cached)", sa_error());
done:
	if (dir)
		sa_cache_unlock(dir, key, lock);
	free(params);
	if (rc != SA_OK) {
		sa_delta_free(*out);
		*out = NULL;
	}
	return rc;
}

int
sa_cache_encode(sa_delta **out, const char *dir, sa_model *m, const sa_adapter *a,
    char *const *files, int n, int format, int *hit, sa_cache_note note, void *ctx)
{
	char *stdin_data = NULL, *own = dir ? NULL : sa_cache_default_dir();
	sa_encoding e = { .files = files, .n = n, .tmpl = SA_DEMOS_TEMPLATE,
	    .n_ctx = m->cfg.n_ctx, .cache_dir = dir ? dir : own, .note = note, .ctx = ctx };
	int *formats, rc;

	*out = NULL;
	*hit = 0;
	if (!e.cache_dir)
		return SA_EUSAGE;
	if (!(formats = sa_calloc((size_t)(n > 0 ? n : 1), sizeof *formats))) {
		free(own);
		return SA_EINTERNAL;
	}
	if ((rc = sa_demos_formats(files, n, format, e.tmpl, formats, &stdin_data, &e.stdin_len)) == SA_OK) {
		e.formats = formats;
		e.stdin_data = stdin_data;
		rc = sa_encode_files(out, m, a, &e, hit);
	}
	free(stdin_data);
	free(formats);
	free(own);
	return rc;
}
