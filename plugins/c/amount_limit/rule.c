/*
 * The example amount rule, in C: deny orders over a limit, send large ones to review.
 *
 * Reads `order.amount` (number) and optionally `order.currency`; settings: `max` (default
 * 5000), `review_above` (optional), `currencies` (optional allow-list). Decides exactly as
 * plugins/examples/amount_limit (Rust) does: tests/all/languages.rs checks it. Like the Rust
 * rule it checks its settings in rule_init, so bad settings refuse the load.
 */
#include <string.h>

#include "rulebox_rule.h"

typedef struct {
    double max;
    bool has_review_above;
    double review_above;
    bool has_currencies;
    const char *const *currencies;
    size_t currencies_len;
} settings;

static const char *const known[] = {"max", "review_above", "currencies", NULL};

static bool read_settings(rb_ctx *cx, settings *s) {
    s->max = 5000;
    s->review_above = -1;
    if (!rb_settings_only(cx, known) || !rb_setting_number(cx, "max", &s->max) ||
        !rb_setting_number(cx, "review_above", &s->review_above) ||
        !rb_setting_strings(cx, "currencies", &s->currencies, &s->currencies_len,
                            &s->has_currencies))
        return false;
    s->has_review_above = s->review_above != -1;
    return true;
}

void rule_init(rb_ctx *cx) {
    settings s;
    read_settings(cx, &s);
}

void rule_evaluate(rb_ctx *cx) {
    settings s;
    double amount;
    const char *currency;
    if (!read_settings(cx, &s) || !rb_fact_number(cx, "order.amount", &amount)) return;
    if (amount < 0) {
        rb_invalid_input(cx, "order.amount ", rb_num(cx, amount), " is negative");
        return;
    }
    int has_currency = rb_fact_string_opt(cx, "order.currency", &currency);
    if (has_currency == RB_ERROR) return;
    if (s.has_currencies && has_currency == RB_FOUND) {
        bool accepted = false;
        for (size_t i = 0; i < s.currencies_len && !accepted; i++)
            accepted = strcmp(s.currencies[i], currency) == 0;
        if (!accepted) {
            rb_deny(cx, "currency ", currency, " is not accepted");
            return;
        }
    }
    if (amount > s.max)
        rb_deny(cx, "amount ", rb_num(cx, amount), " over limit ", rb_num(cx, s.max));
    else if (s.has_review_above && amount > s.review_above)
        rb_review(cx, "amount ", rb_num(cx, amount), " needs review");
    else
        rb_allow(cx);
    rb_score(cx, amount / s.max);
    rb_output(cx, "{\"amount\":", rb_json_num(cx, amount), ",\"max\":", rb_json_num(cx, s.max), "}");
}
