/* Human-in-the-loop forms: the request_human_input tool, its widget, the check of what the user
 * submits and the read-only summary (see human.h). Pure functions on JSON.
 *
 * Why a multi_select is a column of checkboxes: ChatKit has no multi-select control, and a
 * checkbox named "colors.red" arrives nested in the payload as {"colors": {"red": true}}. The
 * key after the dot is the option's value when every value of the field is safe for that
 * ([A-Za-z0-9_-]{1,64}), else "o<index>" for every option of the field (mixing the two could
 * collide: a value "o1" next to an unsafe second option). */
#include "run/human.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/buf.h"
#include "util/log.h"

#define MAX_FIELDS      30
#define MAX_OPTIONS     50
#define MAX_TITLE       200
#define MAX_LABEL       200
#define MAX_PLACEHOLDER 200
#define MAX_DESCRIPTION 2000
#define MAX_VALUE       200 /* an option's value */
#define MAX_NAME        64
#define MAX_TEXT        1000
#define MAX_TEXTAREA    10000
#define MAX_EMAIL       254

enum ftype { T_TEXT, T_TEXTAREA, T_NUMBER, T_EMAIL, T_SELECT, T_MULTI, T_CHECKBOX, T_DATE, T_NONE };

static const char *const type_names[] = {"text",   "textarea",     "number",   "email",
                                         "select", "multi_select", "checkbox", "date"};

/* What models write instead of the listed types (compared after lowercasing, '-' and ' ' as
 * '_'). */
static const struct {
    const char *alias;
    enum ftype type;
} type_aliases[] = {
    {"multiselect", T_MULTI}, {"multi_choice", T_MULTI}, {"string", T_TEXT},
    {"str", T_TEXT},          {"boolean", T_CHECKBOX},   {"bool", T_CHECKBOX},
    {"integer", T_NUMBER},    {"int", T_NUMBER},         {"float", T_NUMBER},
    {"dropdown", T_SELECT},   {"radio", T_SELECT},       {"long_text", T_TEXTAREA},
};

/* ------------------------------------------------------------------------------------------
 * small helpers */

static size_t utf8_chars(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* s[0..*n) without surrounding ASCII whitespace */
static const char *trim(const char *s, size_t *n)
{
    while (*n && is_space(*s)) {
        s++;
        (*n)--;
    }
    while (*n && is_space(s[*n - 1]))
        (*n)--;
    return s;
}

/* A trimmed JSON string, cut to max characters (at a character boundary); NULL when v is not
 * a string or is blank. */
static json_t *capped_string(const json_t *v, size_t max)
{
    if (!json_is_string(v))
        return NULL;
    size_t n = json_string_length(v);
    const char *s = trim(json_string_value(v), &n);
    if (!n)
        return NULL;
    size_t chars = 0, i = 0;
    for (; i < n; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80 && chars++ == max)
            break;
    }
    return json_stringn(s, i);
}

static const char *field_str(const json_t *field, const char *key)
{
    const char *s = json_string_value(json_object_get(field, key));
    return s ? s : "";
}

static enum ftype field_type(const json_t *field)
{
    const char *t = field_str(field, "type");
    for (size_t i = 0; i < sizeof type_names / sizeof *type_names; i++)
        if (!strcmp(t, type_names[i]))
            return (enum ftype)i;
    return T_NONE;
}

static int bool_true(const json_t *v)
{
    if (json_is_true(v))
        return 1;
    const char *s = json_string_value(v);
    return s && (!strcasecmp(s, "true") || !strcasecmp(s, "yes"));
}

static int key_safe(const char *s)
{
    size_t n = strlen(s);
    if (!n || n > MAX_NAME)
        return 0;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int name_valid(const char *s, size_t n)
{
    if (!n || n > MAX_NAME)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return 0;
    }
    return 1;
}

/* Whether a multi_select's options are keyed by their values (else by "o<index>"). */
static int options_by_value(const json_t *options)
{
    size_t i;
    json_t *o;
    json_array_foreach(options, i, o)
    {
        if (!key_safe(field_str(o, "value")))
            return 0;
    }
    return 1;
}

static void option_key(const json_t *options, int by_value, size_t i, char *out, size_t n)
{
    if (by_value)
        snprintf(out, n, "%s", field_str(json_array_get(options, i), "value"));
    else
        snprintf(out, n, "o%zu", i);
}

static int option_index(const json_t *options, const char *value)
{
    size_t i;
    json_t *o;
    json_array_foreach(options, i, o)
    {
        if (!strcmp(field_str(o, "value"), value))
            return (int)i;
    }
    return -1;
}

static json_t *action_config(const char *type, const char *interaction_id)
{
    return json_pack("{s:s,s:{s:s},s:s,s:s,s:b}", "type", type, "payload", "interaction_id",
                     interaction_id, "handler", "server", "loadingBehavior", "auto", "streaming",
                     1);
}

/* A value as the user reads it: strings as they are, yes/no, numbers, lists joined by ", ". */
static void put_value(buf *b, const json_t *v)
{
    if (json_is_string(v)) {
        buf_append(b, json_string_value(v), json_string_length(v));
    } else if (json_is_boolean(v)) {
        buf_puts(b, json_is_true(v) ? "yes" : "no");
    } else if (json_is_integer(v)) {
        buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else if (json_is_real(v)) {
        buf_printf(b, "%.15g", json_real_value(v));
    } else if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            if (i)
                buf_puts(b, ", ");
            put_value(b, e);
        }
    } else if (v) {
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (s)
            buf_puts(b, s);
        free(s);
    }
}

