#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "run/human.h"

/* ------------------------------------------------------------------------------------------
 * helpers */

static json_t *js(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
    if (!j)
        fail_msg("bad JSON in test: %s: %s", e.text, text);
    return j;
}

static json_t *parse_ok(const char *args_text)
{
    json_t *args = js(args_text);
    char err[300] = "";
    json_t *form = human_form_parse(args, err, sizeof err);
    json_decref(args);
    if (!form)
        fail_msg("parse failed: %s (args %s)", err, args_text);
    return form;
}

/* The parse fails and the message contains want. */
static void parse_err(const char *args_text, const char *want)
{
    json_t *args = js(args_text);
    char err[300] = "";
    json_t *form = human_form_parse(args, err, sizeof err);
    json_decref(args);
    if (form) {
        char *s = json_dumps(form, JSON_COMPACT);
        json_decref(form);
        fail_msg("parse accepted %s as %s", args_text, s);
    }
    if (!strstr(err, want))
        fail_msg("error \"%s\" lacks \"%s\" (args %s)", err, want, args_text);
}

static const json_t *field_of(const json_t *form, size_t i)
{
    return json_array_get(json_object_get(form, "fields"), i);
}

static void assert_json(const json_t *got, const char *want_text)
{
    json_t *want = js(want_text);
    if (!json_equal((json_t *)got, want)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(want);
        fail_msg("got %s, want %s", g ? g : "NULL", want_text);
    }
    json_decref(want);
}

/* answers for a payload, or NULL with the problems compared to want_problems */
static json_t *answers_ok(const json_t *form, const char *payload_text)
{
    json_t *p = js(payload_text);
    char *problems = (char *)"x";
    json_t *a = human_answers(form, p, &problems);
    json_decref(p);
    if (!a)
        fail_msg("answers rejected %s: %s", payload_text, problems);
    assert_null(problems);
    return a;
}

static void answers_bad(const json_t *form, const char *payload_text, const char *want_problems)
{
    json_t *p = js(payload_text);
    char *problems = NULL;
    json_t *a = human_answers(form, p, &problems);
    json_decref(p);
    if (a) {
        char *s = json_dumps(a, JSON_COMPACT);
        fail_msg("answers accepted %s as %s", payload_text, s);
    }
    assert_non_null(problems);
    if (strcmp(problems, want_problems))
        fail_msg("problems \"%s\", want \"%s\" (payload %s)", problems, want_problems,
                 payload_text);
    free(problems);
}

/* Walks a widget: no nulls, every component an object with a string type, every *Action an
 * ActionConfig with all four keys (server, auto, streaming) and payload {interaction_id}.
 * Collects the names of named controls and the Label fieldNames, counts actions and the
 * components of a type. */
struct walk {
    json_t *names;       /* array of control names */
    json_t *label_names; /* array of Label fieldNames */
    int actions;
    int forms;
    int inputs;
    const char *iid;
};

static int is_control(const char *t)
{
    static const char *const c[] = {"Input",    "Textarea",   "Select",
                                    "Checkbox", "DatePicker", "RadioGroup"};
    for (size_t i = 0; i < sizeof c / sizeof *c; i++)
        if (!strcmp(t, c[i]))
            return 1;
    return 0;
}

static void walk_nulls(const json_t *v)
{
    assert_false(json_is_null(v));
    size_t i;
    const char *k;
    json_t *e;
    if (json_is_object(v)) {
        json_object_foreach((json_t *)v, k, e) walk_nulls(e);
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, e) walk_nulls(e);
    }
}

static void walk(const json_t *c, struct walk *w)
{
    assert_true(json_is_object(c));
    const char *type = json_string_value(json_object_get(c, "type"));
    assert_non_null(type);
    assert_true(*type);
    if (!strcmp(type, "Form"))
        w->forms++;
    if (is_control(type)) {
        w->inputs++;
        assert_true(json_is_string(json_object_get(c, "name")));
        json_array_append(w->names, json_object_get(c, "name"));
    }
    if (!strcmp(type, "Label")) {
        assert_true(json_is_string(json_object_get(c, "value")));
        json_array_append(w->label_names, json_object_get(c, "fieldName"));
    }
    if (!strcmp(type, "Text") || !strcmp(type, "Title") || !strcmp(type, "Caption"))
        assert_true(json_is_string(json_object_get(c, "value")));
    if (!strcmp(type, "Checkbox") && json_object_get(c, "defaultChecked"))
        assert_true(json_is_boolean(json_object_get(c, "defaultChecked")));
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)c, k, v)
    {
        size_t kl = strlen(k);
        if (kl >= 6 && !strcmp(k + kl - 6, "Action")) {
            w->actions++;
            assert_true(json_is_object(v));
            assert_int_equal(json_object_size(v), 5);
            assert_true(json_is_string(json_object_get(v, "type")));
            assert_string_equal(json_string_value(json_object_get(v, "handler")), "server");
            assert_string_equal(json_string_value(json_object_get(v, "loadingBehavior")), "auto");
            assert_true(json_is_true(json_object_get(v, "streaming")));
            json_t *p = json_object_get(v, "payload");
            assert_int_equal(json_object_size(p), 1);
            assert_string_equal(json_string_value(json_object_get(p, "interaction_id")), w->iid);
        }
    }
    json_t *kids = json_object_get(c, "children");
    if (kids) {
        assert_true(json_is_array(kids));
        size_t i;
        json_array_foreach(kids, i, v) walk(v, w);
    }
}

static int has_string(const json_t *arr, const char *s)
{
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        if (json_is_string(e) && !strcmp(json_string_value(e), s))
            return 1;
    }
    return 0;
}

/* The first component of a type with a prop equal to a string (depth first). */
static const json_t *find(const json_t *c, const char *type, const char *prop, const char *val)
{
    if (!json_is_object(c))
        return NULL;
    const char *t = json_string_value(json_object_get(c, "type"));
    const char *pv = prop ? json_string_value(json_object_get(c, prop)) : NULL;
    if (t && !strcmp(t, type) && (!prop || (pv && !strcmp(pv, val))))
        return c;
    size_t i;
    json_t *ch;
    json_array_foreach(json_object_get(c, "children"), i, ch)
    {
        const json_t *r = find(ch, type, prop, val);
        if (r)
            return r;
    }
    return NULL;
}

