"""Validators for every JSON shape chatkitd sends (reference/chatkit-protocol.md §2-§9).

Every validator raises AssertionError with a path ("event.item.content[0].text") when a
value is wrong. They check required keys, no unknown keys, types, enum values, omitted
nulls (no key anywhere whose value is null), written defaults and timestamp/id formats.
"""

import json
import re

TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
# Server-generated ids: prefix + at least 96 random bits (24 hex digits).
ID_RE = re.compile(r"^[a-z]+_[0-9a-f]{24,}$")
PREFIXED = {
    "thread": "thr_",
    "message": "msg_",
    "tool_call": "tc_",
    "attachment": "atc_",
}

ICONS = set(
    """agent analytics atom batch bolt book-open book-closed book-clock bug calendar chart
    check check-circle check-circle-filled chevron-left chevron-right circle-question clock
    compass confetti cube desktop document dot dots-horizontal dots-vertical empty-circle
    external-link globe keys lab images info lifesaver lightbulb mail map-pin maps mobile name
    notebook notebook-pencil page-blank phone play plus profile profile-card reload star
    star-filled search sparkle sparkle-double square-code square-image square-text suitcase
    settings-slider user wreath write write-alt write-alt2""".split()
)

HIDDEN_ITEM_TYPES = {"hidden_context_item", "sdk_hidden_context"}


class Missing:
    pass


def fail(path, msg):
    raise AssertionError(f"{path}: {msg}")


def expect(cond, path, msg):
    if not cond:
        fail(path, msg)


# ------------------------------------------------------------------------------------------
# primitives