/* ------------------------------------------------------------------------------------------
 * checking one value against a field (answers and defaults alike) */

static int parse_date(const char *s, size_t n)
{
    if (n < 10)
        return 0;
    for (int i = 0; i < 10; i++) {
        if (i == 4 || i == 7) {
            if (s[i] != '-')
                return 0;
        } else if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
    }
    if (n > 10 && s[10] != 'T' && s[10] != 't')
        return 0;
    int y = atoi(s), m = (s[5] - '0') * 10 + (s[6] - '0'), d = (s[8] - '0') * 10 + (s[9] - '0');
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1 || m < 1 || m > 12 || d < 1)
        return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return d <= days[m - 1] + (m == 2 && leap);
}

static int email_valid(const char *s, size_t n)
{
    if (n > MAX_EMAIL)
        return 0;
    const char *at = NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c == 0x7f)
            return 0;
        if (c == '@') {
            if (at)
                return 0;
            at = s + i;
        }
    }
    if (!at || at == s)
        return 0;
    const char *dom = at + 1;
    size_t dn = n - (size_t)(dom - s);
    const char *dot = memchr(dom, '.', dn);
    return dot && dom[0] != '.' && dom[dn - 1] != '.' && !memmem(dom, dn, "..", 2);
}

/* A number typed as text: the whole (trimmed) string is a finite decimal number. */
static json_t *parse_number(const char *s, size_t n)
{
    char tmp[64];
    if (!n || n >= sizeof tmp)
        return NULL;
    int digits = 0, integral = 1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9')
            digits = 1;
        else if (c == '.' || c == 'e' || c == 'E')
            integral = 0;
        else if (c != '+' && c != '-')
            return NULL; /* no hex, inf, nan, spaces */
    }
    if (!digits)
        return NULL;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    char *end;
    errno = 0;
    if (integral) {
        long long ll = strtoll(tmp, &end, 10);
        if (!*end && !errno)
            return json_integer((json_int_t)ll);
    }
    errno = 0;
    double d = strtod(tmp, &end);
    if (*end || !isfinite(d))
        return NULL;
    return json_real(d);
}

static int checkbox_value(const json_t *v, int *on)
{
    if (json_is_boolean(v)) {
        *on = json_is_true(v);
        return 1;
    }
    if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1)) {
        *on = json_integer_value(v) == 1;
        return 1;
    }
    const char *s = json_string_value(v);
    if (!s)
        return 0;
    static const char *const yes[] = {"on", "true", "1", "yes"};
    static const char *const no[] = {"off", "false", "0", "no", ""};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        if (!strcasecmp(s, yes[i])) {
            *on = 1;
            return 1;
        }
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        if (!strcasecmp(s, no[i])) {
            *on = 0;
            return 1;
        }
    return 0;
}

/* A multi_select's choices: {key: bool} (the checkboxes), a list of values, or one value; with
 * a payload, flat "name.key" entries too (a client that does not nest). Fills sel[]. */
static int multi_value(const json_t *field, const json_t *v, const json_t *payload, char *sel,
                       char *why, size_t whylen)
{
    const json_t *options = json_object_get(field, "options");
    size_t nopt = json_array_size(options);
    int by_value = options_by_value(options);
    char key[80];
    if (json_is_object(v)) {
        const char *k;
        json_t *e;
        json_object_foreach((json_t *)v, k, e)
        {
            int idx = -1;
            for (size_t i = 0; i < nopt && idx < 0; i++) {
                option_key(options, by_value, i, key, sizeof key);
                if (!strcmp(k, key))
                    idx = (int)i;
            }
            if (idx < 0)
                idx = option_index(options, k);
            int on = 0;
            if (!checkbox_value(e, &on) && !json_is_null(e)) {
                snprintf(why, whylen, "unexpected value for option \"%.64s\"", k);
                return -1;
            }
            if (!on)
                continue;
            if (idx < 0) {
                snprintf(why, whylen, "\"%.64s\" is not one of the options", k);
                return -1;
            }
            sel[idx] = 1;
        }
        return 0;
    }
    if (json_is_string(v) || json_is_array(v)) {
        json_t *one = json_is_string(v) ? json_pack("[O]", v) : NULL;
        const json_t *list = one ? one : v;
        size_t i;
        json_t *e;
        int rc = 0;
        json_array_foreach(list, i, e)
        {
            const char *s = json_string_value(e);
            if (!s) {
                snprintf(why, whylen, "must be a list of options");
                rc = -1;
                break;
            }
            if (!*s)
                continue;
            int idx = option_index(options, s);
            if (idx < 0) {
                snprintf(why, whylen, "\"%.64s\" is not one of the options", s);
                rc = -1;
                break;
            }
            sel[idx] = 1;
        }
        json_decref(one);
        return rc;
    }
    if (v && !json_is_null(v)) {
        snprintf(why, whylen, "must be a list of options");
        return -1;
    }
    if (json_is_object(payload)) {
        const char *name = field_str(field, "name");
        for (size_t i = 0; i < nopt; i++) {
            char flat[160];
            option_key(options, by_value, i, key, sizeof key);
            snprintf(flat, sizeof flat, "%s.%s", name, key);
            int on = 0;
            if (checkbox_value(json_object_get(payload, flat), &on) && on)
                sel[i] = 1;
        }
    }
    return 0;
}

