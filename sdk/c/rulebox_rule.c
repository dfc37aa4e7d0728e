/*
 * The C kit's implementation: the component's `evaluate` and `init` exports (through the
 * bindings wit-bindgen generates for sdk/c/wit/kit.wit), a bounded JSON reader for settings
 * and JSON facts, and text helpers. No stdio: a rule built with this kit imports nothing but
 * rulebox:rule unless it reads files itself.
 */
#include "rulebox_rule.h"
#include "rulebox_json.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "kit.h"

/* ---- arena: everything the kit hands a rule lives until the evaluation ends ------------- */

typedef struct block {
    struct block *next;
    size_t used, size;
    _Alignas(16) unsigned char data[];
} block;

struct rb_ctx {
    const kit_request_t *req; /* NULL in rule_init */
    const char *settings_text;
    size_t settings_len;
    const rb_json *settings; /* parsed on first use */
    block *arena;
    int verdict; /* -1: none yet */
    bool has_score;
    double score;
    const char **reasons;
    size_t reasons_len, reasons_cap;
    const char *output;
    int error_kind; /* -1: none; 0 invalid-input; 1 failed */
    const char *error;
};

/* Memory running out ends the evaluation: the host reports its memory limit. */
static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) abort();
    return p;
}

void *rb_alloc(rb_ctx *cx, size_t size) {
    size = (size + 15) & ~(size_t)15;
    block *b = cx->arena;
    if (!b || b->size - b->used < size) {
        size_t cap = size > 4096 ? size : 4096;
        b = xmalloc(sizeof(block) + cap);
        b->size = cap;
        b->used = 0;
        b->next = cx->arena;
        cx->arena = b;
    }
    void *p = b->data + b->used;
    b->used += size;
    return p;
}

