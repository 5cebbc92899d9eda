/*
 * chat.c - conversations as the text an instruct model was trained on.
 *
 * A GGUF model carries its chat template as Jinja source
 * (tokenizer.chat_template).  Like llama.cpp's built-in list
 * (src/llama-chat.cpp) this does not run Jinja: it recognises the family by
 * substrings of the template, in llama.cpp's order, and writes each family
 * by hand, byte for byte as llama.cpp does.  Families llama.cpp knows that
 * are not written here are named in the refusal.  The text holds the
 * family's control tokens ("<|im_start|>") as text: tokenize it with
 * sa_tokenize_special.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sa.h"

static const char *const names[] = {
	[SA_CHAT_CHATML] = "chatml",
	[SA_CHAT_LLAMA2] = "llama2",
	[SA_CHAT_LLAMA2_SYS] = "llama2-sys",
	[SA_CHAT_LLAMA2_SYS_BOS] = "llama2-sys-bos",
	[SA_CHAT_LLAMA2_SYS_STRIP] = "llama2-sys-strip",
	[SA_CHAT_MISTRAL_V1] = "mistral-v1",
	[SA_CHAT_MISTRAL_V3] = "mistral-v3",
	[SA_CHAT_MISTRAL_V3_TEKKEN] = "mistral-v3-tekken",
	[SA_CHAT_MISTRAL_V7] = "mistral-v7",
	[SA_CHAT_ZEPHYR] = "zephyr",
	[SA_CHAT_LLAMA3] = "llama3",
};

#define N_NAMES (int)(sizeof names / sizeof *names)

const char *
sa_chat_name(int tmpl)
{
	return tmpl > 0 && tmpl < N_NAMES ? names[tmpl] : "?";
}

int
sa_chat_from_name(const char *name)
{
	for (int i = 1; i < N_NAMES; i++)
		if (strcmp(name, names[i]) == 0)
			return i;
	return -1;
}

/* ----------------------------------------------------------- detection */

/*
 * The family of Jinja source t, by llama.cpp's rules and in their order (an
 * earlier rule wins): a family of ours, or 0 with *other set to the name
 * llama.cpp gives it, or NULL when llama.cpp does not know it either.
 */
static int
detect(const char *t, const char **other)
{
#define HAS(s) (strstr(t, (s)) != NULL)
	*other = NULL;
	if (HAS("<|im_start|>")) {
		if (!HAS("<|im_sep|>"))
			return SA_CHAT_CHATML;
		*other = "phi4";
	} else if (HAS("[INST]")) {
		if (HAS("[SYSTEM_PROMPT]"))
			return SA_CHAT_MISTRAL_V7;
		if (HAS("' [INST] ' + system_message") || HAS("[AVAILABLE_TOOLS]"))
			return HAS(" [INST]") ? SA_CHAT_MISTRAL_V1 :
			    HAS("\"[INST]\"") ? SA_CHAT_MISTRAL_V3_TEKKEN : SA_CHAT_MISTRAL_V3;
		if (HAS("content.strip()"))
			return SA_CHAT_LLAMA2_SYS_STRIP;
		if (HAS("bos_token + '[INST]"))
			return SA_CHAT_LLAMA2_SYS_BOS;
		return HAS("<<SYS>>") ? SA_CHAT_LLAMA2_SYS : SA_CHAT_LLAMA2;
	} else if (HAS("<|assistant|>") && HAS("<|end|>")) {
		*other = "phi3";
	} else if (HAS("<|assistant|>") && HAS("<|user|>")) {
		*other = HAS("</s>") ? "falcon3" : "glmedge";
	} else if (HAS("<|user|>") && HAS("<|endoftext|>")) {
		return SA_CHAT_ZEPHYR;
	} else if (HAS("bos_token + message['role']")) {
		*other = "monarch";
	} else if (HAS("<start_of_turn>")) {
		*other = "gemma";
	} else if (HAS("'\\n\\nAssistant: ' + eos_token")) {
		*other = "orion";
	} else if (HAS("GPT4 Correct ")) {
		*other = "openchat";
	} else if (HAS("USER: ") && HAS("ASSISTANT: ")) {
		*other = HAS("SYSTEM: ") ? "vicuna-orca" : "vicuna";
	} else if (HAS("### Instruction:") && HAS("<|EOT|>")) {
		*other = "deepseek";
	} else if (HAS("<|START_OF_TURN_TOKEN|>") && HAS("<|USER_TOKEN|>")) {
		*other = "command-r";
	} else if (HAS("<|start_header_id|>") && HAS("<|end_header_id|>")) {
		return SA_CHAT_LLAMA3;
	}
	return 0;
#undef HAS
}