/* v checked against field: 1 = a value (*out, a new reference), 0 = no value (absent, null,
 * blank; for a checkbox: absent), -1 = not acceptable (why says what is wrong). */
static int check_value(const json_t *field, const json_t *v, const json_t *payload, json_t **out,
                       char *why, size_t whylen)
{
    enum ftype t = field_type(field);
    *out = NULL;
    if (t == T_MULTI) {
        const json_t *options = json_object_get(field, "options");
        char sel[MAX_OPTIONS] = {0};
        if (json_array_size(options) > MAX_OPTIONS) {
            snprintf(why, whylen, "too many options");
            return -1;
        }
        if (multi_value(field, v, payload, sel, why, whylen))
            return -1;
        json_t *arr = json_array();
        for (size_t i = 0; i < json_array_size(options); i++)
            if (sel[i])
                json_array_append(arr, json_object_get(json_array_get(options, i), "value"));
        if (!json_array_size(arr)) {
            json_decref(arr);
            return 0;
        }
        *out = arr;
        return 1;
    }
    if (!v || json_is_null(v))
        return 0;
    if (t == T_CHECKBOX) {
        int on;
        if (!checkbox_value(v, &on)) {
            snprintf(why, whylen, "must be checked or unchecked");
            return -1;
        }
        *out = json_boolean(on);
        return 1;
    }
    if (t == T_NUMBER && json_is_number(v)) {
        *out = json_copy((json_t *)v);
        return 1;
    }
    if ((t == T_TEXT || t == T_TEXTAREA) && json_is_number(v)) {
        buf b = BUF_INIT(0);
        put_value(&b, v);
        *out = json_string(b.data ? b.data : "");
        buf_free(&b);
        return 1;
    }
    if (!json_is_string(v)) {
        static const char *const expected[] = {"must be text",
                                               "must be text",
                                               "must be a number",
                                               "must be an email address",
                                               "must be one of the options",
                                               "",
                                               "",
                                               "must be a date (YYYY-MM-DD)",
                                               "unknown field type"};
        snprintf(why, whylen, "%s", expected[t]);
        return -1;
    }
    size_t n = json_string_length(v);
    const char *raw = json_string_value(v);
    size_t tn = n;
    const char *s = trim(raw, &tn);
    if (!tn)
        return 0;
    switch (t) {
    case T_TEXT:
    case T_TEXTAREA: {
        size_t max = t == T_TEXT ? MAX_TEXT : MAX_TEXTAREA;
        if (utf8_chars(raw, n) > max) {
            snprintf(why, whylen, "must be at most %zu characters", max);
            return -1;
        }
        *out = json_incref((json_t *)v);
        return 1;
    }
    case T_NUMBER:
        *out = parse_number(s, tn);
        if (!*out) {
            snprintf(why, whylen, "must be a number");
            return -1;
        }
        return 1;
    case T_EMAIL:
        if (!email_valid(s, tn)) {
            snprintf(why, whylen, "must be a valid email address");
            return -1;
        }
        *out = json_stringn(s, tn);
        return 1;
    case T_SELECT:
        if (option_index(json_object_get(field, "options"), raw) < 0) {
            snprintf(why, whylen, "must be one of the options");
            return -1;
        }
        *out = json_incref((json_t *)v);
        return 1;
    case T_DATE:
        if (!parse_date(s, tn)) {
            snprintf(why, whylen, "must be a date (YYYY-MM-DD)");
            return -1;
        }
        *out = json_stringn(s, 10);
        return 1;
    default: snprintf(why, whylen, "unknown field type"); return -1;
    }
}

/* ------------------------------------------------------------------------------------------
 * the tool */

#define STR_(x) #x
#define STR(x)  STR_(x)

/* Plain JSON Schema (a subset both OpenAI functions and Anthropic input_schema take). */
/* clang-format off */
static const char tool_parameters[] =
    "{\"type\": \"object\", \"properties\": {"
    "\"title\": {\"type\": \"string\", \"maxLength\": " STR(MAX_TITLE) ","
    " \"description\": \"What the form is about, shown as its heading.\"},"
    "\"description\": {\"type\": \"string\", \"maxLength\": " STR(MAX_DESCRIPTION) ","
    " \"description\": \"Optional: why you ask, or what happens with the answers.\"},"
    "\"fields\": {\"type\": \"array\", \"minItems\": 1, \"maxItems\": " STR(MAX_FIELDS) ","
    " \"description\": \"The fields of the form, in order.\", \"items\": {"
    "  \"type\": \"object\", \"required\": [\"name\", \"label\", \"type\"], \"properties\": {"
    "  \"name\": {\"type\": \"string\", \"pattern\": \"^[A-Za-z0-9_]{1,64}$\","
    "   \"description\": \"The key of this answer. Unique within the form.\"},"
    "  \"label\": {\"type\": \"string\", \"maxLength\": " STR(MAX_LABEL) ","
    "   \"description\": \"The question or field label the user sees.\"},"
    "  \"type\": {\"type\": \"string\", \"enum\": [\"text\", \"textarea\", \"number\", \"email\","
    "   \"select\", \"multi_select\", \"checkbox\", \"date\"], \"description\": \"text: one line;"
    " textarea: several lines; number; email; select: one of the options; multi_select: any of"
    " the options; checkbox: yes/no (also for a confirmation); date: YYYY-MM-DD.\"},"
    "  \"required\": {\"type\": \"boolean\","
    "   \"description\": \"Whether the user must answer it to submit (default false).\"},"
    "  \"placeholder\": {\"type\": \"string\", \"maxLength\": " STR(MAX_PLACEHOLDER) ","
    "   \"description\": \"A hint shown in the empty field.\"},"
    "  \"default\": {\"description\": \"A pre-filled answer of the field's type: a string, a"
    " number, true/false for a checkbox, an option value for a select, a list of option values"
    " for a multi_select, YYYY-MM-DD for a date.\"},"
    "  \"options\": {\"type\": \"array\", \"minItems\": 1, \"maxItems\": " STR(MAX_OPTIONS) ","
    "   \"description\": \"The choices of a select or multi_select (required for those).\","
    "   \"items\": {\"type\": \"object\", \"required\": [\"value\", \"label\"], \"properties\": {"
    "    \"value\": {\"type\": \"string\", \"description\": \"What you get back.\"},"
    "    \"label\": {\"type\": \"string\", \"description\": \"What the user sees.\"}}}}}}}},"
    "\"required\": [\"title\", \"fields\"]}";