static void arena_free(rb_ctx *cx) {
    for (block *b = cx->arena, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    cx->arena = NULL;
}

static char *dup_n(rb_ctx *cx, const char *s, size_t n) {
    char *d = rb_alloc(cx, n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

/* A growable string in the arena. */
typedef struct {
    rb_ctx *cx;
    char *buf;
    size_t len, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->len + n + 1) cap *= 2;
        char *grown = rb_alloc(b->cx, cap);
        if (b->len) memcpy(grown, b->buf, b->len);
        b->buf = grown;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = 0;
}

static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static const char *concat(rb_ctx *cx, va_list ap) {
    sbuf b = {cx, NULL, 0, 0};
    sb_put(&b, "", 0);
    for (const char *s; (s = va_arg(ap, const char *));) sb_puts(&b, s);
    return b.buf;
}

/* ---- the exports ------------------------------------------------------------------------ */

/* Settings parsed by rule_init (or the first evaluation) stay parsed: after init the host
 * snapshots memory, so every evaluation starts with them. */
static rb_ctx keep_cx;
static const char *kept_text;
static size_t kept_len;
static const rb_json *kept_settings;

rb_ctx *rb_scratch_ctx(void) { return &keep_cx; }

__attribute__((weak)) void rule_init(rb_ctx *cx) { (void)cx; }

static const rb_json *settings(rb_ctx *cx) {
    if (cx->settings) return cx->settings;
    if (kept_settings && kept_len == cx->settings_len &&
        memcmp(kept_text, cx->settings_text, kept_len) == 0) {
        return cx->settings = kept_settings;
    }
    const char *why = NULL;
    const rb_json *parsed =
        rb_json_parse(&keep_cx, cx->settings_text, cx->settings_len, &why);
    if (!parsed || parsed->type != RB_JSON_OBJECT) {
        rb_failed(cx, "settings are not a JSON object", why ? ": " : "", why ? why : "");
        return NULL;
    }
    kept_text = dup_n(&keep_cx, cx->settings_text, cx->settings_len);
    kept_len = cx->settings_len;
    kept_settings = parsed;
    return cx->settings = parsed;
}

static void to_kit_string(kit_string_t *out, const char *s) {
    size_t n = strlen(s);
    out->ptr = xmalloc(n);
    memcpy(out->ptr, s, n);
    out->len = n;
}

bool exports_kit_init(kit_string_t *text, kit_string_t *err) {
    rb_ctx cx = {.settings_text = (const char *)text->ptr, .settings_len = text->len,
                 .verdict = -1, .error_kind = -1};
    if (settings(&cx)) rule_init(&cx);
    bool ok = cx.error_kind < 0;
    if (!ok) to_kit_string(err, cx.error);
    /* What init allocated through the kit stays: the rule may keep pointers into it. */
    if (cx.arena) {
        block *last = cx.arena;
        while (last->next) last = last->next;
        last->next = keep_cx.arena;
        keep_cx.arena = cx.arena;
    }
    kit_string_free(text);
    return ok;
}

bool exports_kit_evaluate(kit_request_t *request, kit_decision_t *ret, kit_rule_error_t *err) {
    rb_ctx cx = {.req = request, .settings_text = (const char *)request->settings.ptr,
                 .settings_len = request->settings.len, .verdict = -1, .error_kind = -1};
    rule_evaluate(&cx);
    bool ok = false;
    if (cx.error_kind >= 0) {
        if (cx.error_kind == 0) {
            err->tag = RULEBOX_RULE_TYPES_RULE_ERROR_INVALID_INPUT;
            to_kit_string(&err->val.invalid_input, cx.error);
        } else {
            err->tag = RULEBOX_RULE_TYPES_RULE_ERROR_FAILED;
            to_kit_string(&err->val.failed, cx.error);
        }
    } else if (cx.verdict < 0) {
        err->tag = RULEBOX_RULE_TYPES_RULE_ERROR_FAILED;
        to_kit_string(&err->val.failed,
                      "the rule returned without a verdict (rb_allow, rb_deny, rb_review or "
                      "rb_abstain) or an error");
    } else {
        ok = true;
        ret->verdict = (rulebox_rule_types_verdict_t)cx.verdict;
        ret->score.is_some = cx.has_score;
        ret->score.val = cx.score;
        ret->reasons.len = cx.reasons_len;
        ret->reasons.ptr = cx.reasons_len ? xmalloc(cx.reasons_len * sizeof(kit_string_t)) : NULL;
        for (size_t i = 0; i < cx.reasons_len; i++) to_kit_string(&ret->reasons.ptr[i], cx.reasons[i]);
        ret->output.is_some = cx.output != NULL;
        if (cx.output) to_kit_string(&ret->output.val, cx.output);
    }
    arena_free(&cx);
    kit_request_free(request);
    return ok;
}

/* ---- errors and the decision ------------------------------------------------------------ */

bool rb_errored(const rb_ctx *cx) { return cx->error_kind >= 0; }

static void set_error(rb_ctx *cx, int kind, const char *msg) {
    if (cx->error_kind >= 0) return; /* the first error is the one that counts */
    cx->error_kind = kind;
    cx->error = msg;
}

void rb_error_(rb_ctx *cx, int kind, ...) {
    va_list ap;
    va_start(ap, kind);
    set_error(cx, kind, concat(cx, ap));
    va_end(ap);
}

static void add_reason(rb_ctx *cx, const char *r) {
    if (cx->reasons_len == cx->reasons_cap) {
        size_t cap = cx->reasons_cap ? cx->reasons_cap * 2 : 4;
        const char **grown = rb_alloc(cx, cap * sizeof(char *));
        if (cx->reasons_len) memcpy(grown, cx->reasons, cx->reasons_len * sizeof(char *));
        cx->reasons = grown;
        cx->reasons_cap = cap;
    }
    cx->reasons[cx->reasons_len++] = r;
}

void rb_decide_(rb_ctx *cx, rb_verdict verdict, ...) {
    cx->verdict = verdict;
    va_list ap;
    va_start(ap, verdict);
    const char *reason = concat(cx, ap);
    va_end(ap);
    if (*reason) add_reason(cx, reason);
}

void rb_reason_(rb_ctx *cx, ...) {
    va_list ap;
    va_start(ap, cx);
    add_reason(cx, concat(cx, ap));
    va_end(ap);
}

void rb_score(rb_ctx *cx, double score) {
    cx->has_score = true;
    cx->score = score;
}

void rb_output_(rb_ctx *cx, ...) {
    va_list ap;
    va_start(ap, cx);
    const char *json = concat(cx, ap);
    va_end(ap);
    const char *why = NULL;
    if (!rb_json_parse(cx, json, strlen(json), &why)) {
        rb_failed(cx, "the rule's output is not JSON: ", why);
        return;
    }
    cx->output = json;
}

const char *rb_str_(rb_ctx *cx, ...) {
    va_list ap;
    va_start(ap, cx);
    const char *s = concat(cx, ap);
    va_end(ap);
    return s;
}

void rb_log_(rb_ctx *cx, rb_level level, ...) {
    va_list ap;
    va_start(ap, level);
    const char *s = concat(cx, ap);
    va_end(ap);
    kit_string_t msg = {(uint8_t *)s, strlen(s)};
    rulebox_rule_host_log((rulebox_rule_host_log_level_t)level, &msg);
}

/* ---- facts ------------------------------------------------------------------------------ */

static const rulebox_rule_types_value_t *fact(rb_ctx *cx, const char *path) {
    if (!cx->req) return NULL;
    size_t n = strlen(path);
    for (size_t i = 0; i < cx->req->facts.len; i++) {
        const rulebox_rule_types_fact_t *f = &cx->req->facts.ptr[i];
        if (f->path.len == n && memcmp(f->path.ptr, path, n) == 0) return &f->value;
    }
    return NULL;
}

static const char *kind_of(const rulebox_rule_types_value_t *v) {
    switch (v->tag) {
    case RULEBOX_RULE_TYPES_VALUE_BOOLEAN: return "a boolean";
    case RULEBOX_RULE_TYPES_VALUE_INTEGER:
    case RULEBOX_RULE_TYPES_VALUE_FLOAT: return "a number";
    case RULEBOX_RULE_TYPES_VALUE_TEXT: return "text";
    case RULEBOX_RULE_TYPES_VALUE_JSON: return "an array or object";
    default: return "null";
    }
}

/* RB_ABSENT for absent or null; RB_ERROR (invalid-input) when the tag is not `want`. */
static int fact_of(rb_ctx *cx, const char *path, const char *expected,
                   const rulebox_rule_types_value_t **out, bool (*accepts)(uint8_t)) {
    const rulebox_rule_types_value_t *v = fact(cx, path);
    if (!v || v->tag == RULEBOX_RULE_TYPES_VALUE_NULL) return RB_ABSENT;
    if (!accepts(v->tag)) {
        rb_invalid_input(cx, "fact `", path, "`: expected ", expected, ", found ", kind_of(v));
        return RB_ERROR;
    }
    *out = v;
    return RB_FOUND;
}

static bool required(rb_ctx *cx, const char *path, int got) {
    if (got == RB_ABSENT) rb_invalid_input(cx, "missing fact `", path, "`");
    return got == RB_FOUND;
}

static bool is_number(uint8_t t) {
    return t == RULEBOX_RULE_TYPES_VALUE_INTEGER || t == RULEBOX_RULE_TYPES_VALUE_FLOAT;
}
static bool is_integer(uint8_t t) { return t == RULEBOX_RULE_TYPES_VALUE_INTEGER; }
static bool is_bool(uint8_t t) { return t == RULEBOX_RULE_TYPES_VALUE_BOOLEAN; }
static bool is_text(uint8_t t) { return t == RULEBOX_RULE_TYPES_VALUE_TEXT; }
static bool is_json(uint8_t t) { return t == RULEBOX_RULE_TYPES_VALUE_JSON; }

bool rb_has_fact(rb_ctx *cx, const char *path) { return fact(cx, path) != NULL; }

int rb_fact_number_opt(rb_ctx *cx, const char *path, double *out) {
    const rulebox_rule_types_value_t *v;
    int got = fact_of(cx, path, "a number", &v, is_number);
    if (got == RB_FOUND)
        *out = v->tag == RULEBOX_RULE_TYPES_VALUE_INTEGER ? (double)v->val.integer : v->val.float_;
    return got;
}

bool rb_fact_number(rb_ctx *cx, const char *path, double *out) {
    return required(cx, path, rb_fact_number_opt(cx, path, out));
}

int rb_fact_int_opt(rb_ctx *cx, const char *path, int64_t *out) {
    const rulebox_rule_types_value_t *v;
    int got = fact_of(cx, path, "an integer", &v, is_integer);
    if (got == RB_FOUND) *out = v->val.integer;
    return got;
}

bool rb_fact_int(rb_ctx *cx, const char *path, int64_t *out) {
    return required(cx, path, rb_fact_int_opt(cx, path, out));
}

int rb_fact_bool_opt(rb_ctx *cx, const char *path, bool *out) {
    const rulebox_rule_types_value_t *v;
    int got = fact_of(cx, path, "a boolean", &v, is_bool);
    if (got == RB_FOUND) *out = v->val.boolean;
    return got;
}

int rb_fact_string_opt(rb_ctx *cx, const char *path, const char **out) {
    const rulebox_rule_types_value_t *v;
    int got = fact_of(cx, path, "text", &v, is_text);
    if (got == RB_FOUND) *out = dup_n(cx, (const char *)v->val.text.ptr, v->val.text.len);
    return got;
}

bool rb_fact_string(rb_ctx *cx, const char *path, const char **out) {
    return required(cx, path, rb_fact_string_opt(cx, path, out));
}

int rb_fact_array_len_opt(rb_ctx *cx, const char *path, size_t *out) {
    const rulebox_rule_types_value_t *v;
    int got = fact_of(cx, path, "an array", &v, is_json);
    if (got != RB_FOUND) return got;
    const char *why = NULL;
    const rb_json *j = rb_json_parse(cx, (const char *)v->val.json.ptr, v->val.json.len, &why);
    if (!j || j->type != RB_JSON_ARRAY) {
        rb_invalid_input(cx, "fact `", path, "`: expected an array", why ? ": " : "",
                         why ? why : "");
        return RB_ERROR;
    }
    *out = j->len;
    return RB_FOUND;
}

/* ---- settings --------------------------------------------------------------------------- */

/* The setting's value, NULL when absent or null (or the settings are broken: errored). */
static const rb_json *setting(rb_ctx *cx, const char *key) {
    const rb_json *all = settings(cx);
    if (!all) return NULL;
    const rb_json *v = rb_json_get(all, key);
    return v && v->type != RB_JSON_NULL ? v : NULL;
}

static bool mistyped(rb_ctx *cx, const char *key, const char *expected) {
    rb_failed(cx, "setting `", key, "`: expected ", expected);
    return false;
}

bool rb_setting_number(rb_ctx *cx, const char *key, double *out) {
    const rb_json *v = setting(cx, key);
    if (!v) return !rb_errored(cx);
    if (v->type != RB_JSON_NUMBER) return mistyped(cx, key, "a number");
    *out = v->number;
    return true;
}

bool rb_setting_string(rb_ctx *cx, const char *key, const char **out) {
    const rb_json *v = setting(cx, key);
    if (!v) return !rb_errored(cx);
    if (v->type != RB_JSON_STRING) return mistyped(cx, key, "a string");
    *out = v->string;
    return true;
}

bool rb_setting_strings(rb_ctx *cx, const char *key, const char *const **out, size_t *len,
                        bool *found) {
    *found = false;
    const rb_json *v = setting(cx, key);
    if (!v) return !rb_errored(cx);
    if (v->type != RB_JSON_ARRAY) return mistyped(cx, key, "an array of strings");
    const char **list = rb_alloc(cx, (v->len ? v->len : 1) * sizeof(char *));
    size_t i = 0;
    for (const rb_json *item = v->child; item; item = item->next) {
        if (item->type != RB_JSON_STRING) return mistyped(cx, key, "an array of strings");
        list[i++] = item->string;
    }
    *out = list;
    *len = i;
    *found = true;
    return true;
}

bool rb_settings_only(rb_ctx *cx, const char *const *keys) {
    const rb_json *all = settings(cx);
    if (!all) return false;
    for (const rb_json *m = all->child; m; m = m->next) {
        bool known = false;
        for (const char *const *k = keys; *k && !known; k++) known = strcmp(*k, m->key) == 0;
        if (known) continue;
        sbuf b = {cx, NULL, 0, 0};
        for (const char *const *k = keys; *k; k++) {
            if (k != keys) sb_puts(&b, *(k + 1) ? ", " : " or ");
            sb_puts(&b, "`");
            sb_puts(&b, *k);
            sb_puts(&b, "`");
        }
        rb_failed(cx, "setting `", m->key, "`: unknown field, expected ",
                  b.buf ? b.buf : "no settings");
        return false;
    }
    return true;
}

/* ---- upstream --------------------------------------------------------------------------- */

rb_verdict rb_upstream_verdict(rb_ctx *cx, const char *rule) {
    if (!cx->req) return RB_NO_DECISION;
    size_t n = strlen(rule);
    for (size_t i = 0; i < cx->req->upstream.len; i++) {
        const rulebox_rule_types_upstream_t *u = &cx->req->upstream.ptr[i];
        if (u->rule.len == n && memcmp(u->rule.ptr, rule, n) == 0)
            return (rb_verdict)u->decision.verdict;
    }
    return RB_NO_DECISION;
}

/* ---- text ------------------------------------------------------------------------------- */

const char *rb_int(rb_ctx *cx, int64_t x) {
    char buf[24], *p = buf + sizeof buf;
    uint64_t u = x < 0 ? 0 - (uint64_t)x : (uint64_t)x;
    *--p = 0;
    do *--p = (char)('0' + u % 10); while ((u /= 10));
    if (x < 0) *--p = '-';
    return dup_n(cx, p, (size_t)(buf + sizeof buf - 1 - p));
}

/* The exact decimal digits of a finite double ax > 0 (every double has a finite decimal
 * expansion, at most 767 significant digits): writes them to `digits` (no leading zeros,
 * NUL-terminated) and returns the decimal exponent `point` with ax = 0.DIGITS x 10^point.
 * ax = M x 2^E; for E < 0 that is M x 5^-E / 10^-E, an integer over a power of ten. */
#define LIMBS 90 /* 2^53 x 5^1074 < 2^2550 */
static int exact_digits(double ax, char *digits) {
    int e2;
    double frac = frexp(ax, &e2);
    uint64_t mant = (uint64_t)ldexp(frac, 53);
    e2 -= 53;
    /* An odd mantissa: the least work, and at most 767 digits (subnormals included). */
    while (mant % 2 == 0) mant >>= 1, e2++;
    uint32_t n[LIMBS] = {(uint32_t)mant, (uint32_t)(mant >> 32)};
    int len = 2, shift = 0;
    /* n *= f, `times` times */
    for (int k = e2 < 0 ? -e2 : e2; k > 0; k--) {
        uint64_t carry = 0, f = e2 < 0 ? 5 : 2;
        for (int i = 0; i < len; i++) {
            uint64_t v = (uint64_t)n[i] * f + carry;
            n[i] = (uint32_t)v;
            carry = v >> 32;
        }
        if (carry) n[len++] = (uint32_t)carry;
    }
    if (e2 < 0) shift = -e2;
    /* To decimal, nine digits at a time from the least significant end. */
    char rev[800];
    int nd = 0;
    while (len > 0) {
        uint64_t rem = 0;
        for (int i = len - 1; i >= 0; i--) {
            uint64_t cur = (rem << 32) | n[i];
            n[i] = (uint32_t)(cur / 1000000000u);
            rem = cur % 1000000000u;
        }
        while (len > 0 && n[len - 1] == 0) len--;
        for (int i = 0; i < 9 && (len > 0 || rem); i++) {
            rev[nd++] = (char)('0' + rem % 10);
            rem /= 10;
        }
    }
    for (int i = 0; i < nd; i++) digits[i] = rev[nd - 1 - i];
    digits[nd] = 0;
    return nd - shift;
}

/* Whether the decimal 0.DIGITS x 10^point reads back (strtod, correctly rounded) as x. */
static bool reads_back(const char *digits, int point, double x) {
    char buf[48];
    size_t n = strlen(digits);
    memcpy(buf, "0.", 2);
    memcpy(buf + 2, digits, n);
    char *end = buf + 2 + n;
    *end++ = 'e';
    int s = point < 0 ? -point : point;
    if (point < 0) *end++ = '-';
    char exp[8], *e = exp + sizeof exp;
    do *--e = (char)('0' + s % 10); while ((s /= 10));
    while (e < exp + sizeof exp) *end++ = *e++;
    *end = 0;
    return strtod(buf, NULL) == x;
}

/* The exact digits rounded to p (half to even), in `out`; the exponent may grow by one. */
static int round_to(const char *exact, int point, int p, char *out) {
    int n = (int)strlen(exact);
    memcpy(out, exact, (size_t)(p < n ? p : n));
    out[p < n ? p : n] = 0;
    if (p >= n) return point;
    bool up = exact[p] > '5';
    if (exact[p] == '5') {
        bool rest = false;
        for (int i = p + 1; i < n && !rest; i++) rest = exact[i] != '0';
        up = rest || (out[p - 1] - '0') % 2 == 1;
    }
    if (!up) return point;
    int i = p - 1;
    while (i >= 0 && out[i] == '9') out[i--] = '0';
    if (i >= 0) {
        out[i]++;
        return point;
    }
    memmove(out + 1, out, (size_t)p);
    out[0] = '1';
    out[p] = 0;
    return point + 1;
}

/* Shortest digits of x; Rust's Display layout, or serde_json's for JSON (an exponent for
 * magnitudes under 1e-5 or from 1e16 on, which keeps long digit runs out of JSON; null for
 * what JSON cannot hold). */
static const char *format_num(rb_ctx *cx, double x, bool json) {
    if (x != x || x == INFINITY || x == -INFINITY)
        return json ? "null" : x != x ? "NaN" : x > 0 ? "inf" : "-inf";
    bool neg = signbit(x);
    double ax = neg ? -x : x;
    char d[24] = "0";
    int point = 1; /* value = 0.D x 10^point */
    if (ax != 0) {
        /* The fewest digits that read back, correctly rounded: the closest such text. */
        char exact[800];
        int exact_point = exact_digits(ax, exact);
        for (int p = 1; p <= 17; p++) {
            point = round_to(exact, exact_point, p, d);
            if (reads_back(d, point, ax)) break;
        }
        size_t n = strlen(d);
        while (n > 1 && d[n - 1] == '0') d[--n] = 0;
    }
    /* Written out without an exponent, as Rust's Display writes doubles. */
    int nd = (int)strlen(d);
    sbuf b = {cx, NULL, 0, 0};
    if (neg) sb_puts(&b, "-");
    if (ax == 0) {
        sb_puts(&b, "0");
    } else if (json && (point > 16 || point < -4)) {
        sb_put(&b, d, 1);
        if (nd > 1) {
            sb_puts(&b, ".");
            sb_puts(&b, d + 1);
        }
        sb_puts(&b, "e");
        sb_puts(&b, rb_int(cx, point - 1));
    } else if (point >= nd) {
        sb_puts(&b, d);
        for (int i = nd; i < point; i++) sb_puts(&b, "0");
    } else if (point > 0) {
        sb_put(&b, d, (size_t)point);
        sb_puts(&b, ".");
        sb_puts(&b, d + point);
    } else {
        sb_puts(&b, "0.");
        for (int i = point; i < 0; i++) sb_puts(&b, "0");
        sb_puts(&b, d);
    }
    return b.buf;
}

const char *rb_num(rb_ctx *cx, double x) { return format_num(cx, x, false); }

const char *rb_json_num(rb_ctx *cx, double x) { return format_num(cx, x, true); }

const char *rb_json_str(rb_ctx *cx, const char *s) {
    static const char hex[] = "0123456789abcdef";
    sbuf b = {cx, NULL, 0, 0};
    sb_puts(&b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': sb_puts(&b, "\\\""); break;
        case '\\': sb_puts(&b, "\\\\"); break;
        case '\n': sb_puts(&b, "\\n"); break;
        case '\r': sb_puts(&b, "\\r"); break;
        case '\t': sb_puts(&b, "\\t"); break;
        default:
            if (*p < 0x20) {
                char u[7] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15], 0};
                sb_puts(&b, u);
            } else {
                sb_put(&b, (const char *)p, 1);
            }
        }
    }
    sb_puts(&b, "\"");
    return b.buf;
}
