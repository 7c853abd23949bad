#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/base64.h"
#include "util/buf.h"
#include "util/id.h"
#include "util/log.h"
#include "util/sha256.h"
#include "util/timeutil.h"

static void t_buf_cap(void **st)
{
    (void)st;
    buf b = BUF_INIT(8);
    assert_int_equal(buf_append(&b, "12345678", 8), 0);
    assert_int_not_equal(buf_append(&b, "9", 1), 0);
    assert_int_equal(b.len, 8);
    assert_string_equal(b.data, "12345678");
    buf_free(&b);
    buf p = BUF_INIT(10);
    assert_int_equal(buf_printf(&p, "%d-%s", 42, "abc"), 0);
    assert_string_equal(p.data, "42-abc");
    assert_int_not_equal(buf_printf(&p, "%s", "12345"), 0); /* would pass the cap of 10 */
    assert_string_equal(p.data, "42-abc");
    buf_free(&p);
    buf big = BUF_INIT(0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(buf_printf(&big, "%05d,", i), 0);
    assert_int_equal(big.len, 600);
    assert_memory_equal(big.data + 594, "00099,", 6);
    buf_free(&big);
}

static void t_json_str(void **st)
{
    (void)st;
    buf b = BUF_INIT(0);
    const char in[] = "a\"b\\c\nd\x01 é";
    buf_json_str(&b, in, sizeof in - 1);
    assert_string_equal(b.data, "\"a\\\"b\\\\c\\nd\\u0001 é\"");
    buf_free(&b);
}

static void t_ids(void **st)
{
    (void)st;
    char a[ID_MAX], b[ID_MAX];
    id_new("thr", a);
    id_new("thr", b);
    assert_int_equal(strlen(a), 4 + ID_TIME_HEX + ID_RANDOM_HEX);
    assert_memory_equal(a, "thr_", 4);
    assert_string_not_equal(a, b);
    /* time-ordered: a later id sorts after an earlier one */
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
    id_new("thr", b);
    assert_true(strcmp(a, b) < 0);
}

static void t_ts(void **st)
{
    (void)st;
    char s[TS_MAX];
    ts_format(1779193696123456LL, s);
    assert_string_equal(s, "2026-05-19T12:28:16.123456Z");
    int64_t us = 0;
    assert_int_equal(ts_parse(s, &us), 0);
    assert_int_equal(us, 1779193696123456LL);
    assert_int_equal(ts_parse("2026-05-19T12:28:16Z", &us), 0);
    assert_int_equal(us, 1779193696000000LL);
    assert_int_not_equal(ts_parse("garbage", &us), 0);
}

static void hex(const unsigned char *d, char *out)
{
    id_hex(d, SHA256_LEN, out);
}

static void t_sha256(void **st)
{
    (void)st;
    unsigned char d[SHA256_LEN];
    char h[65];
    sha256("", 0, d);
    hex(d, h);
    assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256("abc", 3, d);
    hex(d, h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256(two, strlen(two), d);
    hex(d, h);
    assert_string_equal(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* one million 'a', fed in uneven pieces */
    sha256_ctx c;
    sha256_init(&c);
    char a[997];
    memset(a, 'a', sizeof a);
    size_t left = 1000000;
    for (size_t k = 1; left; k = k % 997 + 1) {
        size_t n = k < left ? k : left;
        sha256_update(&c, a, n);
        left -= n;
    }
    sha256_final(&c, d);
    hex(d, h);
    assert_string_equal(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* RFC 4648 §10 vectors, both alphabets, and decoding errors. */
static void t_base64(void **st)
{
    (void)st;
    static const char *const in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const std[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=",
                                      "Zm9vYmFy"};
    static const char *const url[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    char out[16];
    unsigned char back[16];
    for (size_t i = 0; i < 7; i++) {
        size_t n = strlen(in[i]);
        assert_int_equal(base64_len(n, 0), strlen(std[i]));
        assert_int_equal(base64_len(n, 1), strlen(url[i]));
        base64_encode(in[i], n, out, 0);
        assert_string_equal(out, std[i]);
        base64_encode(in[i], n, out, 1);
        assert_string_equal(out, url[i]);
        assert_int_equal(base64_decode(std[i], strlen(std[i]), back), (long)n);
        assert_memory_equal(back, in[i], n);
        assert_int_equal(base64_decode(url[i], strlen(url[i]), back), (long)n);
        assert_memory_equal(back, in[i], n);
    }
    unsigned char bytes[3] = {0xfb, 0xff, 0xfe};
    base64_encode(bytes, 3, out, 0);
    assert_string_equal(out, "+//+");
    base64_encode(bytes, 3, out, 1);
    assert_string_equal(out, "-__-");
    assert_int_equal(base64_decode("+//+", 4, back), 3);
    assert_memory_equal(back, bytes, 3);
    assert_int_equal(base64_decode("Zm9v!", 5, back), -1);
    assert_int_equal(base64_decode("Zm 9v", 5, back), -1);
}

static void t_log_quote(void **st)
{
    (void)st;
    char q[64];
    /* quotes, backslashes, C0, DEL, ESC */
    assert_string_equal(log_quote("a\"b\\c\nd\re\x1b[31m\x7f", q, sizeof q),
                        "a\\\"b\\\\c\\x0ad\\x0de\\x1b[31m\\x7f");
    assert_string_equal(log_quote(NULL, q, sizeof q), "");
    /* valid UTF-8 stays; C1 controls, separators, bidi controls and broken UTF-8 do not */
    assert_string_equal(log_quote("caf\xc3\xa9 \xe2\x82\xac", q, sizeof q), "caf\xc3\xa9 \xe2\x82\xac");
    assert_string_equal(log_quote("\xc2\x9b" "2J", q, sizeof q), "\\xc2\\x9b2J");
    assert_string_equal(log_quote("\xe2\x80\xa8\xe2\x80\xae", q, sizeof q),
                        "\\xe2\\x80\\xa8\\xe2\\x80\\xae");
    assert_string_equal(log_quote("\xff\xc3(\xed\xa0\x80", q, sizeof q),
                        "\\xff\\xc3(\\xed\\xa0\\x80");
    /* cut to fit, at a character boundary, and marked */
    char s8[8];
    assert_string_equal(log_quote("1234567", s8, sizeof s8), "1234567");
    assert_string_equal(log_quote("12345678", s8, sizeof s8), "1234...");
    assert_string_equal(log_quote("1\n2345678", s8, sizeof s8), "1...");
    assert_string_equal(log_quote("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", s8, sizeof s8), "\xc3\xa9\xc3\xa9...");
    char s3[3];
    assert_string_equal(log_quote("abcdef", s3, sizeof s3), "");
    /* LOGQ: a stack buffer of LOG_QMAX bytes per value */
    char big[1000];
    memset(big, '"', sizeof big - 1);
    big[sizeof big - 1] = 0;
    const char *v = LOGQ(big);
    assert_int_equal(strlen(v), LOG_QMAX - 1); /* 78 escaped quotes (156 bytes) + "..." */
    assert_string_equal(v + strlen(v) - 3, "...");
    assert_string_equal(LOGQ("ok"), "ok");
}

/* log_write's line: what it writes to stderr. */
static size_t log_line(char *out, size_t cap, const char *fmt, const char *arg)
{
    fflush(stderr);
    int saved = dup(2);
    FILE *f = tmpfile();
    assert_non_null(f);
    dup2(fileno(f), 2);
    log_write(LOG_ERROR, "rid1", "m\nsg", fmt, arg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    fclose(f);
    return n;
}

static void t_log_write(void **st)
{
    (void)st;
    static char line[8192];
    size_t n = log_line(line, sizeof line, "a=%s b=1", "x\ny\r\x1bz\x7f");
    assert_int_equal(line[n - 1], '\n');
    assert_null(memchr(line, '\n', n - 1)); /* one line */
    assert_non_null(strstr(line, " level=error rid=rid1 msg=\"m\\x0asg\" a=x\\x0ay\\x0d\\x1bz\\x7f b=1\n"));
    assert_memory_equal(line, "ts=", 3);
    /* capped */
    static char huge[10000];
    memset(huge, '\n', sizeof huge - 1);
    n = log_line(line, sizeof line, "v=%s", huge);
    assert_true(n <= LOG_LINE_MAX && n > LOG_LINE_MAX - 4); /* no \xNN is cut in half */
    assert_int_equal(line[n - 1], '\n');
    assert_null(memchr(line, '\n', n - 1));
    memset(huge, 'y', sizeof huge - 1);
    n = log_line(line, sizeof line, "v=%s", huge);
    assert_int_equal(n, LOG_LINE_MAX);
    assert_null(memchr(line, '\n', n - 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_buf_cap),
        cmocka_unit_test(t_json_str),
        cmocka_unit_test(t_ids),
        cmocka_unit_test(t_ts),
        cmocka_unit_test(t_sha256),
        cmocka_unit_test(t_base64),
        cmocka_unit_test(t_log_quote),
        cmocka_unit_test(t_log_write),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
