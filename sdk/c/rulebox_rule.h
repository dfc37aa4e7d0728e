/*
 * Write rulebox rules in C.
 *
 * A rule is a C file that defines `rule_evaluate` (and, to load data once per bundle
 * revision, `rule_init`); `sdk/c/build.sh` compiles it with clang into a component that
 * implements wit/rule.wit. Everything goes through one context, `rb_ctx`: read facts and
 * settings, decide, or report an error. Functions that can fail return `false` (or
 * RB_ERROR) after recording the error in the context: return from the rule then.
 *
 *     #include "rulebox_rule.h"
 *
 *     void rule_evaluate(rb_ctx *cx) {
 *         double limit = 5000, amount;
 *         if (!rb_setting_number(cx, "max", &limit)) return;     // mistyped: failed
 *         if (!rb_fact_number(cx, "order.amount", &amount)) return; // missing: invalid-input
 *         if (amount > limit)
 *             rb_deny(cx, "amount ", rb_num(cx, amount), " over limit ", rb_num(cx, limit));
 *         else
 *             rb_allow(cx);
 *     }
 *
 * Strings are built by concatenation (`rb_deny(cx, "a", b, "c")`), not printf: printf pulls
 * in stdio, which imports WASI and makes every evaluation of the rule slower. Text the kit
 * returns (rb_num, rb_str, strings read from facts and settings) lives until the evaluation
 * ends. The same file compiles natively for unit tests: see rulebox_test.h.
 */
#ifndef RULEBOX_RULE_H
#define RULEBOX_RULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rb_ctx rb_ctx;

typedef enum rb_verdict {
    RB_ALLOW = 0,
    RB_DENY = 1,
    RB_REVIEW = 2,
    RB_ABSTAIN = 3,
    /* rb_upstream_verdict: the rule has no such upstream decision. */
    RB_NO_DECISION = -1,
} rb_verdict;

/* What the optional readers return. */
enum { RB_ERROR = -1, RB_ABSENT = 0, RB_FOUND = 1 };

/* The rule: decide (rb_allow, rb_deny, ...) or report an error (rb_invalid_input,
 * rb_failed). Returning with neither is reported as the rule's failure. */
void rule_evaluate(rb_ctx *cx);

/* Optional: runs once per bundle revision, at load, with the rule's settings and its
 * directory grants readable (load a list, a table). Every evaluation then starts from the
 * memory it left. Report trouble with rb_failed: the load is refused with that message.
 * Hosts that do not call it exist, so evaluate should load lazily when it finds nothing. */
void rule_init(rb_ctx *cx);

/* ---- facts: the input fields the rule declared in `reads` ------------------------------ */
/* Required readers: a missing or mistyped fact is invalid-input naming the path. Optional
 * readers (_opt) return RB_FOUND, RB_ABSENT (absent or null) or RB_ERROR (mistyped). */
bool rb_has_fact(rb_ctx *cx, const char *path);
bool rb_fact_number(rb_ctx *cx, const char *path, double *out);
int rb_fact_number_opt(rb_ctx *cx, const char *path, double *out);
bool rb_fact_int(rb_ctx *cx, const char *path, int64_t *out);
int rb_fact_int_opt(rb_ctx *cx, const char *path, int64_t *out);
int rb_fact_bool_opt(rb_ctx *cx, const char *path, bool *out);
bool rb_fact_string(rb_ctx *cx, const char *path, const char **out);
int rb_fact_string_opt(rb_ctx *cx, const char *path, const char **out);
/* The length of an array fact. */
int rb_fact_array_len_opt(rb_ctx *cx, const char *path, size_t *out);

/* ---- settings: the rule's settings from its bundle (a JSON object) --------------------- */
/* Each reader leaves *out as it was (the default) when the setting is absent or null, and
 * is the rule's failure ("setting `max`: expected a number") when it is mistyped. */