static const char ALL_TYPES[] =
    "{\"title\": \"Trip details\", \"description\": \"For the booking\", \"fields\": ["
    "{\"name\": \"full_name\", \"label\": \"Full name\", \"type\": \"text\", \"required\": true,"
    " \"placeholder\": \"Jane Doe\"},"
    "{\"name\": \"notes\", \"label\": \"Notes\", \"type\": \"textarea\", \"default\": \"none\"},"
    "{\"name\": \"guests\", \"label\": \"Guests\", \"type\": \"number\", \"default\": 2},"
    "{\"name\": \"email\", \"label\": \"Email\", \"type\": \"email\", \"required\": true},"
    "{\"name\": \"room\", \"label\": \"Room\", \"type\": \"select\", \"required\": true,"
    " \"placeholder\": \"Pick one\", \"options\": [{\"value\": \"single\", \"label\": \"Single\"},"
    " {\"value\": \"double\", \"label\": \"Double\"}], \"default\": \"double\"},"
    "{\"name\": \"extras\", \"label\": \"Extras\", \"type\": \"multi_select\", \"options\": ["
    "{\"value\": \"breakfast\", \"label\": \"Breakfast\"}, {\"value\": \"late-checkout\","
    " \"label\": \"Late checkout\"}, {\"value\": \"parking_spot\", \"label\": \"Parking\"}],"
    " \"default\": [\"breakfast\"]},"
    "{\"name\": \"agree\", \"label\": \"I agree\", \"type\": \"checkbox\", \"required\": true},"
    "{\"name\": \"arrival\", \"label\": \"Arrival\", \"type\": \"date\", \"default\": "
    "\"2025-03-01\"}]}";

/* ------------------------------------------------------------------------------------------
 * the tool */

static void t_tool_def(void **st)
{
    (void)st;
    json_t *d = human_tool_def();
    assert_string_equal(json_string_value(json_object_get(d, "name")), HUMAN_TOOL);
    assert_true(strlen(json_string_value(json_object_get(d, "description"))) > 100);
    json_t *p = json_object_get(d, "parameters");
    assert_string_equal(json_string_value(json_object_get(p, "type")), "object");
    assert_null(json_object_get(p, "$schema"));
    assert_json(json_object_get(p, "required"), "[\"title\", \"fields\"]");
    json_t *fields = json_object_get(json_object_get(p, "properties"), "fields");
    assert_string_equal(json_string_value(json_object_get(fields, "type")), "array");
    assert_int_equal(json_integer_value(json_object_get(fields, "minItems")), 1);
    assert_int_equal(json_integer_value(json_object_get(fields, "maxItems")), 30);
    json_t *item = json_object_get(fields, "items");
    assert_json(json_object_get(item, "required"), "[\"name\", \"label\", \"type\"]");
    json_t *props = json_object_get(item, "properties");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(props, "name"), "pattern")),
        "^[A-Za-z0-9_]{1,64}$");
    assert_json(json_object_get(json_object_get(props, "type"), "enum"),
                "[\"text\",\"textarea\",\"number\",\"email\",\"select\",\"multi_select\","
                "\"checkbox\",\"date\"]");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(props, "required"), "type")), "boolean");
    assert_non_null(json_object_get(props, "placeholder"));
    assert_non_null(json_object_get(props, "default"));
    json_t *opt = json_object_get(json_object_get(props, "options"), "items");
    assert_json(json_object_get(opt, "required"), "[\"value\", \"label\"]");
    walk_nulls(d);
    json_decref(d);
}

/* ------------------------------------------------------------------------------------------
 * parsing */

static void t_parse_normalized(void **st)
{
    (void)st;
    json_t *form = parse_ok(ALL_TYPES);
    assert_string_equal(json_string_value(json_object_get(form, "title")), "Trip details");
    assert_string_equal(json_string_value(json_object_get(form, "description")), "For the booking");
    assert_int_equal(json_array_size(json_object_get(form, "fields")), 8);
    assert_json(field_of(form, 0), "{\"name\": \"full_name\", \"label\": \"Full name\", \"type\":"
                                   " \"text\", \"required\": true, \"placeholder\": \"Jane Doe\"}");
    assert_json(field_of(form, 2), "{\"name\": \"guests\", \"label\": \"Guests\", \"type\":"
                                   " \"number\", \"required\": false, \"default\": 2}");
    assert_json(
        field_of(form, 4),
        "{\"name\": \"room\", \"label\": \"Room\", \"type\": \"select\", \"required\": true,"
        " \"placeholder\": \"Pick one\", \"options\": [{\"value\": \"single\", \"label\":"
        " \"Single\"}, {\"value\": \"double\", \"label\": \"Double\"}], \"default\": "
        "\"double\"}");
    assert_json(json_object_get(field_of(form, 5), "default"), "[\"breakfast\"]");
    assert_json(field_of(form, 6), "{\"name\": \"agree\", \"label\": \"I agree\", \"type\":"
                                   " \"checkbox\", \"required\": true}");
    assert_json(json_object_get(field_of(form, 7), "default"), "\"2025-03-01\"");
    walk_nulls(form);
    json_decref(form);
    /* a minimal form: no description key at all */
    form = parse_ok("{\"title\": \"T\", \"fields\": [{\"name\": \"a\", \"label\": \"A\", \"type\":"
                    " \"text\"}], \"description\": \"  \"}");
    assert_null(json_object_get(form, "description"));
    assert_json(field_of(form, 0),
                "{\"name\": \"a\", \"label\": \"A\", \"type\": \"text\", \"required\": false}");
    json_decref(form);
}

