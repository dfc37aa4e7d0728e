/* Native unit tests of the C amount rule: sdk/c/build.sh --test plugins/c/amount_limit */
#include <string.h>

#include "rulebox_test.h"

static const char *const reads[] = {"order.amount", "order.currency", NULL};
static const char *settings = "{\"max\":10000,\"review_above\":5000,\"currencies\":[\"EUR\",\"USD\"]}";

static rb_result eval(const char *input) { return rb_test_evaluate(input, reads, settings, NULL); }

int main(void) {
    rb_result r = eval("{\"order\":{\"amount\":20,\"currency\":\"EUR\"}}");
    RB_CHECK(r.verdict == RB_ALLOW);
    RB_CHECK(r.reasons_len == 0);
    RB_CHECK(r.has_score && r.score == 0.002);
    RB_CHECK_STR(r.output, "{\"amount\":20,\"max\":10000}");

    r = eval("{\"order\":{\"amount\":7250.5,\"currency\":\"USD\"}}");
    RB_CHECK(r.verdict == RB_REVIEW);
    RB_CHECK_STR(r.reasons[0], "amount 7250.5 needs review");

    r = eval("{\"order\":{\"amount\":12000,\"currency\":\"EUR\"}}");
    RB_CHECK(r.verdict == RB_DENY);
    RB_CHECK_STR(r.reasons[0], "amount 12000 over limit 10000");
    RB_CHECK(r.score == 1.2);

    r = eval("{\"order\":{\"amount\":10,\"currency\":\"JPY\"}}");
    RB_CHECK(r.verdict == RB_DENY);
    RB_CHECK_STR(r.reasons[0], "currency JPY is not accepted");
    RB_CHECK(!r.has_score);

    /* Bad input is the caller's: invalid-input, naming the fact. */
    r = eval("{\"order\":{\"amount\":\"lots\"}}");
    RB_CHECK(r.error == RB_INVALID_INPUT);
    RB_CHECK_STR(r.message, "fact `order.amount`: expected a number, found text");
    r = eval("{\"order\":{}}");
    RB_CHECK_STR(r.message, "missing fact `order.amount`");
    r = eval("{\"order\":{\"amount\":-0.5}}");
    RB_CHECK_STR(r.message, "order.amount -0.5 is negative");

    /* Bad settings are the rule's: they refuse the load, naming the setting. */
    RB_CHECK(rb_test_init(settings) == NULL);
    RB_CHECK_STR(rb_test_init("{\"maxx\":1}"),
                 "setting `maxx`: unknown field, expected `max`, `review_above` or `currencies`");
    RB_CHECK_STR(rb_test_init("{\"max\":\"many\"}"), "setting `max`: expected a number");
    RB_CHECK_STR(rb_test_init("{\"max\":"), "settings are not a JSON object: unexpected end");
    r = rb_test_evaluate("{\"order\":{\"amount\":1}}", reads, "{\"currencies\":[1]}", NULL);
    RB_CHECK(r.error == RB_FAILED);
    return rb_test_done();
}
