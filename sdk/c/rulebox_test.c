/* Native test support for C rules (see rulebox_test.h): builds a request as the host does
 * and stands in for the host's imports. */
#include "rulebox_test.h"
#include "rulebox_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kit.h"

/* The host's log: to stderr when RULEBOX_TEST_LOG is set. */
void __wasm_import_rulebox_rule_host_log(int32_t level, uint8_t *ptr, size_t len) {
    static const char *names[] = {"trace", "debug", "info", "warn", "error"};
    if (getenv("RULEBOX_TEST_LOG"))
        fprintf(stderr, "[%s] %.*s\n", level >= 0 && level < 5 ? names[level] : "?", (int)len,
                (const char *)ptr);
}

/* The host's `grants.read`: natively, the path is read as it is (as the Rust SDK's native
 * read_grant does). Fills the bindings' return area: a tag (0 ok, 1 error), then the bytes'
 * (or the message's) pointer and length, both malloc'd. */
void __wasm_import_rulebox_rule_grants_read(uint8_t *path, size_t len, uint8_t *ret) {
    char *name = malloc(len + 1);
    uint8_t *data = NULL;
    size_t size = 0;
    bool ok = false;
    if (name) {
        memcpy(name, path, len);
        name[len] = 0;
        FILE *f = fopen(name, "rb");
        if (f) {
            uint8_t chunk[4096];
            size_t got;
            ok = true;
            while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
                uint8_t *grown = realloc(data, size + got);
                if (!grown) {
                    ok = false;
                    break;
                }
                data = grown;
                memcpy(data + size, chunk, got);
                size += got;
            }
            ok = ok && !ferror(f);
            fclose(f);
        }
        free(name);
    }
    if (!ok) {
        free(data);
        static const char message[] = "cannot read the file";
        size = sizeof message - 1;
        data = malloc(size);
        if (data)
            memcpy(data, message, size);
        else
            size = 0;
    }
    ret[0] = ok ? 0 : 1;
    memcpy(ret + sizeof(void *), &data, sizeof data);
    memcpy(ret + 2 * sizeof(void *), &size, sizeof size);
}

/* Linked in by the bindings for the component's type section, which only Wasm has. */
void __component_type_object_force_link_kit(void) {}

static int checks, failures;

void rb_check_(bool ok, const char *what, const char *file, int line) {
    checks++;
    if (!ok) {
        failures++;
        fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
    }
}

void rb_check_str_(const char *got, const char *want, const char *what, const char *file,
                   int line) {
    checks++;
    if (!got || strcmp(got, want) != 0) {
        failures++;
        fprintf(stderr, "%s:%d: %s is \"%s\", expected \"%s\"\n", file, line, what,
                got ? got : "(null)", want);
    }
}

/* What results handed out hold, freed by rb_test_done (so the leak checker sees the kit's
 * leaks alone). */
static void **owned;
static size_t owned_len, owned_cap;

static void *own(void *p) {
    if (owned_len == owned_cap) {
        owned_cap = owned_cap ? owned_cap * 2 : 64;
        owned = realloc(owned, owned_cap * sizeof *owned);
        if (!owned) abort();
    }
    owned[owned_len++] = p;
    return p;
}