static void t_parse_tolerant(void **st)
{
    (void)st;
    json_t *form = parse_ok(
        "{\"title\": \"  Prefs  \", \"fields\": ["
        "{\"name\": \"first_name\", \"type\": \"string\"},"
        "{\"name\": \"zipCode\", \"label\": \"\", \"type\": \"String\"},"
        "{\"name\": \"tags\", \"label\": \"Tags\", \"type\": \"multiselect\", \"options\": [\"a\","
        " \"b\"]},"
        "{\"name\": \"tags2\", \"label\": \"Tags\", \"type\": \"multi-select\", \"options\": "
        "[\"a\"]},"
        "{\"name\": \"tags3\", \"label\": \"Tags\", \"type\": \"Multi Select\", \"options\": "
        "[\"a\"]},"
        "{\"name\": \"ok\", \"label\": \"OK\", \"type\": \"boolean\", \"required\": \"true\"},"
        "{\"name\": \"n\", \"label\": \"N\", \"type\": \"integer\", \"default\": \"7\"},"
        "{\"name\": \"color\", \"label\": \"Color\", \"options\": [{\"value\": \"r\"}, {\"label\":"
        " \"Green\"}, 3]},"
        "{\"name\": \"free\", \"label\": \"Free\"},"
        "{\"name\": \"pick\", \"label\": \"Pick\", \"type\": \"dropdown\", \"options\": "
        "\"[\\\"x\\\"]\"},"
        "{\"name\": \"when\", \"label\": \"When\", \"type\": \"date\", \"default\": "
        "\"2025-02-03T10:00:00Z\"},"
        "{\"name\": \"cb\", \"label\": \"CB\", \"type\": \"checkbox\", \"default\": \"on\","
        " \"placeholder\": \"dropped\", \"options\": [\"dropped\"]}"
        "]}");
    assert_string_equal(json_string_value(json_object_get(form, "title")), "Prefs");
    assert_json(field_of(form, 0), "{\"name\": \"first_name\", \"label\": \"First name\","
                                   " \"type\": \"text\", \"required\": false}");
    assert_string_equal(json_string_value(json_object_get(field_of(form, 1), "label")), "Zip Code");
    assert_json(field_of(form, 2),
                "{\"name\": \"tags\", \"label\": \"Tags\", \"type\": \"multi_select\", "
                "\"required\": false, \"options\": [{\"value\": \"a\", \"label\": \"a\"}, "
                "{\"value\": \"b\", \"label\": \"b\"}]}");
    assert_string_equal(json_string_value(json_object_get(field_of(form, 3), "type")),
                        "multi_select");
    assert_string_equal(json_string_value(json_object_get(field_of(form, 4), "type")),
                        "multi_select");
    assert_json(field_of(form, 5), "{\"name\": \"ok\", \"label\": \"OK\", \"type\": \"checkbox\","
                                   " \"required\": true}");
    assert_json(field_of(form, 6), "{\"name\": \"n\", \"label\": \"N\", \"type\": \"number\","
                                   " \"required\": false, \"default\": 7}");
    assert_json(field_of(form, 7),
                "{\"name\": \"color\", \"label\": \"Color\", \"type\": \"select\", \"required\":"
                " false, \"options\": [{\"value\": \"r\", \"label\": \"r\"}, {\"value\": \"Green\","
                " \"label\": \"Green\"}, {\"value\": \"3\", \"label\": \"3\"}]}");
    assert_string_equal(json_string_value(json_object_get(field_of(form, 8), "type")), "text");
    assert_json(json_object_get(field_of(form, 9), "options"),
                "[{\"value\": \"x\", \"label\": \"x\"}]");
    assert_string_equal(json_string_value(json_object_get(field_of(form, 9), "type")), "select");
    assert_json(json_object_get(field_of(form, 10), "default"), "\"2025-02-03\"");
    assert_json(field_of(form, 11), "{\"name\": \"cb\", \"label\": \"CB\", \"type\": "
                                    "\"checkbox\", \"required\": false, \"default\": true}");
    json_decref(form);

    /* fields sent as a JSON string */
    form = parse_ok("{\"title\": \"T\", \"fields\": \"[{\\\"name\\\": \\\"a\\\", \\\"type\\\":"
                    " \\\"text\\\"}]\"}");
    assert_string_equal(json_string_value(json_object_get(field_of(form, 0), "label")), "A");
    json_decref(form);

    /* defaults that do not fit are dropped, the form stays */
    form = parse_ok(
        "{\"title\": \"T\", \"fields\": ["
        "{\"name\": \"a\", \"label\": \"A\", \"type\": \"number\", \"default\": \"many\"},"
        "{\"name\": \"b\", \"label\": \"B\", \"type\": \"select\", \"options\": [\"x\"],"
        " \"default\": \"y\"},"
        "{\"name\": \"c\", \"label\": \"C\", \"type\": \"email\", \"default\": \"nope\"},"
        "{\"name\": \"d\", \"label\": \"D\", \"type\": \"date\", \"default\": \"2025-02-30\"},"
        "{\"name\": \"e\", \"label\": \"E\", \"type\": \"checkbox\", \"default\": \"maybe\"},"
        "{\"name\": \"f\", \"label\": \"F\", \"type\": \"multi_select\", \"options\": [\"x\"],"
        " \"default\": [\"x\", \"z\"]},"
        "{\"name\": \"g\", \"label\": \"G\", \"type\": \"text\", \"default\": {\"k\": 1}},"
        "{\"name\": \"h\", \"label\": \"H\", \"type\": \"text\", \"default\": null}"
        "]}");
    for (size_t i = 0; i < 8; i++)
        assert_null(json_object_get(field_of(form, i), "default"));
    walk_nulls(form);
    json_decref(form);
}

static void t_parse_caps(void **st)
{
    (void)st;
    /* 250 two-byte characters: cut at 200 characters, never inside one */
    char title[600], desc[2100 * 1 + 1], args[8000];
    size_t j = 0;
    for (int i = 0; i < 250; i++) {
        title[j++] = (char)0xC3;
        title[j++] = (char)0xA9;
    }
    title[j] = 0;
    memset(desc, 'd', 2100);
    desc[2100] = 0;
    snprintf(args, sizeof args,
             "{\"title\": \"%s\", \"description\": \"%s\", \"fields\": [{\"name\": \"a\","
             " \"label\": \"%s\", \"placeholder\": \"%s\", \"type\": \"select\", \"options\":"
             " [{\"value\": \"v\", \"label\": \"%s\"}]}]}",
             title, desc, title, title, title);
    json_t *form = parse_ok(args);
    const json_t *t = json_object_get(form, "title");
    assert_int_equal(json_string_length(t), 400);
    assert_int_equal(json_string_length(json_object_get(form, "description")), 2000);
    const json_t *f = field_of(form, 0);
    assert_int_equal(json_string_length(json_object_get(f, "label")), 400);
    assert_int_equal(json_string_length(json_object_get(f, "placeholder")), 400);
    assert_int_equal(json_string_length(json_object_get(
                         json_array_get(json_object_get(f, "options"), 0), "label")),
                     400);
    json_decref(form);

    /* 30 fields and 50 options pass; 31 and 51 do not */
    json_t *a = js("{\"title\": \"T\", \"fields\": []}");
    json_t *opts = json_array();
    for (int i = 0; i < 50; i++) {
        char v[16];
        snprintf(v, sizeof v, "v%d", i);
        json_array_append_new(opts, json_string(v));
    }
    for (int i = 0; i < 30; i++) {
        char n[16];
        snprintf(n, sizeof n, "f%d", i);
        json_array_append_new(
            json_object_get(a, "fields"),
            json_pack("{s:s,s:s,s:O}", "name", n, "type", "select", "options", opts));
    }
    char err[300];
    form = human_form_parse(a, err, sizeof err);
    assert_non_null(form);
    json_decref(form);
    json_array_append_new(opts, json_string("v50"));
    form = human_form_parse(a, err, sizeof err);
    assert_null(form);
    assert_non_null(strstr(err, "field \"f0\""));
    assert_non_null(strstr(err, "50 options"));
    json_array_remove(opts, 50);
    json_array_append_new(json_object_get(a, "fields"),
                          json_pack("{s:s,s:s}", "name", "f30", "type", "text"));
    form = human_form_parse(a, err, sizeof err);
    assert_null(form);
    assert_non_null(strstr(err, "1 to 30 fields"));
    json_decref(opts);
    json_decref(a);
}

