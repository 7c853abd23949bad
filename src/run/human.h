/* Human-in-the-loop forms (issue 5; the seed's human-interaction.md): the built-in tool
 * request_human_input, the form widget it streams, the validation of what the user submits,
 * and the read-only summary that replaces the form. Pure functions on JSON: no I/O.
 *
 * A form (normalized): {"title": str, "description"?: str, "fields": [{"name", "label",
 * "type": "text"|"textarea"|"number"|"email"|"select"|"multi_select"|"checkbox"|"date",
 * "required": bool, "placeholder"?: str, "default"?: any, "options"?: [{"value","label"}]}]}.
 * Field names are [A-Za-z0-9_]{1,64}, unique, never "interaction_id" (the payload carries it). */
#ifndef CK_HUMAN_H
#define CK_HUMAN_H
#include <jansson.h>
#include <stddef.h>

#define HUMAN_TOOL "request_human_input"
#define HUMAN_PENDING_TEXT "Please submit the form above before sending more messages."

/* The tool's definition for the model: {"name","description","parameters": JSON schema}. */
json_t *human_tool_def(void);
/* The model's arguments (JSON object) as a normalized form, or NULL with a message for the
 * model in err (what is wrong, so it can call again). Limits: 30 fields, 50 options a field,
 * title 200 / label 200 / placeholder 200 / description 2000 characters. */
json_t *human_form_parse(const json_t *args, char *err, size_t errlen);
/* The form widget (a Card holding a Form whose onSubmitAction is human.form_submit, the fields
 * as Input / Textarea / Select / Checkbox / DatePicker, and three buttons: submit,
 * human.best_judgement, human.cancel); every action's payload carries interaction_id. */
json_t *human_form_widget(const json_t *form, const char *interaction_id);
/* A human.form_submit payload (ChatKit merges the form's values into it: keys are the field
 * names; a multi_select's checkboxes arrive as {name: {option: bool}}) checked against the form:
 * the answers {name: value} (strings, numbers, booleans, arrays of strings for multi_select),
 * or NULL and *problems (malloc'd, one "- Label: what is wrong" line per problem). */
json_t *human_answers(const json_t *form, const json_t *payload, char **problems);
/* The tool result the model gets: "label: value" lines (the seed's format_answers); kind
 * "best_judgement" -> "User requested: use your best judgement", "cancel" -> "User cancelled
 * the interaction". malloc'd. */
char *human_result_text(const json_t *form, const json_t *answers, const char *kind);
/* The read-only widget replacing the form: the title, each label with its answer (kind
 * "submit"), or a note (kind "best_judgement" / "cancel"); no inputs, no actions. */
json_t *human_summary_widget(const json_t *form, const json_t *answers, const char *kind);

/* The protocol's own rendering (reference §7, §11.10), for agents that choose it: the form's
 * fields as structured_input questions (select -> multiple_choice, multi_select ->
 * multiple_choice with multiple, text/textarea -> freeform), or NULL when a field has another
 * type (the form widget is used then). Question ids are the field names. */
json_t *human_structured_inputs(const json_t *form);
/* The tool result from an answered structured_input's inputs: "Label: values" lines, "(no
 * answer)" for a skipped question. malloc'd. */
char *human_structured_text(const json_t *form, const json_t *inputs);

/* MCP elicitation (reference §2.8): a form for a server's requestedSchema (a flat object:
 * string (format email/date/date-time), number/integer, boolean, enum / oneOf const+title /
 * legacy enumNames, arrays of enum / anyOf as multi_select; required; defaults), titled with
 * the server's message. NULL with err when the schema cannot be shown as a form. */
json_t *human_form_from_schema(const char *message, const json_t *schema, char *err,
                               size_t errlen);
/* The elicitation's accept content from the form's answers: property names as the schema has
 * them, integers as integers. */
json_t *human_elicit_content(const json_t *schema, const json_t *answers);

#endif