/* clang-format on */

json_t *human_tool_def(void)
{
    json_t *params = json_loads(tool_parameters, 0, NULL);
    if (!params)
        abort(); /* the literal above is broken: the unit test says so first */
    return json_pack(
        "{s:s,s:s,s:o}", "name", HUMAN_TOOL, "description",
        "Ask the user to fill in a form and wait for the answers. Use it when you need details "
        "from the user that you cannot guess, infer or look up (names, dates, amounts, choices, "
        "preferences), or an explicit confirmation before doing something that matters. Put "
        "everything you need into one form rather than asking one question at a time. The user "
        "may submit the form, leave it to your best judgement, or cancel; the result says which, "
        "and gives the submitted answers as \"Label: value\" lines. Do not use it for a question "
        "you can simply ask in your reply.",
        "parameters", params);
}

/* ------------------------------------------------------------------------------------------
 * parsing the model's form */

static json_t *fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static json_t *fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return NULL;
}

static enum ftype parse_type(const json_t *v, int has_options)
{
    if (!v || json_is_null(v))
        return has_options ? T_SELECT : T_TEXT; /* no type: the obvious one */
    const char *s = json_string_value(v);
    if (!s)
        return T_NONE;
    char t[32];
    size_t n = strlen(s), j = 0;
    s = trim(s, &n);
    if (!n || n >= sizeof t)
        return T_NONE;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        t[j++] = c == '-' || c == ' ' ? '_' : (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    t[j] = 0;
    for (size_t i = 0; i < sizeof type_names / sizeof *type_names; i++)
        if (!strcmp(t, type_names[i]))
            return (enum ftype)i;
    for (size_t i = 0; i < sizeof type_aliases / sizeof *type_aliases; i++)
        if (!strcmp(t, type_aliases[i].alias))
            return type_aliases[i].type;
    return T_NONE;
}

/* "first_name" -> "First name", "zipCode" -> "Zip Code" */
static json_t *humanize(const char *name)
{
    char out[2 * MAX_NAME + 1];
    size_t j = 0;
    for (size_t i = 0; name[i] && j + 2 < sizeof out; i++) {
        char c = name[i];
        if (c == '_') {
            if (j && out[j - 1] != ' ')
                out[j++] = ' ';
            continue;
        }
        if (c >= 'A' && c <= 'Z' && i && name[i - 1] >= 'a' && name[i - 1] <= 'z' &&
            out[j - 1] != ' ')
            out[j++] = ' ';
        out[j++] = c;
    }
    while (j && out[j - 1] == ' ')
        j--;
    out[j] = 0;
    if (out[0] >= 'a' && out[0] <= 'z')
        out[0] = (char)(out[0] - 'a' + 'A');
    return json_string(j ? out : name);
}

/* A value the model sent as a JSON string instead of an array. */
static json_t *decoded_array(const json_t *v)
{
    if (json_is_array(v))
        return json_incref((json_t *)v);
    if (!json_is_string(v))
        return NULL;
    json_t *a = json_loadb(json_string_value(v), json_string_length(v), 0, NULL);
    if (json_is_array(a))
        return a;
    json_decref(a);
    return NULL;
}

/* An option's value: a trimmed string, or a number written as one. */
static json_t *scalar_string(const json_t *v)
{
    if (!json_is_number(v))
        return capped_string(v, (size_t)-1);
    buf b = BUF_INIT(0);
    put_value(&b, v);
    json_t *s = json_string(b.data);
    buf_free(&b);
    return s;
}

static json_t *parse_options(const json_t *raw, const char *name, char *err, size_t errlen)
{
    json_t *list = decoded_array(raw);
    size_t n = json_array_size(list);
    if (!n || n > MAX_OPTIONS) {
        json_decref(list);
        return fail(err, errlen, "field \"%s\": a select or multi_select needs 1 to %d options",
                    name, MAX_OPTIONS);
    }
    json_t *out = json_array();
    size_t i;
    json_t *o;
    json_array_foreach(list, i, o)
    {
        json_t *value = NULL, *label = NULL;
        if (json_is_object(o)) {
            label = capped_string(json_object_get(o, "label"), MAX_LABEL);
            value = scalar_string(json_object_get(o, "value"));
            if (!value) /* {"label": "Red"} alone: the label is the value too */
                value = scalar_string(json_object_get(o, "label"));
        } else {
            value = scalar_string(o);
        }
        if (!value) {
            json_decref(label);
            json_decref(out);
            json_decref(list);
            return fail(err, errlen,
                        "field \"%s\": option %zu needs a value (options are strings or "
                        "{\"value\", \"label\"} objects)",
                        name, i + 1);
        }
        const char *vs = json_string_value(value);
        if (utf8_chars(vs, json_string_length(value)) > MAX_VALUE) {
            json_decref(value);
            json_decref(label);
            json_decref(out);
            json_decref(list);
            return fail(err, errlen, "field \"%s\": option %zu: value longer than %d characters",
                        name, i + 1, MAX_VALUE);
        }
        if (option_index(out, vs) >= 0) {
            json_t *e =
                fail(err, errlen, "field \"%s\": duplicate option value \"%.64s\"", name, vs);
            json_decref(value);
            json_decref(label);
            json_decref(out);
            json_decref(list);
            return e;
        }
        if (!label)
            label = capped_string(value, MAX_LABEL);
        json_array_append_new(out, json_pack("{s:o,s:o}", "value", value, "label", label));
    }
    json_decref(list);
    return out;
}

static json_t *parse_field(const json_t *f, size_t idx, const json_t *seen, char *err,
                           size_t errlen)
{
    if (!json_is_object(f))
        return fail(err, errlen, "fields[%zu] must be an object", idx);
    const json_t *jname = json_object_get(f, "name");
    if (!json_is_string(jname) || !json_string_length(jname))
        return fail(err, errlen, "fields[%zu]: name is required", idx);
    const char *name = json_string_value(jname);
    if (!name_valid(name, json_string_length(jname)))
        return fail(err, errlen,
                    "field \"%.64s\": name must be 1 to 64 letters, digits or underscores", name);
    if (!strcmp(name, "interaction_id"))
        return fail(err, errlen, "field \"interaction_id\": this name is reserved, use another");
    if (json_object_get(seen, name))
        return fail(err, errlen, "field \"%s\": duplicate name", name);
    json_t *raw_options = json_object_get(f, "options");
    enum ftype t =
        parse_type(json_object_get(f, "type"), raw_options && !json_is_null(raw_options));
    if (t == T_NONE)
        return fail(err, errlen,
                    "field \"%s\": unknown type (use text, textarea, number, email, select, "
                    "multi_select, checkbox or date)",
                    name);
    json_t *label = capped_string(json_object_get(f, "label"), MAX_LABEL);
    if (!label)
        label = humanize(name);
    json_t *field = json_pack("{s:s,s:o,s:s,s:b}", "name", name, "label", label, "type",
                              type_names[t], "required", bool_true(json_object_get(f, "required")));
    if (t != T_CHECKBOX && t != T_MULTI) {
        json_t *ph = capped_string(json_object_get(f, "placeholder"), MAX_PLACEHOLDER);
        if (ph)
            json_object_set_new(field, "placeholder", ph);
    }
    if (t == T_SELECT || t == T_MULTI) {
        json_t *options = parse_options(raw_options, name, err, errlen);
        if (!options) {
            json_decref(field);
            return NULL;
        }
        json_object_set_new(field, "options", options);
    }
    /* a default that does not fit is dropped: the user fills the field in anyway */
    json_t *def = NULL;
    char why[160];
    if (check_value(field, json_object_get(f, "default"), NULL, &def, why, sizeof why) == 1)
        json_object_set_new(field, "default", def);
    return field;
}

json_t *human_form_parse(const json_t *args, char *err, size_t errlen)
{
    if (!json_is_object(args))
        return fail(err, errlen, "the arguments must be a JSON object");
    json_t *title = capped_string(json_object_get(args, "title"), MAX_TITLE);
    if (!title)
        return fail(err, errlen, "title is required (a short heading for the form)");
    json_t *fields = decoded_array(json_object_get(args, "fields"));
    size_t n = json_array_size(fields);
    if (!n || n > MAX_FIELDS) {
        json_decref(title);
        json_decref(fields);
        return fail(err, errlen, "fields must be an array of 1 to %d fields", MAX_FIELDS);
    }
    json_t *form = json_pack("{s:o}", "title", title);
    json_t *desc = capped_string(json_object_get(args, "description"), MAX_DESCRIPTION);
    if (desc)
        json_object_set_new(form, "description", desc);
    json_t *out = json_array(), *seen = json_object();
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f)
    {
        json_t *field = parse_field(f, i, seen, err, errlen);
        if (!field) {
            json_decref(seen);
            json_decref(out);
            json_decref(form);
            json_decref(fields);
            return NULL;
        }
        json_object_set_new(seen, field_str(field, "name"), json_true());
        json_array_append_new(out, field);
    }
    json_decref(seen);
    json_decref(fields);
    json_object_set_new(form, "fields", out);
    return form;
}