static void t_parse_errors(void **st)
{
    (void)st;
    parse_err("[1]", "JSON object");
    parse_err("{\"fields\": [{\"name\": \"a\", \"type\": \"text\"}]}", "title");
    parse_err("{\"title\": \" \", \"fields\": [{\"name\": \"a\", \"type\": \"text\"}]}", "title");
    parse_err("{\"title\": \"T\"}", "fields");
    parse_err("{\"title\": \"T\", \"fields\": []}", "1 to 30 fields");
    parse_err("{\"title\": \"T\", \"fields\": {\"name\": \"a\"}}", "1 to 30 fields");
    parse_err("{\"title\": \"T\", \"fields\": [\"a\"]}", "fields[0] must be an object");
    parse_err("{\"title\": \"T\", \"fields\": [{\"label\": \"A\", \"type\": \"text\"}]}",
              "fields[0]: name is required");
    parse_err("{\"title\": \"T\", \"fields\": [{\"name\": \"first name\", \"type\": \"text\"}]}",
              "field \"first name\": name must be");
    parse_err("{\"title\": \"T\", \"fields\": [{\"name\": \"a.b\", \"type\": \"text\"}]}",
              "field \"a.b\"");
    parse_err("{\"title\": \"T\", \"fields\": [{\"name\": "
              "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", \"type\": "
              "\"text\"}]}",
              "name must be");
    parse_err(
        "{\"title\": \"T\", \"fields\": [{\"name\": \"interaction_id\", \"type\": \"text\"}]}",
        "reserved");
    parse_err("{\"title\": \"T\", \"fields\": [{\"name\": \"a\", \"type\": \"text\"}, {\"name\":"
              " \"a\", \"type\": \"number\"}]}",
              "field \"a\": duplicate name");
    parse_err("{\"title\": \"T\", \"fields\": [{\"name\": \"a\", \"type\": \"slider\"}]}",
              "field \"a\": unknown type");
    parse_err("{\"title\": \"T\", \"fields\": [{\"name\": \"a\", \"type\": 3}]}",
              "field \"a\": unknown type");
    parse_err("{\"title\": \"T\", \"fields\": [{\"name\": \"a\", \"type\": \"select\"}]}",
              "field \"a\": a select or multi_select needs 1 to 50 options");
    parse_err("{\"title\": \"T\", \"fields\": [{\"name\": \"a\", \"type\": \"multi_select\","
              " \"options\": []}]}",
              "field \"a\": a select or multi_select needs");
    parse_err("{\"title\": \"T\", \"fields\": [{\"name\": \"a\", \"type\": \"select\", "
              "\"options\": [\"x\", {\"value\": \"x\", \"label\": \"Again\"}]}]}",
              "field \"a\": duplicate option value \"x\"");
    parse_err("{\"title\": \"T\", \"fields\": [{\"name\": \"a\", \"type\": \"select\", "
              "\"options\": [\"x\", true]}]}",
              "field \"a\": option 2 needs a value");
    parse_err("{\"title\": \"T\", \"fields\": [{\"name\": \"a\", \"type\": \"select\", "
              "\"options\": [{\"description\": \"d\"}]}]}",
              "field \"a\": option 1 needs a value");
    char longv[300], args[600];
    memset(longv, 'v', 201);
    longv[201] = 0;
    snprintf(args, sizeof args,
             "{\"title\": \"T\", \"fields\": [{\"name\": \"a\", \"type\": \"select\", "
             "\"options\": [\"%s\"]}]}",
             longv);
    parse_err(args, "field \"a\": option 1: value longer than 200");
    /* no room for the message: no crash */
    json_t *a = js("{}");
    assert_null(human_form_parse(a, NULL, 0));
    assert_null(human_form_parse(NULL, NULL, 0));
    json_decref(a);
}

/* ------------------------------------------------------------------------------------------
 * the form widget */

static void t_widget_shape(void **st)
{
    (void)st;
    json_t *form = parse_ok(ALL_TYPES);
    json_t *w = human_form_widget(form, "msg_123");
    assert_non_null(w);
    walk_nulls(w);
    struct walk wk = {json_array(), json_array(), 0, 0, 0, "msg_123"};
    walk(w, &wk);
    assert_int_equal(wk.forms, 1);
    assert_int_equal(wk.actions, 3); /* submit, best judgement, cancel */
    /* every field has its Label; every control name is a field or field.option */
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(form, "fields"), i, f)
    {
        const char *name = json_string_value(json_object_get(f, "name"));
        assert_true(has_string(wk.label_names, name));
        if (strcmp(json_string_value(json_object_get(f, "type")), "multi_select"))
            assert_true(has_string(wk.names, name));
    }
    assert_int_equal(json_array_size(wk.label_names), 8);
    assert_json(wk.names, "[\"full_name\", \"notes\", \"guests\", \"email\", \"room\","
                          " \"extras.breakfast\", \"extras.late-checkout\", "
                          "\"extras.parking_spot\", \"agree\", \"arrival\"]");
    json_decref(wk.names);
    json_decref(wk.label_names);

    /* the skeleton */
    assert_string_equal(json_string_value(json_object_get(w, "type")), "Card");
    assert_string_equal(json_string_value(json_object_get(w, "size")), "md");
    json_t *fm = json_array_get(json_object_get(w, "children"), 0);
    assert_int_equal(json_array_size(json_object_get(w, "children")), 1);
    assert_string_equal(json_string_value(json_object_get(fm, "type")), "Form");
    assert_string_equal(json_string_value(json_object_get(fm, "direction")), "col");
    assert_int_equal(json_integer_value(json_object_get(fm, "gap")), 3);
    assert_json(json_object_get(fm, "onSubmitAction"),
                "{\"type\": \"human.form_submit\", \"payload\": {\"interaction_id\": "
                "\"msg_123\"}, \"handler\": \"server\", \"loadingBehavior\": \"auto\", "
                "\"streaming\": true}");
    json_t *kids = json_object_get(fm, "children");
    assert_int_equal(json_array_size(kids), 1 + 1 + 8 + 1);
    assert_json(json_array_get(kids, 0), "{\"type\": \"Title\", \"value\": \"Trip details\"}");
    assert_json(json_array_get(kids, 1),
                "{\"type\": \"Text\", \"value\": \"For the booking\", \"color\": \"secondary\"}");
    assert_json(json_array_get(kids, 2),
                "{\"type\": \"Col\", \"gap\": 1, \"children\": [{\"type\": \"Label\", \"value\":"
                " \"Full name *\", \"fieldName\": \"full_name\"}, {\"type\": \"Input\", \"name\":"
                " \"full_name\", \"inputType\": \"text\", \"placeholder\": \"Jane Doe\", "
                "\"required\": true}]}");
    assert_json(json_array_get(kids, 10),
                "{\"type\": \"Row\", \"gap\": 2, \"children\": ["
                "{\"type\": \"Button\", \"label\": \"Submit\", \"submit\": true, \"style\": "
                "\"primary\"},"
                "{\"type\": \"Button\", \"label\": \"Use your best judgement\", \"style\": "
                "\"secondary\", \"onClickAction\": {\"type\": \"human.best_judgement\", "
                "\"payload\": {\"interaction_id\": \"msg_123\"}, \"handler\": \"server\", "
                "\"loadingBehavior\": \"auto\", \"streaming\": true}},"
                "{\"type\": \"Button\", \"label\": \"Cancel\", \"style\": \"secondary\", "
                "\"variant\": \"outline\", \"onClickAction\": {\"type\": \"human.cancel\", "
                "\"payload\": {\"interaction_id\": \"msg_123\"}, \"handler\": \"server\", "
                "\"loadingBehavior\": \"auto\", \"streaming\": true}}]}");
    json_decref(w);

    /* no description: no Text */
    json_object_del(form, "description");
    w = human_form_widget(form, "i");
    kids = json_object_get(json_array_get(json_object_get(w, "children"), 0), "children");
    assert_int_equal(json_array_size(kids), 1 + 8 + 1);
    assert_null(find(w, "Text", NULL, NULL));
    json_decref(w);
    assert_null(human_form_widget(form, NULL));
    assert_null(human_form_widget(NULL, "i"));
    json_decref(form);
}