bool rb_setting_number(rb_ctx *cx, const char *key, double *out);
bool rb_setting_string(rb_ctx *cx, const char *key, const char **out);
/* An array of strings; *found tells whether it was there. */
bool rb_setting_strings(rb_ctx *cx, const char *key, const char *const **out, size_t *len,
                        bool *found);
/* Refuses settings other than `keys` (a NULL-terminated list), naming the first unknown. */
bool rb_settings_only(rb_ctx *cx, const char *const *keys);

/* ---- upstream decisions (rules this one depends on) ------------------------------------ */
rb_verdict rb_upstream_verdict(rb_ctx *cx, const char *rule);

/* ---- the decision ---------------------------------------------------------------------- */
/* Each sets the verdict and adds the concatenated arguments, if any, as one reason. */
#define rb_allow(cx, ...) rb_decide_(cx, RB_ALLOW, ##__VA_ARGS__, (const char *)0)
#define rb_deny(cx, ...) rb_decide_(cx, RB_DENY, ##__VA_ARGS__, (const char *)0)
#define rb_review(cx, ...) rb_decide_(cx, RB_REVIEW, ##__VA_ARGS__, (const char *)0)
#define rb_abstain(cx, ...) rb_decide_(cx, RB_ABSTAIN, ##__VA_ARGS__, (const char *)0)
/* One more reason. */
#define rb_reason(cx, ...) rb_reason_(cx, __VA_ARGS__, (const char *)0)
void rb_score(rb_ctx *cx, double score);
/* Output data handed to dependent rules and the caller: JSON text, checked. */
#define rb_output(cx, ...) rb_output_(cx, __VA_ARGS__, (const char *)0)

/* ---- errors ---------------------------------------------------------------------------- */
/* The input lacks or mistypes something the rule needs. */
#define rb_invalid_input(cx, ...) rb_error_(cx, 0, __VA_ARGS__, (const char *)0)
/* The rule could not reach a decision (bad settings, missing data). */
#define rb_failed(cx, ...) rb_error_(cx, 1, __VA_ARGS__, (const char *)0)
/* Whether an error has been reported. */
bool rb_errored(const rb_ctx *cx);

/* ---- text ------------------------------------------------------------------------------ */
/* A number as rulebox's other SDKs write it: the shortest text that reads back as the same
 * double, no exponent ("12000", "7250.5", "0.1"). */
const char *rb_num(rb_ctx *cx, double x);
const char *rb_int(rb_ctx *cx, int64_t x);
/* A number for JSON output: the same digits, with an exponent where serde_json writes one
 * (under 1e-5, from 1e16 on: "1.5e-7"), and null for NaN and infinities. */
const char *rb_json_num(rb_ctx *cx, double x);
/* A JSON string literal, quotes and escapes included. */
const char *rb_json_str(rb_ctx *cx, const char *s);
/* The concatenated arguments. */
#define rb_str(cx, ...) rb_str_(cx, __VA_ARGS__, (const char *)0)

/* ---- logging (the host's log, attributed to this rule) -------------------------------- */
typedef enum rb_level { RB_TRACE, RB_DEBUG, RB_INFO, RB_WARN, RB_ERROR_LEVEL } rb_level;
#define rb_log(cx, level, ...) rb_log_(cx, level, __VA_ARGS__, (const char *)0)

/* ---- memory ---------------------------------------------------------------------------- */
/* `size` bytes that live until the evaluation ends (NULL when memory runs out). */
void *rb_alloc(rb_ctx *cx, size_t size);

/* Implementation entry points of the macros above. */
void rb_decide_(rb_ctx *cx, rb_verdict verdict, ...);
void rb_reason_(rb_ctx *cx, ...);
void rb_output_(rb_ctx *cx, ...);
void rb_error_(rb_ctx *cx, int kind, ...);
const char *rb_str_(rb_ctx *cx, ...);
void rb_log_(rb_ctx *cx, rb_level level, ...);

#ifdef __cplusplus
}
#endif
#endif