int
sa_chat_find(const sa_gguf *g, const char *name, int *tmpl)
{
	const char *other;
	char *t;
	sa_str s;
	int rc;

	if (name) {
		if ((*tmpl = sa_chat_from_name(name)) < 0)
			return sa_fail(SA_EUSAGE, "unknown chat template '%s' (%s)", name,
			    SA_CHAT_NAMES);
		return SA_OK;
	}
	if (!sa_gguf_has(g, "tokenizer.chat_template"))
		return sa_fail(SA_EDATA, "%s has no chat template (tokenizer.chat_template): "
		    "name one with --chat-template (%s)", sa_gguf_path(g), SA_CHAT_NAMES);
	if ((rc = sa_gguf_get_str(g, "tokenizer.chat_template", &s)) != SA_OK)
		return rc;
	if (!(t = sa_malloc(s.n + 1)))
		return SA_EINTERNAL;
	memcpy(t, s.s, s.n);
	t[s.n] = 0;
	*tmpl = detect(t, &other);
	free(t);
	if (*tmpl)
		return SA_OK;
	if (other)
		return sa_fail(SA_EDATA, "%s: chat template of llama.cpp's family '%s' is not "
		    "supported (%s)", sa_gguf_path(g), other, SA_CHAT_NAMES);
	return sa_fail(SA_EDATA, "%s: chat template not recognised (supported: %s)",
	    sa_gguf_path(g), SA_CHAT_NAMES);
}

/* ----------------------------------------------------------- rendering */

static void
put(FILE *fp, const char *s)
{
	fputs(s, fp);
}

/* content, without leading and trailing white space when trim. */
static void
put_content(FILE *fp, const sa_chat_msg *m, int trim)
{
	const char *s = m->content;
	size_t n = m->content_len;

	while (trim && n && isspace((unsigned char)*s)) {
		s++;
		n--;
	}
	while (trim && n && isspace((unsigned char)s[n - 1]))
		n--;
	fwrite(s, 1, n, fp);
}

static int
is(const sa_chat_msg *m, const char *role)
{
	return strcmp(m->role, role) == 0;
}

/* Families that write every message alike: a head naming the role, the
 * content, a tail; then the assistant's head. */
static void
render_turns(FILE *fp, int tmpl, const sa_chat_msg *m, int n, int add_assistant)
{
	static const struct {
		int tmpl, trim;
		const char *head, *tail;
	} fam[] = {
		{ SA_CHAT_CHATML, 0, "<|im_start|>%s\n", "<|im_end|>\n" },
		{ SA_CHAT_ZEPHYR, 0, "<|%s|>\n", "<|endoftext|>\n" },
		{ SA_CHAT_LLAMA3, 1, "<|start_header_id|>%s<|end_header_id|>\n\n", "<|eot_id|>" },
	};
	int f = 0;

	while (fam[f].tmpl != tmpl)
		f++;
	for (int i = 0; i < n; i++) {
		fprintf(fp, fam[f].head, m[i].role);
		put_content(fp, &m[i], fam[f].trim);
		put(fp, fam[f].tail);
	}
	if (add_assistant)
		fprintf(fp, fam[f].head, "assistant");
}

