/* test_chat.c - every chat template family rendered for llama.cpp's test
 * conversation (tests/test-chat-template.cpp): a system message and three
 * user turns, two answered, then the assistant's prefix; the expected
 * strings are llama.cpp's.  And the names of the families. */
#include <stdlib.h>
#include <string.h>

#include "sa.h"
#include "t.h"

static const sa_chat_msg conv[] = {
	{ "system", "You are a helpful assistant", 27 },
	{ "user", "Hello", 5 },
	{ "assistant", "Hi there", 8 },
	{ "user", "Who are you", 11 },
	{ "assistant", "   I am an assistant   ", 23 },
	{ "user", "Another question", 16 },
};

static const struct {
	int tmpl;
	const char *want;
} cases[] = {
	{ SA_CHAT_CHATML, "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n   I am an assistant   <|im_end|>\n<|im_start|>user\nAnother question<|im_end|>\n<|im_start|>assistant\n" },
	{ SA_CHAT_LLAMA2, "[INST] You are a helpful assistant\nHello [/INST]Hi there</s>[INST] Who are you [/INST]   I am an assistant   </s>[INST] Another question [/INST]" },
	{ SA_CHAT_LLAMA2_SYS_BOS, "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s><s>[INST] Who are you [/INST]   I am an assistant   </s><s>[INST] Another question [/INST]" },
	{ SA_CHAT_LLAMA2_SYS_STRIP, "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s>[INST] Who are you [/INST]I am an assistant</s>[INST] Another question [/INST]" },
	{ SA_CHAT_LLAMA3, "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n" },
	{ SA_CHAT_MISTRAL_V1, " [INST] You are a helpful assistant\n\nHello [/INST] Hi there</s> [INST] Who are you [/INST]    I am an assistant   </s> [INST] Another question [/INST]" },
	{ SA_CHAT_MISTRAL_V3, "[INST] You are a helpful assistant\n\nHello[/INST] Hi there</s>[INST] Who are you[/INST] I am an assistant</s>[INST] Another question[/INST]" },
	{ SA_CHAT_MISTRAL_V3_TEKKEN, "[INST]You are a helpful assistant\n\nHello[/INST]Hi there</s>[INST]Who are you[/INST]   I am an assistant   </s>[INST]Another question[/INST]" },
	{ SA_CHAT_MISTRAL_V7, "[SYSTEM_PROMPT] You are a helpful assistant[/SYSTEM_PROMPT][INST] Hello[/INST] Hi there</s>[INST] Who are you[/INST]    I am an assistant   </s>[INST] Another question[/INST]" },
	/* llama.cpp's test has no zephyr case: this is its llm_chat_apply_template */
	{ SA_CHAT_ZEPHYR, "<|system|>\nYou are a helpful assistant<|endoftext|>\n<|user|>\nHello<|endoftext|>\n<|assistant|>\nHi there<|endoftext|>\n<|user|>\nWho are you<|endoftext|>\n<|assistant|>\n   I am an assistant   <|endoftext|>\n<|user|>\nAnother question<|endoftext|>\n<|assistant|>\n" },
	/* llama.cpp's fmt_sys("llama2-sys") */
	{ SA_CHAT_LLAMA2_SYS, "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\n" },
};

int
main(void)
{
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		int n = cases[i].tmpl == SA_CHAT_LLAMA2_SYS ? 1 : 6;
		char *text;
		size_t len;

		CHECK_OK(sa_chat_render(cases[i].tmpl, conv, n, 1, &text, &len));
		CHECK(len == strlen(cases[i].want) && memcmp(text, cases[i].want, len) == 0);
		if (len != strlen(cases[i].want) || memcmp(text, cases[i].want, len) != 0)
			fprintf(stderr, "%s: got \"%s\"\n", sa_chat_name(cases[i].tmpl), text);
		CHECK(sa_chat_from_name(sa_chat_name(cases[i].tmpl)) == cases[i].tmpl);
		free(text);
	}
	CHECK(sa_chat_from_name("jinja") == -1);
	return t_done();
}
