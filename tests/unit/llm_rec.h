/* Shared by the model decoder tests: llm_callbacks that record what a decoder emits as
 * "T:<text>|C:<id>,<name>,<args>|D:<in>,<out>|" so a whole stream is checked in one string.
 * Include after cmocka.h. */
#ifndef CK_TEST_LLM_REC_H
#define CK_TEST_LLM_REC_H
#include "llm/provider.h"
#include "util/buf.h"

typedef struct rec {
    buf log;
} rec;

static void r_text(void *ud, const char *d, size_t n)
{
    rec *r = ud;
    buf_puts(&r->log, "T:");
    buf_append(&r->log, d, n);
    buf_putc(&r->log, '|');
}

static void r_tool(void *ud, const char *id, const char *name, const char *args)
{
    buf_printf(&((rec *)ud)->log, "C:%s,%s,%s|", id, name, args);
}

static void r_done(void *ud, const llm_usage *u)
{
    buf_printf(&((rec *)ud)->log, "D:%lld,%lld|", (long long)u->input_tokens,
               (long long)u->output_tokens);
}

static void r_err(void *ud, const char *m, int retry, unsigned after)
{
    (void)ud;
    (void)m;
    (void)retry;
    (void)after;
    fail_msg("on_error is the provider's business, not the decoder's");
}

static const llm_callbacks rcb = {r_text, r_tool, r_done, r_err};

#endif