/* ------------------------------------------------------------------------------------------
 * the form widget */

static json_t *control(const json_t *field)
{
    enum ftype t = field_type(field);
    const json_t *name = json_object_get(field, "name");
    const json_t *ph = json_object_get(field, "placeholder");
    const json_t *def = json_object_get(field, "default");
    int required = json_is_true(json_object_get(field, "required"));
    const json_t *options = json_object_get(field, "options");
    json_t *c = NULL;
    switch (t) {
    case T_TEXT:
    case T_NUMBER:
    case T_EMAIL:
        c = json_pack("{s:s,s:O,s:s}", "type", "Input", "name", name, "inputType",
                      t == T_TEXT     ? "text"
                      : t == T_NUMBER ? "number"
                                      : "email");
        break;
    case T_TEXTAREA:
        c = json_pack("{s:s,s:O,s:i}", "type", "Textarea", "name", name, "rows", 3);
        break;
    case T_SELECT: {
        json_t *opts = json_array();
        size_t i;
        json_t *o;
        json_array_foreach(options, i, o)
        {
            json_array_append_new(opts, json_pack("{s:O,s:O}", "value", json_object_get(o, "value"),
                                                  "label", json_object_get(o, "label")));
        }
        c = json_pack("{s:s,s:O,s:o,s:b}", "type", "Select", "name", name, "options", opts, "block",
                      1);
        break;
    }
    case T_DATE:
        c = json_pack("{s:s,s:O,s:b}", "type", "DatePicker", "name", name, "block", 1);
        break;
    case T_CHECKBOX:
        c = json_pack("{s:s,s:O,s:O}", "type", "Checkbox", "name", name, "label",
                      json_object_get(field, "label"));
        if (json_is_boolean(def))
            json_object_set_new(c, "defaultChecked", json_boolean(json_is_true(def)));
        if (required)
            json_object_set_new(c, "required", json_true());
        return c;
    case T_MULTI: {
        int by_value = options_by_value(options);
        json_t *boxes = json_array();
        size_t i;
        json_t *o;
        json_array_foreach(options, i, o)
        {
            char key[80], full[160];
            option_key(options, by_value, i, key, sizeof key);
            snprintf(full, sizeof full, "%s.%s", json_string_value(name), key);
            json_t *box = json_pack("{s:s,s:s,s:O}", "type", "Checkbox", "name", full, "label",
                                    json_object_get(o, "label"));
            size_t k;
            json_t *d;
            json_array_foreach(def, k, d)
            {
                if (json_equal(d, json_object_get(o, "value")))
                    json_object_set_new(box, "defaultChecked", json_true());
            }
            json_array_append_new(boxes, box);
        }
        return json_pack("{s:s,s:i,s:o}", "type", "Col", "gap", 1, "children", boxes);
    }
    default: return json_pack("{s:s,s:s}", "type", "Text", "value", "");
    }
    if (json_is_string(ph))
        json_object_set(c, "placeholder", (json_t *)ph);
    if (required && t != T_SELECT && t != T_DATE) /* those two have no required prop */
        json_object_set_new(c, "required", json_true());
    if (def) {
        json_t *dv = NULL;
        if (t == T_DATE) {
            /* a date-time: JS reads a bare date as UTC midnight (the day before, west of it) */
            char d[32];
            snprintf(d, sizeof d, "%.10sT00:00:00", json_string_value(def));
            dv = json_string(d);
        } else if (json_is_string(def)) {
            dv = json_copy((json_t *)def);
        } else if (json_is_number(def)) {
            buf b = BUF_INIT(0);
            put_value(&b, def);
            dv = json_string(b.data);
            buf_free(&b);
        }
        if (dv)
            json_object_set_new(c, "defaultValue", dv);
    }
    return c;
}