static void t_widget_controls(void **st)
{
    (void)st;
    json_t *form = parse_ok(ALL_TYPES);
    json_t *w = human_form_widget(form, "i1");
    assert_json(find(w, "Textarea", NULL, NULL),
                "{\"type\": \"Textarea\", \"name\": \"notes\", \"rows\": 3, \"defaultValue\": "
                "\"none\"}");
    assert_json(find(w, "Input", "name", "guests"),
                "{\"type\": \"Input\", \"name\": \"guests\", \"inputType\": \"number\", "
                "\"defaultValue\": \"2\"}");
    assert_json(find(w, "Input", "name", "email"),
                "{\"type\": \"Input\", \"name\": \"email\", \"inputType\": \"email\", "
                "\"required\": true}");
    assert_json(find(w, "Select", NULL, NULL),
                "{\"type\": \"Select\", \"name\": \"room\", \"options\": [{\"value\": \"single\","
                " \"label\": \"Single\"}, {\"value\": \"double\", \"label\": \"Double\"}], "
                "\"block\": true, \"placeholder\": \"Pick one\", \"defaultValue\": \"double\"}");
    assert_json(find(w, "Label", "fieldName", "room"),
                "{\"type\": \"Label\", \"value\": \"Room *\", \"fieldName\": \"room\"}");
    assert_json(find(w, "Checkbox", "name", "extras.breakfast"),
                "{\"type\": \"Checkbox\", \"name\": \"extras.breakfast\", \"label\": "
                "\"Breakfast\", \"defaultChecked\": true}");
    assert_json(find(w, "Checkbox", "name", "extras.parking_spot"),
                "{\"type\": \"Checkbox\", \"name\": \"extras.parking_spot\", \"label\": "
                "\"Parking\"}");
    assert_json(find(w, "Checkbox", "name", "agree"),
                "{\"type\": \"Checkbox\", \"name\": \"agree\", \"label\": \"I agree\", "
                "\"required\": true}");
    assert_json(find(w, "DatePicker", NULL, NULL),
                "{\"type\": \"DatePicker\", \"name\": \"arrival\", \"block\": true, "
                "\"defaultValue\": \"2025-03-01T00:00:00\"}");
    assert_json(find(w, "Label", "fieldName", "arrival"),
                "{\"type\": \"Label\", \"value\": \"Arrival\", \"fieldName\": \"arrival\"}");
    /* the multi_select's checkboxes sit in their own Col under the field's Col */
    json_t *kids = json_object_get(json_array_get(json_object_get(w, "children"), 0), "children");
    json_t *multi = json_array_get(json_object_get(json_array_get(kids, 7), "children"), 1);
    assert_string_equal(json_string_value(json_object_get(multi, "type")), "Col");
    assert_int_equal(json_array_size(json_object_get(multi, "children")), 3);
    json_decref(w);
    json_decref(form);

    /* a checkbox default false is written as such */
    form = parse_ok("{\"title\": \"T\", \"fields\": [{\"name\": \"c\", \"label\": \"C\", \"type\":"
                    " \"checkbox\", \"default\": false}, {\"name\": \"n\", \"label\": \"N\","
                    " \"type\": \"number\", \"default\": 2.5}]}");
    w = human_form_widget(form, "i2");
    assert_json(find(w, "Checkbox", NULL, NULL),
                "{\"type\": \"Checkbox\", \"name\": \"c\", \"label\": \"C\", "
                "\"defaultChecked\": false}");
    assert_string_equal(
        json_string_value(json_object_get(find(w, "Input", NULL, NULL), "defaultValue")), "2.5");
    json_decref(w);
    json_decref(form);
}

/* ------------------------------------------------------------------------------------------
 * multi_select both ways */

