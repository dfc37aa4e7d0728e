/* A bounded JSON reader for the C kit: RFC 8259 values, nesting up to 128 deep, numbers
 * through strtod, strings decoded to UTF-8 (\u escapes and surrogate pairs included). */
#include "rulebox_json.h"

#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 128

typedef struct {
    rb_ctx *cx;
    const char *p, *end;
    const char *why;
    int depth;
} parser;

static bool fail(parser *ps, const char *why) {
    if (!ps->why) ps->why = why;
    return false;
}

static void skip_ws(parser *ps) {
    while (ps->p < ps->end &&
           (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static bool literal(parser *ps, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
        return fail(ps, "unexpected character");
    ps->p += n;
    return true;
}

static int hex4(const char *s) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return -1;
    }
    return v;
}

static size_t put_utf8(char *out, unsigned cp) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* At the opening quote. */
static bool string(parser *ps, const char **out, size_t *len) {
    const char *s = ++ps->p, *q = s;
    /* Room for this string alone (decoded, it is never longer than its source). */
    while (q < ps->end && *q != '"') q += *q == '\\' ? 2 : 1;
    if (q > ps->end) q = ps->end;
    char *buf = rb_alloc(ps->cx, (size_t)(q - s) + 1), *o = buf;
    while (ps->p < ps->end && *ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p;
        if (c < 0x20) return fail(ps, "control character in a string");
        if (c != '\\') { *o++ = (char)c; ps->p++; continue; }
        if (ps->end - ps->p < 2) return fail(ps, "unterminated string");
        char e = ps->p[1];
        ps->p += 2;
        switch (e) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            if (ps->end - ps->p < 4) return fail(ps, "bad \\u escape");
            int cp = hex4(ps->p);
            if (cp < 0) return fail(ps, "bad \\u escape");
            ps->p += 4;
            if (cp >= 0xD800 && cp < 0xDC00) {
                int lo = ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u'
                             ? hex4(ps->p + 2) : -1;
                if (lo < 0xDC00 || lo > 0xDFFF) return fail(ps, "lone surrogate in a string");
                ps->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp < 0xE000) {
                return fail(ps, "lone surrogate in a string");
            }
            o += put_utf8(o, (unsigned)cp);
            break;
        }
        default: return fail(ps, "bad escape in a string");
        }
    }
    if (ps->p >= ps->end) return fail(ps, "unterminated string");
    ps->p++;
    *o = 0;
    *out = buf;
    *len = (size_t)(o - buf);
    return true;
}

static bool digits(parser *ps) {
    const char *s = ps->p;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
    return ps->p > s;
}

static bool number(parser *ps, double *out) {
    const char *s = ps->p;
    if (ps->p < ps->end && *ps->p == '-') ps->p++;
    if (ps->p < ps->end && *ps->p == '0') ps->p++;
    else if (!digits(ps)) return fail(ps, "bad number");
    if (ps->p < ps->end && *ps->p == '.') {
        ps->p++;
        if (!digits(ps)) return fail(ps, "bad number");
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-')) ps->p++;
        if (!digits(ps)) return fail(ps, "bad number");
    }
    /* strtod needs a terminator the source may lack. */
    size_t n = (size_t)(ps->p - s);
    char small[64], *copy = n < sizeof small ? small : rb_alloc(ps->cx, n + 1);
    memcpy(copy, s, n);
    copy[n] = 0;
    *out = strtod(copy, NULL);
    return true;
}

static bool value(parser *ps, rb_json *v);

static bool members(parser *ps, rb_json *v, bool object) {
    char close = object ? '}' : ']';
    if (++ps->depth > MAX_DEPTH) return fail(ps, "nested deeper than 128");
    ps->p++;
    skip_ws(ps);
    rb_json **tail = (rb_json **)&v->child;
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        ps->depth--;
        return true;
    }
    for (;;) {
        rb_json *m = rb_alloc(ps->cx, sizeof *m);
        memset(m, 0, sizeof *m);
        if (object) {
            skip_ws(ps);
            size_t klen;
            if (ps->p >= ps->end || *ps->p != '"') return fail(ps, "expected a key");
            if (!string(ps, &m->key, &klen)) return false;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') return fail(ps, "expected `:`");
            ps->p++;
        }
        if (!value(ps, m)) return false;
        *tail = m;
        tail = (rb_json **)&m->next;
        v->len++;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
        if (ps->p < ps->end && *ps->p == close) { ps->p++; break; }
        return fail(ps, object ? "expected `,` or `}`" : "expected `,` or `]`");
    }
    ps->depth--;
    return true;
}

static bool value(parser *ps, rb_json *v) {
    skip_ws(ps);
    if (ps->p >= ps->end) return fail(ps, "unexpected end");
    v->raw = ps->p;
    bool ok;
    switch (*ps->p) {
    case 'n': v->type = RB_JSON_NULL; ok = literal(ps, "null"); break;
    case 't': v->type = RB_JSON_BOOL; v->boolean = true; ok = literal(ps, "true"); break;
    case 'f': v->type = RB_JSON_BOOL; ok = literal(ps, "false"); break;
    case '"': v->type = RB_JSON_STRING; ok = string(ps, &v->string, &v->len); break;
    case '[': v->type = RB_JSON_ARRAY; ok = members(ps, v, false); break;
    case '{': v->type = RB_JSON_OBJECT; ok = members(ps, v, true); break;
    default: v->type = RB_JSON_NUMBER; ok = number(ps, &v->number); break;
    }
    v->raw_len = (size_t)(ps->p - v->raw);
    return ok;
}

const rb_json *rb_json_parse(rb_ctx *cx, const char *text, size_t len, const char **why) {
    parser ps = {cx, text, text + len, NULL, 0};
    rb_json *v = rb_alloc(cx, sizeof *v);
    memset(v, 0, sizeof *v);
    if (!value(&ps, v)) {
        *why = ps.why;
        return NULL;
    }
    skip_ws(&ps);
    if (ps.p != ps.end) {
        *why = "trailing characters after the value";
        return NULL;
    }
    return v;
}

const rb_json *rb_json_get(const rb_json *object, const char *key) {
    if (!object || object->type != RB_JSON_OBJECT) return NULL;
    for (const rb_json *m = object->child; m; m = m->next)
        if (strcmp(m->key, key) == 0) return m;
    return NULL;
}