json_t *human_form_widget(const json_t *form, const char *interaction_id)
{
    const json_t *fields = json_object_get(form, "fields");
    if (!json_is_array(fields) || !interaction_id ||
        !json_is_string(json_object_get(form, "title")))
        return NULL;
    json_t *kids = json_array();
    json_array_append_new(
        kids, json_pack("{s:s,s:O}", "type", "Title", "value", json_object_get(form, "title")));
    const json_t *desc = json_object_get(form, "description");
    if (json_is_string(desc))
        json_array_append_new(
            kids, json_pack("{s:s,s:O,s:s}", "type", "Text", "value", desc, "color", "secondary"));
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f)
    {
        buf label = BUF_INIT(0);
        buf_puts(&label, field_str(f, "label"));
        if (json_is_true(json_object_get(f, "required")))
            buf_puts(&label, " *");
        json_t *lab = json_pack("{s:s,s:s,s:s}", "type", "Label", "value",
                                label.data ? label.data : "", "fieldName", field_str(f, "name"));
        buf_free(&label);
        json_array_append_new(kids, json_pack("{s:s,s:i,s:[oo]}", "type", "Col", "gap", 1,
                                              "children", lab, control(f)));
    }
    json_t *buttons =
        json_pack("[{s:s,s:s,s:b,s:s},{s:s,s:s,s:s,s:o},{s:s,s:s,s:s,s:s,s:o}]", "type", "Button",
                  "label", "Submit", "submit", 1, "style", "primary", "type", "Button", "label",
                  "Use your best judgement", "style", "secondary", "onClickAction",
                  action_config("human.best_judgement", interaction_id), "type", "Button", "label",
                  "Cancel", "style", "secondary", "variant", "outline", "onClickAction",
                  action_config("human.cancel", interaction_id));
    json_array_append_new(kids,
                          json_pack("{s:s,s:i,s:o}", "type", "Row", "gap", 2, "children", buttons));
    json_t *formc = json_pack("{s:s,s:s,s:i,s:o,s:o}", "type", "Form", "direction", "col", "gap", 3,
                              "onSubmitAction", action_config("human.form_submit", interaction_id),
                              "children", kids);
    return json_pack("{s:s,s:s,s:[o]}", "type", "Card", "size", "md", "children", formc);
}