static void t_multi_mapping(void **st)
{
    (void)st;
    /* safe values: the checkboxes are named by value */
    json_t *form = parse_ok(
        "{\"title\": \"T\", \"fields\": [{\"name\": \"c\", \"label\": \"Colors\", \"type\":"
        " \"multi_select\", \"options\": [\"red\", \"dark-blue\", \"green_1\"]}]}");
    json_t *w = human_form_widget(form, "i");
    assert_non_null(find(w, "Checkbox", "name", "c.red"));
    assert_non_null(find(w, "Checkbox", "name", "c.dark-blue"));
    assert_non_null(find(w, "Checkbox", "name", "c.green_1"));
    json_decref(w);
    json_t *a = answers_ok(form, "{\"interaction_id\": \"i\", \"c\": {\"red\": true, "
                                 "\"dark-blue\": false, \"green_1\": true}}");
    assert_json(a, "{\"c\": [\"red\", \"green_1\"]}");
    json_decref(a);
    /* a list, a single value, flat dotted keys, "on" strings; duplicates fold */
    a = answers_ok(form, "{\"c\": [\"green_1\", \"red\", \"red\"]}");
    assert_json(a, "{\"c\": [\"red\", \"green_1\"]}");
    json_decref(a);
    a = answers_ok(form, "{\"c\": \"dark-blue\"}");
    assert_json(a, "{\"c\": [\"dark-blue\"]}");
    json_decref(a);
    a = answers_ok(form, "{\"c.red\": true, \"c.green_1\": \"on\", \"c.dark-blue\": false}");
    assert_json(a, "{\"c\": [\"red\", \"green_1\"]}");
    json_decref(a);
    a = answers_ok(form, "{\"c\": {\"red\": \"on\", \"green_1\": \"false\"}}");
    assert_json(a, "{\"c\": [\"red\"]}");
    json_decref(a);
    /* nothing chosen, optional: no answer */
    a = answers_ok(form, "{\"c\": {\"red\": false}}");
    assert_json(a, "{}");
    json_decref(a);
    answers_bad(form, "{\"c\": {\"blue\": true}}", "- Colors: \"blue\" is not one of the options");
    answers_bad(form, "{\"c\": [\"red\", \"blue\"]}",
                "- Colors: \"blue\" is not one of the options");
    answers_bad(form, "{\"c\": [1]}", "- Colors: must be a list of options");
    answers_bad(form, "{\"c\": 5}", "- Colors: must be a list of options");
    answers_bad(form, "{\"c\": {\"red\": [1]}}", "- Colors: unexpected value for option \"red\"");
    a = answers_ok(form, "{\"c\": {\"blue\": false}}"); /* unknown but unchecked: ignored */
    assert_json(a, "{}");
    json_decref(a);
    json_decref(form);

    /* one unsafe value: every option is keyed o<index>, and mapped back */
    form = parse_ok(
        "{\"title\": \"T\", \"fields\": [{\"name\": \"s\", \"label\": \"Sizes\", \"type\":"
        " \"multi_select\", \"required\": true, \"options\": [{\"value\": \"o1\", \"label\": "
        "\"Tiny\"}, {\"value\": \"extra large\", \"label\": \"XL\"}, {\"value\": \"m.d\", "
        "\"label\": \"Medium\"}], \"default\": [\"extra large\"]}]}");
    w = human_form_widget(form, "i");
    walk_nulls(w);
    struct walk wk = {json_array(), json_array(), 0, 0, 0, "i"};
    walk(w, &wk);
    assert_json(wk.names, "[\"s.o0\", \"s.o1\", \"s.o2\"]");
    json_decref(wk.names);
    json_decref(wk.label_names);
    assert_json(find(w, "Checkbox", "name", "s.o1"),
                "{\"type\": \"Checkbox\", \"name\": \"s.o1\", \"label\": \"XL\", "
                "\"defaultChecked\": true}");
    assert_json(find(w, "Label", NULL, NULL),
                "{\"type\": \"Label\", \"value\": \"Sizes *\", \"fieldName\": \"s\"}");
    json_decref(w);
    /* "o1" is the key of "extra large", not the value "o1" */
    a = answers_ok(form, "{\"s\": {\"o1\": true, \"o2\": true, \"o0\": false}}");
    assert_json(a, "{\"s\": [\"extra large\", \"m.d\"]}");
    json_decref(a);
    a = answers_ok(form, "{\"s.o0\": true}");
    assert_json(a, "{\"s\": [\"o1\"]}");
    json_decref(a);
    a = answers_ok(form, "{\"s\": [\"m.d\", \"o1\"]}"); /* a list carries values */
    assert_json(a, "{\"s\": [\"o1\", \"m.d\"]}");
    json_decref(a);
    answers_bad(form, "{\"s\": {\"o0\": false, \"o1\": false}}", "- Sizes: is required");
    answers_bad(form, "{}", "- Sizes: is required");
    answers_bad(form, "{\"s\": {\"o3\": true}}", "- Sizes: \"o3\" is not one of the options");
    json_decref(form);
}

/* ------------------------------------------------------------------------------------------
 * answers */

static const char RULES[] =
    "{\"title\": \"T\", \"fields\": ["
    "{\"name\": \"t\", \"label\": \"Text\", \"type\": \"text\"},"
    "{\"name\": \"ta\", \"label\": \"Area\", \"type\": \"textarea\"},"
    "{\"name\": \"n\", \"label\": \"Num\", \"type\": \"number\"},"
    "{\"name\": \"e\", \"label\": \"Mail\", \"type\": \"email\"},"
    "{\"name\": \"s\", \"label\": \"Sel\", \"type\": \"select\", \"options\": [\"a\", \"b c\"]},"
    "{\"name\": \"c\", \"label\": \"Check\", \"type\": \"checkbox\"},"
    "{\"name\": \"d\", \"label\": \"Day\", \"type\": \"date\"}]}";

static void bad1(const json_t *form, const char *payload, const char *problem)
{
    answers_bad(form, payload, problem);
}

