/*
 * The example sanctions rule, in C: denies when the customer's or the beneficiary's country
 * is on a list read through a read-only directory grant.
 *
 * Reads `customer.country` and `payment.beneficiary_country` (ISO codes). Settings: `list`
 * (path inside the sandbox, default `/data/sanctioned_countries.txt`: one code per line, `#`
 * comments). Like the Rust rule it reads the list once, in rule_init, and every evaluation
 * starts from the memory init left; a host that never calls init gets it read on the spot.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rulebox_rule.h"

#define MAX_LIST_BYTES (1 << 20)

typedef struct {
    char **codes;
    size_t len;
} list;

static list loaded;
static bool is_loaded;

/* One code per line, `#` comments, trimmed and upper-cased: into malloc'd memory, which
 * outlives init (the kit's text lives only until init returns). */
static void parse(const char *text, size_t n, list *out) {
    out->codes = NULL;
    out->len = 0;
    size_t cap = 0;
    for (size_t i = 0; i < n;) {
        size_t end = i;
        while (end < n && text[end] != '\n') end++;
        size_t a = i, b = end;
        for (size_t k = a; k < b; k++)
            if (text[k] == '#') { b = k; break; }
        while (a < b && isspace((unsigned char)text[a])) a++;
        while (b > a && isspace((unsigned char)text[b - 1])) b--;
        if (b > a) {
            if (out->len == cap) {
                cap = cap ? cap * 2 : 16;
                out->codes = realloc(out->codes, cap * sizeof(char *));
                if (!out->codes) abort();
            }
            char *code = malloc(b - a + 1);
            if (!code) abort();
            for (size_t k = 0; k < b - a; k++) code[k] = (char)toupper((unsigned char)text[a + k]);
            code[b - a] = 0;
            out->codes[out->len++] = code;
        }
        i = end + 1;
    }
}

static bool load(rb_ctx *cx, list *out) {
    const char *path = "/data/sanctioned_countries.txt";
    if (!rb_setting_string(cx, "list", &path)) return false;
    FILE *f = fopen(path, "rb");
    if (!f) {
        rb_failed(cx, "cannot read sanctions list ", path, ": not found or not readable");
        return false;
    }
    /* Read as it comes, up to the cap: a buffer the list's size, not the cap's (init's
     * memory is what every evaluation starts from). */
    char *text = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            char *grown = realloc(text, cap);
            if (!grown) abort();
            text = grown;
        }
        size_t got = fread(text + n, 1, cap - n, f);
        n += got;
        if (got == 0 || n > MAX_LIST_BYTES) break;
    }
    bool broken = ferror(f) != 0;
    fclose(f);
    if (broken || n > MAX_LIST_BYTES) {
        free(text);
        rb_failed(cx, "cannot read sanctions list ", path,
                  broken ? ": read error" : ": larger than 1 MiB");
        return false;
    }
    parse(text, n, out);
    free(text);
    return true;
}

void rule_init(rb_ctx *cx) { is_loaded = load(cx, &loaded); }

static void release(list *l) {
    for (size_t i = 0; i < l->len; i++) free(l->codes[i]);
    free(l->codes);
}

static bool listed(const list *l, const char *code) {
    for (size_t i = 0; i < l->len; i++)
        if (strcmp(l->codes[i], code) == 0) return true;
    return false;
}

static void check(rb_ctx *cx, const list *l);

void rule_evaluate(rb_ctx *cx) {
    if (is_loaded) {
        check(cx, &loaded);
        return;
    }
    list fresh;
    if (!load(cx, &fresh)) return;
    check(cx, &fresh);
    release(&fresh);
}

static void check(rb_ctx *cx, const list *l) {
    static const char *const paths[] = {"customer.country", "payment.beneficiary_country"};
    const char *hits[2];
    size_t nhits = 0;
    for (size_t i = 0; i < 2; i++) {
        const char *code;
        int got = rb_fact_string_opt(cx, paths[i], &code);
        if (got == RB_ERROR) return;
        if (got == RB_ABSENT) continue;
        char *upper = (char *)rb_str(cx, code);
        for (char *c = upper; *c; c++) *c = (char)toupper((unsigned char)*c);
        if (listed(l, upper)) hits[nhits++] = rb_str(cx, paths[i], " ", upper, " is sanctioned");
    }
    if (!rb_has_fact(cx, "customer.country")) {
        rb_invalid_input(cx, "missing fact `customer.country`");
        return;
    }
    if (!nhits) {
        rb_allow(cx);
        rb_output(cx, "{\"sanctioned\":false}");
        return;
    }
    rb_deny(cx, hits[0]);
    for (size_t i = 1; i < nhits; i++) rb_reason(cx, hits[i]);
    rb_output(cx, "{\"sanctioned\":true}");
}