/* ------------------------------------------------------------------------------------------
 * answers, the tool result, the summary */

json_t *human_answers(const json_t *form, const json_t *payload, char **problems)
{
    if (problems)
        *problems = NULL;
    const json_t *fields = json_object_get(form, "fields");
    buf pb = BUF_INIT(0);
    if (!json_is_array(fields))
        buf_puts(&pb, "- Form: not a form");
    json_t *answers = json_object();
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f)
    {
        const char *name = field_str(f, "name");
        const json_t *v = json_is_object(payload) ? json_object_get(payload, name) : NULL;
        json_t *out = NULL;
        char why[160] = "";
        int rc = check_value(f, v, payload, &out, why, sizeof why);
        int required = json_is_true(json_object_get(f, "required"));
        if (rc == 0 && field_type(f) == T_CHECKBOX) {
            out = json_false();
            rc = 1;
        }
        if (rc == 1 && required && field_type(f) == T_CHECKBOX && !json_is_true(out)) {
            snprintf(why, sizeof why, "must be checked");
            rc = -1;
        } else if (rc == 0 && required) {
            snprintf(why, sizeof why, "is required");
            rc = -1;
        }
        if (rc < 0) {
            json_decref(out);
            buf_printf(&pb, "%s- %s: %s", pb.len ? "\n" : "", field_str(f, "label"), why);
        } else if (rc == 1) {
            json_object_set_new(answers, name, out);
        }
    }
    if (!pb.len)
        return answers;
    json_decref(answers);
    if (problems)
        *problems = buf_steal(&pb, NULL);
    else
        buf_free(&pb);
    return NULL;
}

/* Each field's answer as text: "(no answer)" when there is none. */
static void answer_text(buf *b, const json_t *answers, const json_t *field)
{
    const json_t *v = json_object_get(answers, field_str(field, "name"));
    if (!v || (json_is_array(v) && !json_array_size(v)))
        buf_puts(b, "(no answer)");
    else
        put_value(b, v);
}

char *human_result_text(const json_t *form, const json_t *answers, const char *kind)
{
    if (kind && !strcmp(kind, "best_judgement"))
        return xstrdup("User requested: use your best judgement");
    if (kind && !strcmp(kind, "cancel"))
        return xstrdup("User cancelled the interaction");
    buf b = BUF_INIT(0);
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(form, "fields"), i, f)
    {
        if (i)
            buf_putc(&b, '\n');
        buf_printf(&b, "%s: ", field_str(f, "label"));
        answer_text(&b, answers, f);
    }
    return buf_steal(&b, NULL);
}

json_t *human_summary_widget(const json_t *form, const json_t *answers, const char *kind)
{
    const char *title = json_string_value(json_object_get(form, "title"));
    json_t *kids = json_array();
    json_array_append_new(kids,
                          json_pack("{s:s,s:s}", "type", "Title", "value", title ? title : "Form"));
    const char *caption;
    if (kind && !strcmp(kind, "best_judgement")) {
        json_array_append_new(kids, json_pack("{s:s,s:s}", "type", "Text", "value",
                                              "Left to the assistant's judgement"));
        caption = "Best judgement";
    } else if (kind && !strcmp(kind, "cancel")) {
        json_array_append_new(kids, json_pack("{s:s,s:s}", "type", "Text", "value", "Cancelled"));
        caption = "Cancelled";
    } else {
        size_t i;
        json_t *f;
        json_array_foreach(json_object_get(form, "fields"), i, f)
        {
            buf b = BUF_INIT(0);
            answer_text(&b, answers, f);
            json_array_append_new(kids,
                                  json_pack("{s:s,s:i,s:[{s:s,s:s,s:s},{s:s,s:s}]}", "type", "Row",
                                            "gap", 2, "children", "type", "Text", "value",
                                            field_str(f, "label"), "weight", "semibold", "type",
                                            "Text", "value", b.data ? b.data : ""));
            buf_free(&b);
        }
        caption = "Submitted";
    }
    json_array_append_new(kids, json_pack("{s:s,s:s,s:s}", "type", "Caption", "value", caption,
                                          "color", "secondary"));
    return json_pack("{s:s,s:s,s:o}", "type", "Card", "size", "md", "children", kids);
}

json_t *human_structured_inputs(const json_t *form)
{
    json_t *out = json_array();
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(form, "fields"), i, f)
    {
        const char *type = json_string_value(json_object_get(f, "type")) ?: "";
        json_t *q = json_pack("{s:O,s:O}", "id", json_object_get(f, "name"), "question",
                              json_object_get(f, "label"));
        if (!strcmp(type, "select") || !strcmp(type, "multi_select")) {
            json_t *opts = json_array();
            size_t k;
            json_t *o;
            json_array_foreach(json_object_get(f, "options"), k, o)
                json_array_append_new(opts, json_pack("{s:O}", "value", json_object_get(o, "value")));
            json_object_set_new(q, "type", json_string("multiple_choice"));
            json_object_set_new(q, "options", opts);
            json_object_set_new(q, "multiple", json_boolean(!strcmp(type, "multi_select")));
        } else if (!strcmp(type, "text") || !strcmp(type, "textarea")) {
            json_object_set_new(q, "type", json_string("freeform"));
            json_t *ph = json_object_get(f, "placeholder");
            if (json_is_string(ph))
                json_object_set(q, "description", ph);
        } else {
            json_decref(q);
            json_decref(out);
            return NULL;
        }
        json_array_append_new(out, q);
    }
    return out;
}

