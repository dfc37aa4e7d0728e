/*
 * Native unit tests for C rules: build the rule with `sdk/c/build.sh --test RULE_DIR`, which
 * compiles rule.c with every test_*.c beside it (each with a main) for this machine and runs
 * them. A test hands the rule an input document as JSON, the fact paths the bundle would
 * declare in `reads`, settings and upstream verdicts, as the host would:
 *
 *     static const char *reads[] = {"order.amount", NULL};
 *     int main(void) {
 *         rb_result r = rb_test_evaluate("{\"order\":{\"amount\":7000}}", reads,
 *                                        "{\"max\":5000}", NULL);
 *         RB_CHECK(r.verdict == RB_DENY);
 *         RB_CHECK_STR(r.reasons[0], "amount 7000 over limit 5000");
 *         return rb_test_done();
 *     }
 */
#ifndef RULEBOX_TEST_H
#define RULEBOX_TEST_H

#include "rulebox_rule.h"

typedef struct rb_result {
    /* RB_ALLOW... when the rule decided, RB_NO_DECISION when it reported an error. */
    rb_verdict verdict;
    bool has_score;
    double score;
    size_t reasons_len;
    char **reasons;
    /* The output JSON, NULL when none. */
    char *output;
    /* -1 when it decided; RB_INVALID_INPUT or RB_FAILED, with `message`. */
    int error;
    char *message;
} rb_result;

enum { RB_INVALID_INPUT = 0, RB_FAILED = 1 };

/* Evaluates the rule on `input` (a JSON document) reading the NULL-terminated `reads`, with
 * `settings` (a JSON object, NULL for none) and `upstream` (a JSON object of rule name to
 * verdict, {"amount-limit": "deny"}; NULL for none). Malformed test JSON aborts the test. */
rb_result rb_test_evaluate(const char *input, const char *const *reads, const char *settings,
                           const char *upstream);
/* Runs the rule's rule_init with `settings`: NULL when it succeeded, else its error. */
const char *rb_test_init(const char *settings);

void rb_check_(bool ok, const char *what, const char *file, int line);
void rb_check_str_(const char *got, const char *want, const char *what, const char *file,
                   int line);
#define RB_CHECK(cond) rb_check_((cond), #cond, __FILE__, __LINE__)
#define RB_CHECK_STR(got, want) rb_check_str_((got), (want), #got, __FILE__, __LINE__)
/* Prints how many checks failed; returns main's exit code. */
int rb_test_done(void);

#endif