static void t_answers_valid(void **st)
{
    (void)st;
    json_t *form = parse_ok(RULES);
    json_t *a = answers_ok(form, "{\"interaction_id\": \"x\", \"unknown\": 1, \"t\": \"hello\","
                                 " \"ta\": \"line1\\nline2\", \"n\": \"42\", \"e\": "
                                 "\" a.b@example.com \", \"s\": \"b c\", \"c\": \"on\", \"d\": "
                                 "\"2024-02-29\"}");
    assert_json(a, "{\"t\": \"hello\", \"ta\": \"line1\\nline2\", \"n\": 42, \"e\": "
                   "\"a.b@example.com\", \"s\": \"b c\", \"c\": true, \"d\": \"2024-02-29\"}");
    json_decref(a);
    /* numbers: JSON numbers kept, numeric strings become numbers */
    a = answers_ok(form, "{\"n\": 3.25}");
    assert_json(a, "{\"n\": 3.25, \"c\": false}");
    json_decref(a);
    a = answers_ok(form, "{\"n\": \" -1.5e3 \"}");
    assert_json(a, "{\"n\": -1500.0, \"c\": false}");
    json_decref(a);
    a = answers_ok(form, "{\"n\": \"-17\"}");
    assert_json(a, "{\"n\": -17, \"c\": false}");
    json_decref(a);
    a = answers_ok(form, "{\"n\": \"99999999999999999999\"}"); /* too big for an integer */
    assert_true(json_is_real(json_object_get(a, "n")));
    json_decref(a);
    /* checkbox spellings */
    const char *yes[] = {"true", "\"true\"", "\"on\"", "\"1\"", "1"};
    const char *no[] = {"false", "\"false\"", "\"0\"", "0", "\"off\""};
    for (size_t i = 0; i < 5; i++) {
        char p[64];
        snprintf(p, sizeof p, "{\"c\": %s}", yes[i]);
        a = answers_ok(form, p);
        assert_json(a, "{\"c\": true}");
        json_decref(a);
        snprintf(p, sizeof p, "{\"c\": %s}", no[i]);
        a = answers_ok(form, p);
        assert_json(a, "{\"c\": false}");
        json_decref(a);
    }
    /* dates: a date-time keeps its date; leap years */
    a = answers_ok(form, "{\"d\": \"2025-12-31T23:59:59.000Z\"}");
    assert_json(a, "{\"d\": \"2025-12-31\", \"c\": false}");
    json_decref(a);
    a = answers_ok(form, "{\"d\": \"2000-02-29\"}");
    json_decref(a);
    /* blanks and nulls of optional fields are no answer; a number in a text field is text */
    a = answers_ok(form, "{\"t\": \"   \", \"ta\": \"\", \"n\": \"\", \"e\": \"\", \"s\": \"\","
                         " \"d\": \"\", \"c\": null}");
    assert_json(a, "{\"c\": false}");
    json_decref(a);
    a = answers_ok(form, "{\"t\": 12}");
    assert_json(a, "{\"t\": \"12\", \"c\": false}");
    json_decref(a);
    /* limits are inclusive */
    json_t *p = json_object();
    char *big = malloc(10001);
    memset(big, 'x', 10000);
    big[10000] = 0;
    json_object_set_new(p, "ta", json_string(big));
    big[1000] = 0;
    json_object_set_new(p, "t", json_string(big));
    char *problems = NULL;
    a = human_answers(form, p, &problems);
    assert_non_null(a);
    assert_null(problems);
    json_decref(a);
    json_decref(p);
    /* 1000 two-byte characters are 1000 characters */
    p = json_object();
    for (int i = 0; i < 1000; i++) {
        big[2 * i] = (char)0xC3;
        big[2 * i + 1] = (char)0xA9;
    }
    big[2000] = 0;
    json_object_set_new(p, "t", json_string(big));
    a = human_answers(form, p, &problems);
    assert_non_null(a);
    json_decref(a);
    json_decref(p);
    free(big);
    /* an empty / missing payload: all optional */
    a = answers_ok(form, "{}");
    assert_json(a, "{\"c\": false}");
    json_decref(a);
    a = human_answers(form, NULL, &problems);
    assert_json(a, "{\"c\": false}");
    json_decref(a);
    json_decref(form);
}

static void t_answers_invalid(void **st)
{
    (void)st;
    json_t *form = parse_ok(RULES);
    char *big = malloc(10002);
    memset(big, 'x', 10001);
    big[10001] = 0;
    json_t *p = json_pack("{s:s}", "ta", big);
    char *problems = NULL;
    assert_null(human_answers(form, p, &problems));
    assert_string_equal(problems, "- Area: must be at most 10000 characters");
    free(problems);
    json_decref(p);
    big[1001] = 0;
    p = json_pack("{s:s}", "t", big);
    assert_null(human_answers(form, p, &problems));
    assert_string_equal(problems, "- Text: must be at most 1000 characters");
    free(problems);
    json_decref(p);
    free(big);
    bad1(form, "{\"t\": true}", "- Text: must be text");
    bad1(form, "{\"t\": [\"a\"]}", "- Text: must be text");
    bad1(form, "{\"n\": \"12abc\"}", "- Num: must be a number");
    bad1(form, "{\"n\": \"0x10\"}", "- Num: must be a number");
    bad1(form, "{\"n\": \"inf\"}", "- Num: must be a number");
    bad1(form, "{\"n\": \"nan\"}", "- Num: must be a number");
    bad1(form, "{\"n\": \"1e999\"}", "- Num: must be a number");
    bad1(form, "{\"n\": \"-\"}", "- Num: must be a number");
    bad1(form, "{\"n\": \"1 2\"}", "- Num: must be a number");
    bad1(form, "{\"n\": true}", "- Num: must be a number");
    const char *mails[] = {"plain",     "a@b",    "a@@b.com", "a@b@c.com", "@b.com",
                           "a b@c.com", "a@.com", "a@b.com.", "a@b..com"};
    for (size_t i = 0; i < sizeof mails / sizeof *mails; i++) {
        char pl[80];
        snprintf(pl, sizeof pl, "{\"e\": \"%s\"}", mails[i]);
        bad1(form, pl, "- Mail: must be a valid email address");
    }
    char mail[300];
    memset(mail, 'a', 250);
    memcpy(mail + 245, "@b.com", 7); /* 251 characters: fine */
    p = json_pack("{s:s}", "e", mail);
    json_t *a = human_answers(form, p, &problems);
    assert_non_null(a);
    json_decref(a);
    json_decref(p);
    memset(mail, 'a', 250);
    memcpy(mail + 249, "@b.com", 7); /* 255 characters */
    p = json_pack("{s:s}", "e", mail);
    assert_null(human_answers(form, p, &problems));
    assert_string_equal(problems, "- Mail: must be a valid email address");
    free(problems);
    json_decref(p);
    bad1(form, "{\"e\": 5}", "- Mail: must be an email address");
    bad1(form, "{\"s\": \"c\"}", "- Sel: must be one of the options");
    bad1(form, "{\"s\": \"A\"}", "- Sel: must be one of the options");
    bad1(form, "{\"s\": [\"a\"]}", "- Sel: must be one of the options");
    bad1(form, "{\"c\": \"maybe\"}", "- Check: must be checked or unchecked");
    bad1(form, "{\"c\": 2}", "- Check: must be checked or unchecked");
    const char *days[] = {"2025-02-29",  "2025-13-01", "2025-00-10", "2025-04-31",
                          "2025-01-00",  "1900-02-29", "25-01-01",   "2025/01/01",
                          "2025-01-01x", "tomorrow",   "0000-01-01"};
    for (size_t i = 0; i < sizeof days / sizeof *days; i++) {
        char pl[80];
        snprintf(pl, sizeof pl, "{\"d\": \"%s\"}", days[i]);
        bad1(form, pl, "- Day: must be a date (YYYY-MM-DD)");
    }
    bad1(form, "{\"d\": 20250101}", "- Day: must be a date (YYYY-MM-DD)");
    /* several problems: one line each, in field order */
    bad1(form, "{\"d\": \"x\", \"t\": false, \"n\": \"y\"}",
         "- Text: must be text\n- Num: must be a number\n- Day: must be a date (YYYY-MM-DD)");
    json_decref(form);

    /* required fields */
    form =
        parse_ok("{\"title\": \"T\", \"fields\": ["
                 "{\"name\": \"t\", \"label\": \"Name\", \"type\": \"text\", \"required\": true},"
                 "{\"name\": \"c\", \"label\": \"Agree\", \"type\": \"checkbox\", \"required\":"
                 " true},"
                 "{\"name\": \"s\", \"label\": \"Size\", \"type\": \"select\", \"required\":"
                 " true, \"options\": [\"s\", \"m\"]}]}");
    bad1(form, "{}", "- Name: is required\n- Agree: must be checked\n- Size: is required");
    bad1(form, "{\"t\": \"  \", \"c\": false, \"s\": \"\"}",
         "- Name: is required\n- Agree: must be checked\n- Size: is required");
    bad1(form, "{\"t\": \"Al\", \"c\": \"0\", \"s\": \"m\"}", "- Agree: must be checked");
    a = answers_ok(form, "{\"t\": \"Al\", \"c\": true, \"s\": \"m\"}");
    assert_json(a, "{\"t\": \"Al\", \"c\": true, \"s\": \"m\"}");
    json_decref(a);
    /* problems may be NULL */
    p = js("{}");
    assert_null(human_answers(form, p, NULL));
    json_decref(p);
    json_decref(form);
}