def no_nulls(value, path="$"):
    """No key anywhere whose value is null (the SDK omits nulls, §2.1)."""
    if isinstance(value, dict):
        for k, v in value.items():
            expect(v is not None, f"{path}.{k}", "null value (nulls must be omitted)")
            no_nulls(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            no_nulls(v, f"{path}[{i}]")


def is_str(v):
    return isinstance(v, str)


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_bool(v):
    return isinstance(v, bool)


def keys(obj, path, required, optional=()):
    expect(isinstance(obj, dict), path, f"expected an object, got {type(obj).__name__}: {obj!r:.200}")
    for k in required:
        expect(k in obj, path, f"missing required key {k!r} in {sorted(obj)}")
    extra = set(obj) - set(required) - set(optional)
    expect(not extra, path, f"unexpected keys {sorted(extra)}")


def string(obj, key, path, allow_empty=True):
    v = obj[key]
    expect(is_str(v), f"{path}.{key}", f"expected a string, got {v!r:.100}")
    if not allow_empty:
        expect(v != "", f"{path}.{key}", "empty string")
    return v


def enum(obj, key, path, values):
    v = obj[key]
    expect(v in values, f"{path}.{key}", f"{v!r} not one of {sorted(values)}")
    return v


def timestamp(v, path):
    expect(is_str(v) and TS_RE.match(v), path,
           f"timestamp {v!r} is not UTC ISO-8601 with 6 fraction digits and Z")


def server_id(v, path, kind=None):
    expect(is_str(v), path, f"id must be a string, got {v!r}")
    expect(ID_RE.match(v), path, f"id {v!r} is not <prefix>_<>=24 hex>")
    if kind:
        expect(v.startswith(PREFIXED[kind]), path, f"id {v!r} must start with {PREFIXED[kind]}")


def icon(v, path):
    expect(is_str(v) and (v in ICONS or v.startswith("vendor:") or v.startswith("lucide:")),
           path, f"unknown icon {v!r}")


def json_object(v, path):
    expect(isinstance(v, dict), path, f"expected an object, got {v!r:.100}")


# ------------------------------------------------------------------------------------------
# attachments (§9)


def attachment(a, path="attachment", in_message=False):
    json_object(a, path)
    typ = a.get("type")
    expect(typ in ("file", "image"), f"{path}.type", f"bad attachment type {typ!r}")
    req = ["id", "name", "mime_type", "type"] + (["preview_url"] if typ == "image" else [])
    keys(a, path, req, ["upload_descriptor", "thread_id"])
    expect("metadata" not in a, path, "attachment metadata must never be sent")
    server_id(a["id"], f"{path}.id", "attachment")
    string(a, "name", path)
    string(a, "mime_type", path, allow_empty=False)
    if typ == "image":
        string(a, "preview_url", path, allow_empty=False)
    if "upload_descriptor" in a:
        d = a["upload_descriptor"]
        p = f"{path}.upload_descriptor"
        keys(d, p, ["url", "method", "headers"])
        string(d, "url", p, allow_empty=False)
        enum(d, "method", p, {"POST", "PUT"})
        json_object(d["headers"], f"{p}.headers")
        for hk, hv in d["headers"].items():
            expect(is_str(hv), f"{p}.headers.{hk}", "header values must be strings")
    if "thread_id" in a:
        server_id(a["thread_id"], f"{path}.thread_id", "thread")
    if in_message:
        expect("thread_id" in a, path, "attachment embedded in a user message must carry thread_id")


# ------------------------------------------------------------------------------------------
# widgets (§13)

WIDGET_ROOTS = {"Card", "ListView", "Basic"}


def action_config(a, path):
    keys(a, path, ["type", "handler", "loadingBehavior", "streaming"], ["payload"])
    string(a, "type", path, allow_empty=False)
    enum(a, "handler", path, {"client", "server"})
    enum(a, "loadingBehavior", path, {"auto", "none", "self", "container"})
    expect(is_bool(a["streaming"]), f"{path}.streaming", "must be a bool")


def widget_component(c, path):
    json_object(c, path)
    expect(is_str(c.get("type")) and c["type"], f"{path}.type", "component needs a string type")
    for k, v in c.items():
        p = f"{path}.{k}"
        if k == "children":
            expect(isinstance(v, list), p, "children must be a list")
            for i, ch in enumerate(v):
                widget_component(ch, f"{p}[{i}]")
        elif k.endswith("Action"):
            action_config(v, p)
        elif k in ("confirm", "cancel") and isinstance(v, dict):
            keys(v, p, ["label", "action"])
            action_config(v["action"], f"{p}.action")
        elif k == "iconStart" or k == "iconEnd":
            icon(v, p)
    if c["type"] in ("Text", "Title", "Caption", "Markdown"):
        expect(is_str(c.get("value")), f"{path}.value", f"{c['type']} needs a string value")
    if c["type"] == "Button":
        expect("onClickAction" not in c or isinstance(c["onClickAction"], dict), path, "bad onClickAction")


def widget_root(w, path="widget"):
    json_object(w, path)
    expect(w.get("type") in WIDGET_ROOTS, f"{path}.type", f"root must be one of {WIDGET_ROOTS}, got {w.get('type')!r}")
    widget_component(w, path)


def find_component(w, comp_id):
    """Depth-first search for a component with the given id."""
    if isinstance(w, dict):
        if w.get("id") == comp_id:
            return w
        for ch in w.get("children", []) or []:
            r = find_component(ch, comp_id)
            if r is not None:
                return r
    return None


def find_actions(w, out=None):
    out = [] if out is None else out
    if isinstance(w, dict):
        for k, v in w.items():
            if k.endswith("Action") and isinstance(v, dict):
                out.append(v)
            elif k == "children":
                for ch in v:
                    find_actions(ch, out)
    return out


# ------------------------------------------------------------------------------------------
# items (§7)


def user_content(c, path):
    typ = c.get("type") if isinstance(c, dict) else None
    if typ == "input_text":
        keys(c, path, ["type", "text"])
        string(c, "text", path)
    elif typ == "input_tag":
        keys(c, path, ["type", "id", "text", "data", "interactive"], ["group"])
        string(c, "id", path)
        string(c, "text", path)
        json_object(c["data"], f"{path}.data")
        expect(is_bool(c["interactive"]), f"{path}.interactive", "must be a bool")
        if "group" in c:
            string(c, "group", path)
    else:
        fail(path, f"bad user content {c!r:.200}")


def source(s, path):
    typ = s.get("type") if isinstance(s, dict) else None
    common = ["description", "timestamp", "group"]
    if typ == "url":
        keys(s, path, ["type", "title", "url"], common + ["attribution"])
    elif typ == "file":
        keys(s, path, ["type", "title", "filename"], common)
    elif typ == "entity":
        keys(s, path, ["type", "title", "id", "interactive", "data"],
             common + ["icon", "label", "inline_label", "preview"])
        expect(is_bool(s["interactive"]), f"{path}.interactive", "must be a bool")
        json_object(s["data"], f"{path}.data")
        if "icon" in s:
            icon(s["icon"], f"{path}.icon")
    else:
        fail(path, f"bad source {s!r:.200}")
    string(s, "title", path)


def annotation(a, path):
    keys(a, path, ["type", "source"], ["index"])
    expect(a["type"] == "annotation", f"{path}.type", "must be 'annotation'")
    source(a["source"], f"{path}.source")
    if "index" in a:
        expect(is_int(a["index"]), f"{path}.index", "must be an int")


def assistant_content(c, path):
    keys(c, path, ["annotations", "text", "type"])
    expect(c["type"] == "output_text", f"{path}.type", f"must be output_text, got {c['type']!r}")
    string(c, "text", path)
    expect(isinstance(c["annotations"], list), f"{path}.annotations", "must be a list")
    for i, a in enumerate(c["annotations"]):
        annotation(a, f"{path}.annotations[{i}]")


def answer(a, path):
    keys(a, path, ["values", "skipped"])
    expect(isinstance(a["values"], list) and all(is_str(v) for v in a["values"]), f"{path}.values",
           "must be a list of strings")
    expect(is_bool(a["skipped"]), f"{path}.skipped", "must be a bool")


def structured_input_question(q, path):
    typ = q.get("type") if isinstance(q, dict) else None
    if typ == "multiple_choice":
        keys(q, path, ["type", "id", "question", "options", "multiple"], ["answer"])
        expect(isinstance(q["options"], list), f"{path}.options", "must be a list")
        for i, o in enumerate(q["options"]):
            keys(o, f"{path}.options[{i}]", ["value"])
            string(o, "value", f"{path}.options[{i}]")
        expect(is_bool(q["multiple"]), f"{path}.multiple", "must be a bool")
    elif typ == "freeform":
        keys(q, path, ["type", "id", "question"], ["answer", "description"])
        if "description" in q:
            string(q, "description", path)
    else:
        fail(path, f"bad structured input {q!r:.200}")
    string(q, "id", path, allow_empty=False)
    string(q, "question", path)
    if "answer" in q:
        answer(q["answer"], f"{path}.answer")


TASK_FIELDS = {
    "custom": (["type", "status_indicator"], ["title", "icon", "content"]),
    "web_search": (["type", "status_indicator", "queries", "sources"], ["title", "title_query"]),
    "thought": (["type", "status_indicator", "content"], ["title"]),
    "file": (["type", "status_indicator", "sources"], ["title"]),
    "image": (["type", "status_indicator"], ["title"]),
}


def task(t, path):
    typ = t.get("type") if isinstance(t, dict) else None
    expect(typ in TASK_FIELDS, f"{path}.type", f"bad task type {typ!r}")
    req, opt = TASK_FIELDS[typ]
    keys(t, path, req, opt)
    enum(t, "status_indicator", path, {"none", "loading", "complete"})
    if "icon" in t:
        icon(t["icon"], f"{path}.icon")
    for k in ("sources",):
        if k in t:
            for i, s in enumerate(t[k]):
                source(s, f"{path}.{k}[{i}]")


def workflow(w, path):
    keys(w, path, ["type", "tasks", "expanded"], ["summary"])
    enum(w, "type", path, {"custom", "reasoning"})
    expect(is_bool(w["expanded"]), f"{path}.expanded", "must be a bool")
    for i, t in enumerate(w["tasks"]):
        task(t, f"{path}.tasks[{i}]")
    if "summary" in w:
        s = w["summary"]
        if "duration" in s:
            keys(s, f"{path}.summary", ["duration"])
            expect(is_int(s["duration"]), f"{path}.summary.duration", "must be an int")
        else:
            keys(s, f"{path}.summary", ["title"], ["icon"])


ITEM_FIELDS = {
    "user_message": (["content", "attachments", "inference_options"], ["quoted_text"]),
    "assistant_message": (["content"], []),
    "client_tool_call": (["status", "call_id", "name", "arguments"], ["output"]),
    "widget": (["widget"], ["copy_text"]),
    "generated_image": ([], ["image"]),
    "structured_input": (["status", "inputs"], []),
    "workflow": (["workflow"], []),
    "task": (["task"], []),
    "end_of_turn": ([], []),
}


def item(it, path="item", thread_id=None):
    json_object(it, path)
    typ = it.get("type")
    expect(typ not in HIDDEN_ITEM_TYPES, f"{path}.type", f"hidden item type {typ!r} leaked to the client")
    expect(typ in ITEM_FIELDS, f"{path}.type", f"unknown item type {typ!r}")
    req, opt = ITEM_FIELDS[typ]
    keys(it, path, ["id", "thread_id", "created_at", "type"] + req, opt)
    kind = {"user_message": "message", "assistant_message": "message", "widget": "message",
            "client_tool_call": "tool_call"}.get(typ)
    server_id(it["id"], f"{path}.id", kind)
    server_id(it["thread_id"], f"{path}.thread_id", "thread")
    if thread_id is not None:
        expect(it["thread_id"] == thread_id, f"{path}.thread_id", f"{it['thread_id']} != {thread_id}")
    timestamp(it["created_at"], f"{path}.created_at")

    if typ == "user_message":
        expect(isinstance(it["content"], list), f"{path}.content", "must be a list")
        for i, c in enumerate(it["content"]):
            user_content(c, f"{path}.content[{i}]")
        expect(isinstance(it["attachments"], list), f"{path}.attachments", "must be a list")
        for i, a in enumerate(it["attachments"]):
            attachment(a, f"{path}.attachments[{i}]", in_message=True)
            expect(a["thread_id"] == it["thread_id"], f"{path}.attachments[{i}].thread_id",
                   "attachment thread_id must be the message's thread")
        io = it["inference_options"]
        keys(io, f"{path}.inference_options", [], ["tool_choice", "model"])
        if "tool_choice" in io:
            keys(io["tool_choice"], f"{path}.inference_options.tool_choice", ["id"])
            string(io["tool_choice"], "id", f"{path}.inference_options.tool_choice")
        if "model" in io:
            string(io, "model", f"{path}.inference_options")
        if "quoted_text" in it:
            string(it, "quoted_text", path)
    elif typ == "assistant_message":
        expect(isinstance(it["content"], list), f"{path}.content", "must be a list")
        for i, c in enumerate(it["content"]):
            assistant_content(c, f"{path}.content[{i}]")
    elif typ == "client_tool_call":
        enum(it, "status", path, {"pending", "completed"})
        string(it, "call_id", path, allow_empty=False)
        string(it, "name", path, allow_empty=False)
        json_object(it["arguments"], f"{path}.arguments")
        if it["status"] == "pending":
            expect("output" not in it, path, "a pending tool call has no output")
    elif typ == "widget":
        widget_root(it["widget"], f"{path}.widget")
        if "copy_text" in it:
            string(it, "copy_text", path)
    elif typ == "generated_image":
        if "image" in it:
            keys(it["image"], f"{path}.image", ["id", "url"])
    elif typ == "structured_input":
        enum(it, "status", path, {"pending", "answered", "skipped"})
        expect(isinstance(it["inputs"], list), f"{path}.inputs", "must be a list")
        for i, q in enumerate(it["inputs"]):
            structured_input_question(q, f"{path}.inputs[{i}]")
            if it["status"] == "pending":
                expect("answer" not in q, f"{path}.inputs[{i}]", "pending input has no answer")
            else:
                expect("answer" in q, f"{path}.inputs[{i}]", "an answered/skipped item has an answer per input")
    elif typ == "workflow":
        workflow(it["workflow"], f"{path}.workflow")
    elif typ == "task":
        task(it["task"], f"{path}.task")
    no_nulls(it, path)
    return it


# ------------------------------------------------------------------------------------------
# threads and pages (§6)

EMPTY_PAGE = {"data": [], "has_more": False}


def page(p, path, elem):
    keys(p, path, ["data", "has_more"], ["after"])
    expect(isinstance(p["data"], list), f"{path}.data", "must be a list")
    expect(is_bool(p["has_more"]), f"{path}.has_more", "must be a bool")
    for i, e in enumerate(p["data"]):
        elem(e, f"{path}.data[{i}]")
    if p["has_more"]:
        expect("after" in p, path, "has_more is true but no 'after' cursor")
        string(p, "after", path, allow_empty=False)
    else:
        expect("after" not in p, path, "'after' must be absent when has_more is false")
    no_nulls(p, path)
    return p


def thread(t, path="thread", with_items=False):
    keys(t, path, ["id", "created_at", "status", "metadata", "items"], ["title", "allowed_image_domains"])
    server_id(t["id"], f"{path}.id", "thread")
    timestamp(t["created_at"], f"{path}.created_at")
    st = t["status"]
    expect(isinstance(st, dict) and st.get("type") in ("active", "locked", "closed"), f"{path}.status",
           f"bad status {st!r}")
    keys(st, f"{path}.status", ["type"], [] if st["type"] == "active" else ["reason"])
    expect(t["metadata"] == {}, f"{path}.metadata", "thread metadata is always sent as {}")
    if "title" in t:
        string(t, "title", path)
    if "allowed_image_domains" in t:
        expect(isinstance(t["allowed_image_domains"], list), f"{path}.allowed_image_domains", "must be a list")
    if with_items:
        page(t["items"], f"{path}.items", lambda e, p: item(e, p, thread_id=t["id"]))
    else:
        expect(t["items"] == EMPTY_PAGE, f"{path}.items", f"must be an empty page, got {t['items']!r:.200}")
    no_nulls(t, path)
    return t


def thread_page(p, path="page"):
    return page(p, path, lambda e, pp: thread(e, pp))


def item_page(p, path="page", thread_id=None):
    return page(p, path, lambda e, pp: item(e, pp, thread_id=thread_id))


def error_body(b, path="error"):
    keys(b, path, ["error", "code"])
    string(b, "error", path, allow_empty=False)
    string(b, "code", path, allow_empty=False)
    expect(re.match(r"^[a-z_.]+$", b["code"]), f"{path}.code", f"bad error slug {b['code']!r}")
    return b


# ------------------------------------------------------------------------------------------
# events (§4) and updates (§5)


def update(u, path):
    typ = u.get("type") if isinstance(u, dict) else None
    if typ in ("assistant_message.content_part.added", "assistant_message.content_part.done"):
        keys(u, path, ["type", "content_index", "content"])
        expect(is_int(u["content_index"]) and u["content_index"] >= 0, f"{path}.content_index", "must be an int >= 0")
        assistant_content(u["content"], f"{path}.content")
    elif typ == "assistant_message.content_part.text_delta":
        keys(u, path, ["type", "content_index", "delta"])
        expect(is_int(u["content_index"]) and u["content_index"] >= 0, f"{path}.content_index", "must be an int >= 0")
        string(u, "delta", path)
    elif typ == "assistant_message.content_part.annotation_added":
        keys(u, path, ["type", "content_index", "annotation_index", "annotation"])
        expect(is_int(u["content_index"]), f"{path}.content_index", "must be an int")
        expect(is_int(u["annotation_index"]), f"{path}.annotation_index", "must be an int")
        annotation(u["annotation"], f"{path}.annotation")
    elif typ == "widget.streaming_text.value_delta":
        keys(u, path, ["type", "component_id", "delta", "done"])
        string(u, "component_id", path)
        string(u, "delta", path)
        expect(is_bool(u["done"]), f"{path}.done", "must be a bool")
    elif typ == "widget.root.updated":
        keys(u, path, ["type", "widget"])
        widget_root(u["widget"], f"{path}.widget")
    elif typ == "widget.component.updated":
        keys(u, path, ["type", "component_id", "component"])
        widget_component(u["component"], f"{path}.component")
    elif typ in ("workflow.task.added", "workflow.task.updated"):
        keys(u, path, ["type", "task_index", "task"])
        expect(is_int(u["task_index"]), f"{path}.task_index", "must be an int")
        task(u["task"], f"{path}.task")
    elif typ == "generated_image.updated":
        keys(u, path, ["type", "image"], ["progress"])
        keys(u["image"], f"{path}.image", ["id", "url"])
        if "progress" in u:
            expect(isinstance(u["progress"], (int, float)) and 0 <= u["progress"] <= 1, f"{path}.progress",
                   "must be a number in 0..1")
    else:
        fail(path, f"unknown update type {typ!r}")


def event(e, path="event"):
    json_object(e, path)
    typ = e.get("type")
    if typ in ("thread.created", "thread.updated"):
        keys(e, path, ["type", "thread"])
        thread(e["thread"], f"{path}.thread")
    elif typ in ("thread.item.added", "thread.item.done", "thread.item.replaced"):
        keys(e, path, ["type", "item"])
        item(e["item"], f"{path}.item")
    elif typ == "thread.item.updated":
        keys(e, path, ["type", "item_id", "update"])
        string(e, "item_id", path, allow_empty=False)
        update(e["update"], f"{path}.update")
    elif typ == "thread.item.removed":
        keys(e, path, ["type", "item_id"])
        string(e, "item_id", path, allow_empty=False)
    elif typ == "stream_options":
        keys(e, path, ["type", "stream_options"])
        keys(e["stream_options"], f"{path}.stream_options", ["allow_cancel"])
        expect(is_bool(e["stream_options"]["allow_cancel"]), f"{path}.stream_options.allow_cancel", "must be a bool")
    elif typ == "progress_update":
        keys(e, path, ["type", "text"], ["icon"])
        string(e, "text", path)
        if "icon" in e:
            icon(e["icon"], f"{path}.icon")
    elif typ == "client_effect":
        keys(e, path, ["type", "name", "data"])
        string(e, "name", path, allow_empty=False)
        json_object(e["data"], f"{path}.data")
    elif typ == "error":
        keys(e, path, ["type", "code", "allow_retry"], ["message"])
        enum(e, "code", path, {"stream.error", "custom"})
        expect(is_bool(e["allow_retry"]), f"{path}.allow_retry", "must be a bool")
        if e["code"] == "custom":
            expect("message" in e, path, "a custom error carries a message")
        if "message" in e:
            string(e, "message", path)
    elif typ == "notice":
        keys(e, path, ["type", "level", "message"], ["title"])
        enum(e, "level", path, {"info", "warning", "danger"})
        string(e, "message", path)
    else:
        fail(path, f"unknown event type {typ!r}")
    no_nulls(e, path)
    return e


def _apply_update(pending, upd, path):
    """Apply an assistant_message update to a pending copy (§5)."""
    content = pending["content"]
    typ = upd["type"]
    if not typ.startswith("assistant_message."):
        return
    idx = upd["content_index"]
    while len(content) <= idx:
        content.append({"annotations": [], "text": "", "type": "output_text"})
    if typ in ("assistant_message.content_part.added", "assistant_message.content_part.done"):
        if typ.endswith(".done"):
            expect(content[idx]["text"] == upd["content"]["text"], path,
                   f"content_part.done text {upd['content']['text']!r:.300} != accumulated deltas "
                   f"{content[idx]['text']!r:.300}")
        content[idx] = json.loads(json.dumps(upd["content"]))
    elif typ == "assistant_message.content_part.text_delta":
        content[idx]["text"] += upd["delta"]
    elif typ == "assistant_message.content_part.annotation_added":
        anns = content[idx]["annotations"]
        anns.insert(min(upd["annotation_index"], len(anns)), upd["annotation"])


def stream_consistency(events):
    """Checks across the events of one stream: one thread.created first, at most one
    stream_options, updates refer to pending items, deltas add up to the done item,
    item timestamps never decrease, one thread id throughout."""
    pending = {}
    done_ids = set()
    thread_id = None
    last_ts = None
    seen_stream_options = 0
    for i, e in enumerate(events):
        path = f"events[{i}]({e['type']})"
        typ = e["type"]
        if typ == "thread.created":
            expect(i == 0, path, "thread.created may only be the first event")
            thread_id = e["thread"]["id"]
            last_ts = e["thread"]["created_at"]
        elif typ == "thread.updated":
            if thread_id is not None:
                expect(e["thread"]["id"] == thread_id, path, "thread.updated for another thread")
        elif typ == "stream_options":
            seen_stream_options += 1
            expect(seen_stream_options == 1, path, "stream_options sent more than once")
        elif typ in ("thread.item.added", "thread.item.done", "thread.item.replaced"):
            it = e["item"]
            if thread_id is None:
                thread_id = it["thread_id"]
            expect(it["thread_id"] == thread_id, path, f"item of thread {it['thread_id']} in a stream of {thread_id}")
            if typ == "thread.item.added":
                expect(it["id"] not in pending and it["id"] not in done_ids, path, "item added twice")
                pending[it["id"]] = json.loads(json.dumps(it))
            elif typ == "thread.item.done":
                expect(it["id"] not in done_ids, path, f"item {it['id']} done twice")
                if it["id"] in pending:
                    p = pending.pop(it["id"])
                    expect(p["type"] == it["type"], path, "done item changed type")
                    expect(p["created_at"] == it["created_at"], path, "done item changed created_at")
                    if it["type"] == "assistant_message":
                        expect(p["content"] == it["content"], path,
                               f"done content {it['content']!r:.300} != streamed content {p['content']!r:.300}")
                done_ids.add(it["id"])
            if typ != "thread.item.replaced":
                if last_ts is not None:
                    expect(it["created_at"] >= last_ts, path,
                           f"created_at {it['created_at']} earlier than {last_ts}")
                last_ts = it["created_at"]
        elif typ == "thread.item.updated":
            upd = e["update"]
            if upd["type"].startswith("assistant_message."):
                expect(e["item_id"] in pending, path, f"update for item {e['item_id']} that is not pending")
                _apply_update(pending[e["item_id"]], upd, path)
    return True


def sync_action_reply(b, path="reply"):
    json_object(b, path)
    if b:
        keys(b, path, ["updated_item"])
        item(b["updated_item"], f"{path}.updated_item")
    return b


# JSON validators per non-streaming request type
def json_reply(req_type, body, params=None):
    params = params or {}
    tid = params.get("thread_id") if isinstance(params, dict) else None
    tid = tid if isinstance(tid, str) else None
    if req_type == "threads.get_by_id":
        thread(body, "reply", with_items=True)
    elif req_type == "threads.list":
        thread_page(body, "reply")
    elif req_type == "threads.update":
        thread(body, "reply")
    elif req_type in ("threads.delete", "items.feedback", "attachments.delete"):
        expect(body == {}, "reply", f"expected {{}}, got {body!r:.200}")
    elif req_type == "items.list":
        item_page(body, "reply", thread_id=tid)
    elif req_type == "attachments.create":
        attachment(body, "reply")
        expect("thread_id" not in body, "reply", "a new attachment has no thread_id")
    elif req_type == "input.transcribe":
        keys(body, "reply", ["text"])
        string(body, "text", "reply")
    elif req_type == "threads.sync_custom_action":
        sync_action_reply(body)
    else:
        fail("reply", f"no validator for JSON reply of {req_type!r}")
    no_nulls(body, "reply")
    return body


# ------------------------------------------------------------------------------------------
# raw JSON text checks


def check_compact_json(text, path="json"):
    """No whitespace outside strings; no \\u escape for a character >= 0x80 (non-ASCII must be
    raw UTF-8); no raw control characters inside strings."""
    in_str = False
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if in_str:
            if ch == "\\":
                nxt = text[i + 1] if i + 1 < n else ""
                if nxt == "u":
                    code = int(text[i + 2:i + 6], 16)
                    expect(code < 0x80, path,
                           f"non-ASCII character U+{code:04X} is \\u-escaped at offset {i} (must be raw UTF-8)")
                    i += 6
                    continue
                i += 2
                continue
            if ch == '"':
                in_str = False
            else:
                expect(ord(ch) >= 0x20, path, f"raw control character {ch!r} inside a string at offset {i}")
        else:
            if ch == '"':
                in_str = True
            else:
                expect(ch not in " \t\r\n", path, f"whitespace outside strings at offset {i}: not compact JSON")
        i += 1
    return True


def _no_dup_pairs(pairs):
    seen = set()
    for k, _ in pairs:
        if k in seen:
            raise AssertionError(f"duplicate key {k!r} in server JSON")
        seen.add(k)
    return dict(pairs)


def strict_loads(data):
    """Parse server JSON: UTF-8, no duplicate keys, no NaN/Infinity."""
    if isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("utf-8")

    def bad_const(c):
        raise AssertionError(f"non-JSON constant {c} in server output")

    return json.loads(data, object_pairs_hook=_no_dup_pairs, parse_constant=bad_const)


# ------------------------------------------------------------------------------------------
# event sequences and the demo model's turns

EMPTY_PART = {"annotations": [], "text": "", "type": "output_text"}


def token(e):
    """A short name per event, for matching event orders with regular expressions."""
    t = e["type"]
    if t in ("thread.item.added", "thread.item.done", "thread.item.replaced"):
        return t.split(".")[-1] + ":" + e["item"]["type"]
    if t == "thread.item.updated":
        u = e["update"]["type"]
        return {
            "assistant_message.content_part.added": "part.added",
            "assistant_message.content_part.text_delta": "delta",
            "assistant_message.content_part.done": "part.done",
        }.get(u, u)
    if t == "progress_update":
        return "progress"
    return t


def seq(events):
    return " ".join(token(e) for e in events)


# progress, then one streamed assistant message
DEMO_REPLY = r"progress added:assistant_message part.added( delta)+ part.done done:assistant_message"


def expect_seq(events, pattern):
    s = seq(events)
    expect(re.fullmatch(pattern, s), "events", f"event order\n  {s}\ndoes not match\n  {pattern}")


def demo_reply(events, start=0):
    """Check the demo's reply in events[start:]: progress (sparkle, "Analyzing your request..."),
    assistant added with content [], part.added(0, empty part), deltas, part.done(0, full part),
    done(full item). Returns the assistant item."""
    evs = events[start:]
    prog = [e for e in evs if e["type"] == "progress_update"]
    expect(len(prog) == 1, "events", f"expected one progress_update, got {len(prog)}")
    expect(prog[0].get("icon") == "sparkle" and prog[0]["text"] == "Analyzing your request...",
           "progress_update", f"unexpected {prog[0]!r}")
    added = [e for e in evs if e["type"] == "thread.item.added"]
    expect(len(added) == 1, "events", f"expected one thread.item.added, got {len(added)}")
    a = added[0]["item"]
    expect(a["type"] == "assistant_message", "added", "not an assistant_message")
    expect(a["content"] == [], "added.item.content", f"must be [] when added, got {a['content']!r:.200}")
    ups = [e for e in evs if e["type"] == "thread.item.updated" and e["item_id"] == a["id"]]
    expect(len(ups) >= 4, "events", f"expected part.added, deltas, part.done; got {len(ups)} updates")
    first, last = ups[0]["update"], ups[-1]["update"]
    expect(first == {"type": "assistant_message.content_part.added", "content_index": 0, "content": EMPTY_PART},
           "first update", f"{first!r}")
    deltas = [u["update"] for u in ups[1:-1]]
    expect(all(d["type"] == "assistant_message.content_part.text_delta" and d["content_index"] == 0
               for d in deltas), "updates", "middle updates must be text deltas of part 0")
    expect(len(deltas) >= 2, "updates", f"expected several text deltas, got {len(deltas)}")
    text = "".join(d["delta"] for d in deltas)
    expect(last == {"type": "assistant_message.content_part.done", "content_index": 0,
                    "content": {"annotations": [], "text": text, "type": "output_text"}},
           "last update", f"{last!r:.400}")
    done = [e for e in evs if e["type"] == "thread.item.done" and e["item"]["id"] == a["id"]]
    expect(len(done) == 1, "events", "assistant item not done exactly once")
    d = done[0]["item"]
    expect(d["content"] == [{"annotations": [], "text": text, "type": "output_text"}], "done.item.content",
           f"{d['content']!r:.400}")
    expect(d["created_at"] == a["created_at"] and d["thread_id"] == a["thread_id"], "done.item",
           "created_at/thread_id changed between added and done")
    return d


def reply_text(it):
    return "".join(c["text"] for c in it["content"])


def you_said(user_text):
    """Prefix of the demo's reply to user_text (first 200 bytes of it)."""
    b = user_text.encode("utf-8")[:200]
    return f'You said: "{b.decode("utf-8", "ignore")}". '