int rb_test_done(void) {
    for (size_t i = 0; i < owned_len; i++) free(owned[i]);
    free(owned);
    owned = NULL;
    owned_len = owned_cap = 0;
    fprintf(stderr, "%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}

static void die(const char *what, const char *why) {
    fprintf(stderr, "rb_test_evaluate: %s is not valid JSON: %s\n", what, why);
    exit(2);
}

static void set(kit_string_t *s, const char *text, size_t len) {
    s->ptr = malloc(len ? len : 1);
    memcpy(s->ptr, text, len);
    s->len = len;
}

static char *cstr(const kit_string_t *s) {
    char *c = own(malloc(s->len + 1));
    memcpy(c, s->ptr, s->len);
    c[s->len] = 0;
    return c;
}

/* The value at a dotted path, as the host finds it; NULL when absent. */
static const rb_json *at(const rb_json *doc, const char *path) {
    char key[256];
    while (doc && *path) {
        size_t n = strcspn(path, ".");
        if (n >= sizeof key) return NULL;
        memcpy(key, path, n);
        key[n] = 0;
        doc = rb_json_get(doc, key);
        path += n + (path[n] == '.');
    }
    return doc;
}

/* A JSON value as the host hands it to a rule: scalars directly, integers as integers,
 * arrays and objects as JSON text. */
static void to_value(const rb_json *j, rulebox_rule_types_value_t *v) {
    switch (j->type) {
    case RB_JSON_NULL: v->tag = RULEBOX_RULE_TYPES_VALUE_NULL; break;
    case RB_JSON_BOOL:
        v->tag = RULEBOX_RULE_TYPES_VALUE_BOOLEAN;
        v->val.boolean = j->boolean;
        break;
    case RB_JSON_NUMBER: {
        bool integral = strcspn(j->raw, ".eE") >= j->raw_len;
        char *end;
        char text[32] = {0};
        memcpy(text, j->raw, j->raw_len < 31 ? j->raw_len : 31);
        long long i = strtoll(text, &end, 10);
        if (integral && j->raw_len < 20 && *end == 0) {
            v->tag = RULEBOX_RULE_TYPES_VALUE_INTEGER;
            v->val.integer = i;
        } else {
            v->tag = RULEBOX_RULE_TYPES_VALUE_FLOAT;
            v->val.float_ = j->number;
        }
        break;
    }
    case RB_JSON_STRING:
        v->tag = RULEBOX_RULE_TYPES_VALUE_TEXT;
        set(&v->val.text, j->string, j->len);
        break;
    default:
        v->tag = RULEBOX_RULE_TYPES_VALUE_JSON;
        set(&v->val.json, j->raw, j->raw_len);
    }
}

static rb_verdict verdict_named(const char *name) {
    static const char *names[] = {"allow", "deny", "review", "abstain"};
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0) return (rb_verdict)i;
    fprintf(stderr, "rb_test_evaluate: upstream verdict `%s` is not allow, deny, review or abstain\n", name);
    exit(2);
}

rb_result rb_test_evaluate(const char *input, const char *const *reads, const char *settings,
                           const char *upstream) {
    rb_ctx *cx = rb_scratch_ctx();
    const char *why = NULL;
    const rb_json *doc = rb_json_parse(cx, input, strlen(input), &why);
    if (!doc) die("the input", why);

    kit_request_t req;
    memset(&req, 0, sizeof req);
    size_t n = 0;
    while (reads && reads[n]) n++;
    /* The bindings free a list only when it is not empty: none is allocated for none. */
    req.facts.ptr = n ? calloc(n, sizeof *req.facts.ptr) : NULL;
    for (size_t i = 0; i < n; i++) {
        const rb_json *v = at(doc, reads[i]);
        if (!v) continue;
        rulebox_rule_types_fact_t *f = &req.facts.ptr[req.facts.len++];
        set(&f->path, reads[i], strlen(reads[i]));
        to_value(v, &f->value);
    }
    if (!req.facts.len) {
        free(req.facts.ptr);
        req.facts.ptr = NULL;
    }
    if (upstream) {
        const rb_json *u = rb_json_parse(cx, upstream, strlen(upstream), &why);
        if (!u || u->type != RB_JSON_OBJECT) die("upstream", why ? why : "not an object");
        req.upstream.ptr = u->len ? calloc(u->len, sizeof *req.upstream.ptr) : NULL;
        for (const rb_json *m = u->child; m; m = m->next) {
            rulebox_rule_types_upstream_t *up = &req.upstream.ptr[req.upstream.len++];
            set(&up->rule, m->key, strlen(m->key));
            if (m->type != RB_JSON_STRING) die("upstream", "a verdict is not a string");
            up->decision.verdict = (uint8_t)verdict_named(m->string);
        }
    }
    if (!settings) settings = "{}";
    set(&req.settings, settings, strlen(settings));

    kit_decision_t dec;
    kit_rule_error_t err;
    memset(&dec, 0, sizeof dec);
    memset(&err, 0, sizeof err);
    rb_result r;
    memset(&r, 0, sizeof r);
    if (exports_kit_evaluate(&req, &dec, &err)) {
        r.verdict = (rb_verdict)dec.verdict;
        r.error = -1;
        r.has_score = dec.score.is_some;
        r.score = dec.score.val;
        r.reasons_len = dec.reasons.len;
        r.reasons = own(calloc(dec.reasons.len + 1, sizeof(char *)));
        for (size_t i = 0; i < dec.reasons.len; i++) r.reasons[i] = cstr(&dec.reasons.ptr[i]);
        if (dec.output.is_some) r.output = cstr(&dec.output.val);
        kit_decision_free(&dec);
    } else {
        r.verdict = RB_NO_DECISION;
        r.error = err.tag == RULEBOX_RULE_TYPES_RULE_ERROR_INVALID_INPUT ? RB_INVALID_INPUT
                                                                          : RB_FAILED;
        r.message = cstr(&err.val.failed);
        r.reasons = own(calloc(1, sizeof(char *)));
        kit_rule_error_free(&err);
    }
    return r;
}

const char *rb_test_init(const char *settings) {
    kit_string_t text, err;
    set(&text, settings, strlen(settings));
    if (exports_kit_init(&text, &err)) return NULL;
    char *why = cstr(&err);
    kit_string_free(&err);
    return why;
}
