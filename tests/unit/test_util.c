#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <time.h>

#include "util/base64.h"
#include "util/buf.h"
#include "util/id.h"
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_buf_cap),
        cmocka_unit_test(t_json_str),
        cmocka_unit_test(t_ids),
        cmocka_unit_test(t_ts),
        cmocka_unit_test(t_sha256),
        cmocka_unit_test(t_base64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
