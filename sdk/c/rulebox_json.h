/* A bounded JSON reader for the C kit (settings, JSON facts, checking output); internal. */
#ifndef RULEBOX_JSON_H
#define RULEBOX_JSON_H

#include "rulebox_rule.h"

typedef enum {
    RB_JSON_NULL,
    RB_JSON_BOOL,
    RB_JSON_NUMBER,
    RB_JSON_STRING,
    RB_JSON_ARRAY,
    RB_JSON_OBJECT,
} rb_json_type;

typedef struct rb_json {
    rb_json_type type;
    bool boolean;
    double number;
    /* RB_JSON_STRING: the decoded text (NUL-terminated; `len` bytes, which may hold NULs). */
    const char *string;
    /* Strings: bytes; arrays and objects: members. */
    size_t len;
    /* Arrays and objects: the first member; members are chained by `next`. */
    const struct rb_json *child, *next;
    /* Object members: the key. */
    const char *key;
    /* The value's text in the source (for handing on nested values as JSON). */
    const char *raw;
    size_t raw_len;
} rb_json;

/* Parses `len` bytes of `text` into the context's arena; NULL with `*why` set when it is not
 * one JSON value, or nests deeper than 128. */
const rb_json *rb_json_parse(rb_ctx *cx, const char *text, size_t len, const char **why);
/* An object's member, NULL when absent. */
const rb_json *rb_json_get(const rb_json *object, const char *key);

/* A context whose arena is never freed (the kit's own, and native tests'). */
rb_ctx *rb_scratch_ctx(void);

#endif