/* [INST] families: llama2 and its variants, mistral v1, v3, v3-tekken. */
static void
render_inst(FILE *fp, int tmpl, const sa_chat_msg *m, int n)
{
	int mistral = tmpl >= SA_CHAT_MISTRAL_V1 && tmpl <= SA_CHAT_MISTRAL_V3_TEKKEN;
	int strip = tmpl == SA_CHAT_LLAMA2_SYS_STRIP;
	const char *lead = tmpl == SA_CHAT_MISTRAL_V1 ? " " : "";
	const char *trail = tmpl == SA_CHAT_MISTRAL_V3_TEKKEN ? "" : " ";
	int inside = !mistral;   /* llama2 opens the first turn before BOS would */

	if (!mistral)
		put(fp, "[INST] ");
	for (int i = 0; i < n; i++) {
		if (!inside) {
			if (mistral)
				fprintf(fp, "%s[INST]%s", lead, trail);
			else
				put(fp, tmpl == SA_CHAT_LLAMA2_SYS_BOS ? "<s>[INST] " : "[INST] ");
			inside = 1;
		}
		if (is(&m[i], "system")) {
			if (mistral) {
				put_content(fp, &m[i], 0);
				put(fp, "\n\n");
			} else if (tmpl != SA_CHAT_LLAMA2) {
				put(fp, "<<SYS>>\n");
				put_content(fp, &m[i], strip);
				put(fp, "\n<</SYS>>\n\n");
			} else {
				put_content(fp, &m[i], 0);
				put(fp, "\n");
			}
		} else if (is(&m[i], "user")) {
			put_content(fp, &m[i], strip);
			put(fp, mistral ? lead : " ");
			put(fp, "[/INST]");
		} else {
			if (mistral)
				put(fp, trail);
			put_content(fp, &m[i], strip || tmpl == SA_CHAT_MISTRAL_V3);
			put(fp, "</s>");
			inside = 0;
		}
	}
}

int
sa_chat_render(int tmpl, const sa_chat_msg *m, int n, int add_assistant, char **text,
    size_t *len)
{
	FILE *fp;

	*text = NULL;
	if (!(fp = open_memstream(text, len)))
		return sa_fail(SA_EINTERNAL, "out of memory");
	switch (tmpl) {
	case SA_CHAT_CHATML:
	case SA_CHAT_ZEPHYR:
	case SA_CHAT_LLAMA3:
		render_turns(fp, tmpl, m, n, add_assistant);
		break;
	case SA_CHAT_MISTRAL_V7:
		for (int i = 0; i < n; i++) {
			int sys = is(&m[i], "system"), user = is(&m[i], "user");
			put(fp, sys ? "[SYSTEM_PROMPT] " : user ? "[INST] " : " ");
			put_content(fp, &m[i], 0);
			put(fp, sys ? "[/SYSTEM_PROMPT]" : user ? "[/INST]" : "</s>");
		}
		break;
	default:
		render_inst(fp, tmpl, m, n);
	}
	if (fclose(fp) != 0) {
		free(*text);
		*text = NULL;
		return sa_fail(SA_EINTERNAL, "out of memory");
	}
	return SA_OK;
}

int
sa_chat_record_template(int tmpl, char **out)
{
	/* The exchange rendered around two bytes no template writes, then
	 * written in the template language with the fields in their place. */
	static const sa_chat_msg turn[] = { { "user", "\x01", 1 }, { "assistant", "\x02", 1 } };
	char *text, *o;
	size_t len;
	int rc;

	if ((rc = sa_chat_render(tmpl, turn, 2, 0, &text, &len)) != SA_OK)
		return rc;
	if (!(*out = o = sa_malloc(2 * len + 16))) {
		free(text);
		return SA_EINTERNAL;
	}
	for (size_t i = 0; i < len; i++) {
		if (text[i] == 1 || text[i] == 2) {
			o = stpcpy(o, text[i] == 1 ? "{input}" : "{label}");
			continue;
		}
		if (strchr("\\{}\n\t\r", text[i]))
			*o++ = '\\';
		*o++ = text[i] == '\n' ? 'n' : text[i] == '\t' ? 't' : text[i] == '\r' ? 'r' :
		    text[i];
	}
	*o = 0;
	free(text);
	return SA_OK;
}