char *human_structured_text(const json_t *form, const json_t *inputs)
{
    buf b = BUF_INIT(0);
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(form, "fields"), i, f)
    {
        const char *name = json_string_value(json_object_get(f, "name")) ?: "";
        json_t *ans = NULL;
        size_t k;
        json_t *q;
        json_array_foreach((json_t *)inputs, k, q)
            if (!strcmp(json_string_value(json_object_get(q, "id")) ?: "", name))
                ans = json_object_get(q, "answer");
        if (b.len)
            buf_putc(&b, '\n');
        buf_printf(&b, "%s: ", json_string_value(json_object_get(f, "label")) ?: name);
        json_t *vals = json_object_get(ans, "values");
        if (!json_array_size(vals) || json_is_true(json_object_get(ans, "skipped"))) {
            buf_puts(&b, "(no answer)");
            continue;
        }
        json_t *v;
        json_array_foreach(vals, k, v)
        {
            if (k)
                buf_puts(&b, ", ");
            buf_puts(&b, json_string_value(v) ?: "");
        }
    }
    return buf_steal(&b, NULL);
}

/* ---- MCP elicitation ---- */

static json_t *schema_options(const json_t *prop)
{
    json_t *e = json_object_get(prop, "enum");
    json_t *names = json_object_get(prop, "enumNames");
    json_t *one = json_object_get(prop, "oneOf");
    if (!one)
        one = json_object_get(prop, "anyOf");
    json_t *out = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(e, i, v)
    {
        if (!json_is_string(v))
            continue;
        json_t *label = json_array_get(names, i);
        json_array_append_new(out, json_pack("{s:O,s:O}", "value", v, "label",
                                             json_is_string(label) ? label : v));
    }
    json_array_foreach(one, i, v)
    {
        json_t *c = json_object_get(v, "const");
        json_t *t = json_object_get(v, "title");
        if (json_is_string(c))
            json_array_append_new(out, json_pack("{s:O,s:O}", "value", c, "label",
                                                 json_is_string(t) ? t : c));
    }
    if (!json_array_size(out)) {
        json_decref(out);
        return NULL;
    }
    return out;
}

json_t *human_form_from_schema(const char *message, const json_t *schema, char *err,
                               size_t errlen)
{
    json_t *props = json_object_get(schema, "properties");
    if (!json_is_object(props) || !json_object_size(props)) {
        snprintf(err, errlen, "the requested schema has no properties");
        return NULL;
    }
    json_t *req = json_object_get(schema, "required");
    json_t *fields = json_array();
    const char *name;
    json_t *p;
    json_object_foreach(props, name, p)
    {
        const char *type = json_string_value(json_object_get(p, "type")) ?: "";
        const char *format = json_string_value(json_object_get(p, "format")) ?: "";
        json_t *opts = schema_options(p);
        const char *ft = NULL;
        if (!strcmp(type, "array")) {
            json_decref(opts);
            opts = schema_options(json_object_get(p, "items"));
            ft = opts ? "multi_select" : NULL;
        } else if (opts) {
            ft = "select";
        } else if (!strcmp(type, "string")) {
            ft = !strcmp(format, "email") ? "email"
                 : (!strcmp(format, "date") || !strcmp(format, "date-time")) ? "date"
                                                                             : "text";
        } else if (!strcmp(type, "number") || !strcmp(type, "integer")) {
            ft = "number";
        } else if (!strcmp(type, "boolean")) {
            ft = "checkbox";
        }
        if (!ft) {
            json_decref(opts);
            json_decref(fields);
            snprintf(err, errlen, "the property %.64s cannot be shown as a form field", name);
            return NULL;
        }
        int required = 0;
        size_t i;
        json_t *r;
        json_array_foreach(req, i, r)
            required |= json_is_string(r) && !strcmp(json_string_value(r), name);
        json_t *title = json_object_get(p, "title");
        json_t *f = json_pack("{s:s,s:s,s:b}", "name", name, "type", ft, "required", required);
        if (json_is_string(title))
            json_object_set(f, "label", title);
        json_t *desc = json_object_get(p, "description");
        if (json_is_string(desc))
            json_object_set(f, "placeholder", desc);
        if (json_object_get(p, "default"))
            json_object_set(f, "default", json_object_get(p, "default"));
        if (opts)
            json_object_set_new(f, "options", opts);
        json_array_append_new(fields, f);
    }
    json_t *args = json_pack("{s:s,s:o}", "title",
                             message && *message ? message : "The tool needs your input",
                             "fields", fields);
    json_t *form = human_form_parse(args, err, errlen);
    json_decref(args);
    return form;
}

json_t *human_elicit_content(const json_t *schema, const json_t *answers)
{
    json_t *out = json_object();
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)answers, name, v)
    {
        json_t *p = json_object_get(json_object_get(schema, "properties"), name);
        const char *type = json_string_value(json_object_get(p, "type")) ?: "";
        if (!strcmp(type, "integer") && json_is_real(v))
            json_object_set_new(out, name, json_integer((json_int_t)json_real_value(v)));
        else
            json_object_set(out, name, v);
    }
    return out;
}