/* ------------------------------------------------------------------------------------------
 * result text and summary */

static void t_result_text(void **st)
{
    (void)st;
    json_t *form = parse_ok(ALL_TYPES);
    json_t *a = answers_ok(form, "{\"interaction_id\": \"i\", \"full_name\": \"Ann Lee\", "
                                 "\"guests\": \"3\", \"email\": \"ann@x.org\", \"room\": "
                                 "\"single\", \"extras\": {\"breakfast\": true, "
                                 "\"late-checkout\": true}, \"agree\": true, \"arrival\": "
                                 "\"2025-05-06\"}");
    char *t = human_result_text(form, a, "submit");
    assert_string_equal(t, "Full name: Ann Lee\n"
                           "Notes: (no answer)\n"
                           "Guests: 3\n"
                           "Email: ann@x.org\n"
                           "Room: single\n"
                           "Extras: breakfast, late-checkout\n"
                           "I agree: yes\n"
                           "Arrival: 2025-05-06");
    free(t);
    json_decref(a);
    json_t *f2 = parse_ok("{\"title\": \"T\", \"fields\": [{\"name\": \"c\", \"label\": \"Sub\","
                          " \"type\": \"checkbox\"}, {\"name\": \"n\", \"label\": \"N\", \"type\":"
                          " \"number\"}]}");
    a = answers_ok(f2, "{\"n\": 2.5}");
    t = human_result_text(f2, a, "submit");
    assert_string_equal(t, "Sub: no\nN: 2.5");
    free(t);
    json_decref(a);
    json_decref(f2);
    t = human_result_text(form, NULL, "best_judgement");
    assert_string_equal(t, "User requested: use your best judgement");
    free(t);
    t = human_result_text(form, NULL, "cancel");
    assert_string_equal(t, "User cancelled the interaction");
    free(t);
    json_decref(form);
}

static void no_inputs(const json_t *w)
{
    struct walk wk = {json_array(), json_array(), 0, 0, 0, ""};
    walk_nulls(w);
    walk(w, &wk);
    assert_int_equal(wk.actions, 0);
    assert_int_equal(wk.forms, 0);
    assert_int_equal(wk.inputs, 0);
    assert_int_equal(json_array_size(wk.label_names), 0);
    assert_null(find(w, "Button", NULL, NULL));
    json_decref(wk.names);
    json_decref(wk.label_names);
    assert_string_equal(json_string_value(json_object_get(w, "type")), "Card");
    assert_string_equal(json_string_value(json_object_get(w, "size")), "md");
}

static void t_summary(void **st)
{
    (void)st;
    json_t *form = parse_ok(ALL_TYPES);
    json_t *a = answers_ok(form, "{\"full_name\": \"Ann\", \"email\": \"a@b.co\", \"room\": "
                                 "\"double\", \"extras\": [\"breakfast\", \"parking_spot\"], "
                                 "\"agree\": true}");
    json_t *w = human_summary_widget(form, a, "submit");
    no_inputs(w);
    json_t *kids = json_object_get(w, "children");
    assert_int_equal(json_array_size(kids), 1 + 8 + 1);
    assert_json(json_array_get(kids, 0), "{\"type\": \"Title\", \"value\": \"Trip details\"}");
    assert_json(json_array_get(kids, 1),
                "{\"type\": \"Row\", \"gap\": 2, \"children\": [{\"type\": \"Text\", \"value\":"
                " \"Full name\", \"weight\": \"semibold\"}, {\"type\": \"Text\", \"value\": "
                "\"Ann\"}]}");
    assert_json(json_array_get(kids, 2),
                "{\"type\": \"Row\", \"gap\": 2, \"children\": [{\"type\": \"Text\", \"value\":"
                " \"Notes\", \"weight\": \"semibold\"}, {\"type\": \"Text\", \"value\": "
                "\"(no answer)\"}]}");
    assert_string_equal(
        json_string_value(json_object_get(
            json_array_get(json_object_get(json_array_get(kids, 6), "children"), 1), "value")),
        "breakfast, parking_spot");
    assert_json(json_array_get(kids, 9),
                "{\"type\": \"Caption\", \"value\": \"Submitted\", \"color\": \"secondary\"}");
    json_decref(w);
    json_decref(a);

    w = human_summary_widget(form, NULL, "best_judgement");
    no_inputs(w);
    assert_json(w, "{\"type\": \"Card\", \"size\": \"md\", \"children\": ["
                   "{\"type\": \"Title\", \"value\": \"Trip details\"},"
                   "{\"type\": \"Text\", \"value\": \"Left to the assistant's judgement\"},"
                   "{\"type\": \"Caption\", \"value\": \"Best judgement\", \"color\": "
                   "\"secondary\"}]}");
    json_decref(w);
    w = human_summary_widget(form, NULL, "cancel");
    no_inputs(w);
    assert_json(w, "{\"type\": \"Card\", \"size\": \"md\", \"children\": ["
                   "{\"type\": \"Title\", \"value\": \"Trip details\"},"
                   "{\"type\": \"Text\", \"value\": \"Cancelled\"},"
                   "{\"type\": \"Caption\", \"value\": \"Cancelled\", \"color\": \"secondary\"}]}");
    json_decref(w);
    json_decref(form);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_tool_def),        cmocka_unit_test(t_parse_normalized),
        cmocka_unit_test(t_parse_tolerant),  cmocka_unit_test(t_parse_caps),
        cmocka_unit_test(t_parse_errors),    cmocka_unit_test(t_widget_shape),
        cmocka_unit_test(t_widget_controls), cmocka_unit_test(t_multi_mapping),
        cmocka_unit_test(t_answers_valid),   cmocka_unit_test(t_answers_invalid),
        cmocka_unit_test(t_result_text),     cmocka_unit_test(t_summary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
