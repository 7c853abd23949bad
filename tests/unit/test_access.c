/* CORS matching, per-user rate limits, cookie parsing and signed preview URLs. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "auth/access.h"
#include "auth/auth.h"
#include "files/files.h"

static void t_origins(void **st)
{
    const char *list = " https://app.example.com, http://localhost:3000/ ,";
    assert_true(cors_origin_allowed(list, "https://app.example.com"));
    assert_true(cors_origin_allowed(list, "https://APP.example.com"));
    assert_true(cors_origin_allowed(list, "http://localhost:3000"));
    assert_false(cors_origin_allowed(list, "http://app.example.com"));    /* scheme */
    assert_false(cors_origin_allowed(list, "https://app.example.com:8443")); /* port */
    assert_false(cors_origin_allowed(list, "https://app.example.com.evil.io"));
    assert_false(cors_origin_allowed(list, "https://evil.io"));
    assert_false(cors_origin_allowed(list, "null"));
    assert_false(cors_origin_allowed(list, ""));
    assert_false(cors_origin_allowed(list, NULL));
    assert_false(cors_origin_allowed(list, "https://app.example.com, https://evil.io"));
    assert_false(cors_origin_allowed("", "https://app.example.com"));
    assert_false(cors_origin_allowed(NULL, "https://app.example.com"));
    assert_true(cors_origin_allowed("*", "https://anything.io"));
    assert_false(cors_origin_allowed("*", "null"));
}

static void t_request_headers(void **st)
{
    char out[128];
    assert_int_equal(cors_request_headers("Authorization, Content-Type", out, sizeof out), 0);
    assert_string_equal(out, "authorization, content-type");
    assert_int_equal(cors_request_headers("x-chatkit-frame,openai-beta", out, sizeof out), 0);
    assert_string_equal(out, "x-chatkit-frame, openai-beta");
    assert_int_equal(cors_request_headers(NULL, out, sizeof out), 0);
    assert_string_equal(out, "");
    assert_int_equal(cors_request_headers("", out, sizeof out), 0);
    assert_int_equal(cors_request_headers("x-evil", out, sizeof out), -1);
    assert_int_equal(cors_request_headers("authorization, x-chatkit-", out, sizeof out), -1);
    assert_int_equal(cors_request_headers("content-type\r\nx: y", out, sizeof out), -1);
    assert_int_equal(cors_request_headers("authorization, content-type", out, 10), -1);
}

static void t_rate(void **st)
{
    rate_limits rl;
    rl_init(&rl, 3, 2);
    unsigned retry = 0;
    for (int i = 0; i < 3; i++)
        assert_int_equal(rl_request(&rl, "u1", 1000, &retry), 0);
    assert_int_equal(rl_request(&rl, "u1", 1000, &retry), -1);
    assert_int_equal(retry, 20); /* 3 per minute: one back every 20 s */
    assert_int_equal(rl_request(&rl, "u2", 1000, &retry), 0); /* others unaffected */
    assert_int_equal(rl_request(&rl, "u1", 11000, &retry), -1);
    assert_int_equal(retry, 10);
    assert_int_equal(rl_request(&rl, "u1", 21000, &retry), 0);
    assert_int_equal(rl_request(&rl, "u1", 21000, &retry), -1);

    assert_int_equal(rl_stream_check(&rl, "u1"), 0);
    rl_stream(&rl, "u1", 1);
    rl_stream(&rl, "u1", 1);
    assert_int_equal(rl_streams(&rl, "u1"), 2);
    assert_int_equal(rl_stream_check(&rl, "u1"), -1);
    assert_int_equal(rl_stream_check(&rl, "u3"), 0);
    rl_stream(&rl, "u1", -1);
    assert_int_equal(rl_stream_check(&rl, "u1"), 0);
    rl_stream(&rl, "u9", -1); /* unknown: nothing */
    assert_int_equal(rl_streams(&rl, "u9"), 0);

    /* prune drops full, idle users only */
    rl_prune(&rl, 10000000);
    assert_int_equal(rl_streams(&rl, "u1"), 1);
    assert_non_null(map_get(&rl.users, "u1"));
    assert_null(map_get(&rl.users, "u2"));
    rl_stream(&rl, "u1", -1);
    rl_prune(&rl, 10000000);
    assert_int_equal(rl.users.len, 0);
    rl_free(&rl);

    rl_init(&rl, 0, 0); /* off */
    for (int i = 0; i < 1000; i++)
        assert_int_equal(rl_request(&rl, "u", 0, &retry), 0);
    for (int i = 0; i < 100; i++)
        rl_stream(&rl, "u", 1);
    assert_int_equal(rl_stream_check(&rl, "u"), 0);
    rl_free(&rl);
}

static void t_cookie(void **st)
{
    const char *v;
    assert_int_equal(auth_cookie("a=1; chatkitd_session=cks_abc; b=2", AUTH_COOKIE, &v), 7);
    assert_memory_equal(v, "cks_abc", 7);
    assert_int_equal(auth_cookie("chatkitd_session=\"q\"", AUTH_COOKIE, &v), 1);
    assert_memory_equal(v, "q", 1);
    assert_int_equal(auth_cookie("xchatkitd_session=1", AUTH_COOKIE, &v), -1);
    assert_int_equal(auth_cookie("chatkitd_session=", AUTH_COOKIE, &v), -1);
    assert_int_equal(auth_cookie(NULL, AUTH_COOKIE, &v), -1);
    char big[200] = "chatkitd_session=";
    memset(big + 17, 'a', 150);
    assert_int_equal(auth_cookie(big, AUTH_COOKIE, &v), -1); /* longer than any token */
}

static void t_signed_urls(void **st)
{
    const unsigned char key[32] = {1, 2, 3};
    char q[FILES_SIG_QUERY_MAX], bad[FILES_SIG_QUERY_MAX + 8];
    files_sign(key, sizeof key, "atc_1", 2000, q);
    assert_int_equal(strncmp(q, "exp=2000&sig=", 13), 0);
    assert_int_equal(strlen(q), 13 + 43);
    assert_int_equal(files_verify(key, sizeof key, "atc_1", q, 1999), 0);
    assert_int_equal(files_verify(key, sizeof key, "atc_1", q, 2000), -2); /* expired */
    assert_int_equal(files_verify(key, sizeof key, "atc_2", q, 1000), -2); /* other id */
    const unsigned char other[32] = {9};
    assert_int_equal(files_verify(other, sizeof other, "atc_1", q, 1000), -2);
    memcpy(bad, q, sizeof q);
    bad[20] = bad[20] == 'A' ? 'B' : 'A';
    assert_int_equal(files_verify(key, sizeof key, "atc_1", bad, 1000), -2); /* tampered */
    memcpy(bad, q, sizeof q);
    bad[4] = '3'; /* exp=3000 with the old signature */
    assert_int_equal(files_verify(key, sizeof key, "atc_1", bad, 1000), -2);
    assert_int_equal(files_verify(key, sizeof key, "atc_1", "exp=2000", 1000), -1); /* none */
    assert_int_equal(files_verify(key, sizeof key, "atc_1", NULL, 1000), -1);
    assert_int_equal(files_verify(key, sizeof key, "atc_1", "sig=abc", 1000), -2);
    assert_int_equal(files_verify(key, sizeof key, "atc_1", "exp=-5&sig=x", 1000), -2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_origins), cmocka_unit_test(t_request_headers),
        cmocka_unit_test(t_rate),    cmocka_unit_test(t_cookie),
        cmocka_unit_test(t_signed_urls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
