/*
 * The example risk rule, in C: combines facts and, when it has them, upstream decisions into
 * a 0-100 risk score. Settings: `review_at` (default 50), `deny_at` (default 80).
 *
 * Reads `order.amount`, `customer.age_days`, `customer.verified`, `order.items` (array);
 * upstream (optional): `amount-limit` and `sanctions`. Decides as
 * plugins/examples/risk_score (Rust) does.
 */
#include <math.h>

#include "rulebox_rule.h"

typedef struct {
    rb_ctx *cx;
    double score;
    const char *factors; /* JSON array members, comma-separated */
    size_t count;
} tally;

static void add(tally *t, double points, const char *why) {
    rb_ctx *cx = t->cx;
    t->score += points;
    const char *factor = rb_json_str(cx, rb_str(cx, "+", rb_num(cx, points), " ", why));
    t->factors = t->count++ ? rb_str(cx, t->factors, ",", factor) : factor;
}

static bool read_settings(rb_ctx *cx, double *review_at, double *deny_at) {
    *review_at = 50;
    *deny_at = 80;
    return rb_setting_number(cx, "review_at", review_at) &&
           rb_setting_number(cx, "deny_at", deny_at);
}

void rule_init(rb_ctx *cx) {
    double review_at, deny_at;
    read_settings(cx, &review_at, &deny_at);
}

void rule_evaluate(rb_ctx *cx) {
    double review_at, deny_at, amount;
    int64_t age_days = 0;
    bool verified = false;
    size_t items = 0;
    if (!read_settings(cx, &review_at, &deny_at) ||
        !rb_fact_number(cx, "order.amount", &amount) ||
        rb_fact_int_opt(cx, "customer.age_days", &age_days) == RB_ERROR ||
        rb_fact_bool_opt(cx, "customer.verified", &verified) == RB_ERROR ||
        rb_fact_array_len_opt(cx, "order.items", &items) == RB_ERROR)
        return;
    if (age_days < 0 || age_days > 4294967295LL) {
        rb_invalid_input(cx, "fact `customer.age_days`: ", rb_int(cx, age_days),
                         " is out of range");
        return;
    }

    tally t = {cx, 0, "", 0};
    if (amount > 1000) add(&t, round(fmin(amount / 1000, 30)), "large amount");
    if (age_days < 30) add(&t, 20, "new customer");
    if (!verified) add(&t, 15, "unverified customer");
    if (items > 20) add(&t, 10, "many items");
    rb_verdict limit = rb_upstream_verdict(cx, "amount-limit");
    if (limit != RB_NO_DECISION && limit != RB_ALLOW) add(&t, 25, "amount-limit did not allow");
    if (rb_upstream_verdict(cx, "sanctions") == RB_DENY) add(&t, 100, "sanctions hit");
    double score = fmin(t.score, 100);
    const char *s = rb_num(cx, score);
    rb_log(cx, RB_DEBUG, "risk score ", s, " from ", rb_int(cx, (int64_t)t.count), " factors");
    if (score >= deny_at)
        rb_deny(cx, "risk score ", s, " at or above ", rb_num(cx, deny_at));
    else if (score >= review_at)
        rb_review(cx, "risk score ", s, " at or above ", rb_num(cx, review_at));
    else
        rb_allow(cx);
    rb_score(cx, score);
    /* Keys in order, as the Rust rule writes them. */
    rb_output(cx, "{\"factors\":[", t.factors, "],\"score\":", rb_json_num(cx, score), "}");
}
