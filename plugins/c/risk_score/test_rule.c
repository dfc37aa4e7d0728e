/* Native unit tests of the C risk rule: sdk/c/build.sh --test plugins/c/risk_score */
#include "rulebox_test.h"

static const char *const reads[] = {"order.amount", "customer.age_days", "customer.verified",
                                    "order.items", NULL};

int main(void) {
    rb_result r = rb_test_evaluate(
        "{\"order\":{\"amount\":80},\"customer\":{\"age_days\":900,\"verified\":true}}", reads,
        NULL, NULL);
    RB_CHECK(r.verdict == RB_ALLOW);
    RB_CHECK(r.score == 0);
    RB_CHECK_STR(r.output, "{\"factors\":[],\"score\":0}");

    /* New, unverified, 7 points of amount: 42; the amount rule's review adds 25. */
    r = rb_test_evaluate(
        "{\"order\":{\"amount\":7250,\"items\":[1,2]},\"customer\":{\"age_days\":12}}", reads,
        NULL, "{\"amount-limit\":\"review\"}");
    RB_CHECK(r.verdict == RB_REVIEW);
    RB_CHECK(r.score == 67);
    RB_CHECK_STR(r.reasons[0], "risk score 67 at or above 50");
    RB_CHECK_STR(r.output, "{\"factors\":[\"+7 large amount\",\"+20 new customer\","
                           "\"+15 unverified customer\",\"+25 amount-limit did not allow\"],\"score\":67}");

    /* A sanctions hit caps the score at 100. */
    r = rb_test_evaluate("{\"order\":{\"amount\":10},\"customer\":{\"verified\":true}}", reads,
                         "{\"deny_at\":90}", "{\"sanctions\":\"deny\",\"amount-limit\":\"allow\"}");
    RB_CHECK(r.verdict == RB_DENY);
    RB_CHECK_STR(r.reasons[0], "risk score 100 at or above 90");

    r = rb_test_evaluate("{\"order\":{\"amount\":10},\"customer\":{\"age_days\":-3}}", reads,
                         NULL, NULL);
    RB_CHECK(r.error == RB_INVALID_INPUT);
    RB_CHECK_STR(r.message, "fact `customer.age_days`: -3 is out of range");
    r = rb_test_evaluate("{\"order\":{\"amount\":10,\"items\":{\"a\":1}}}", reads, NULL, NULL);
    RB_CHECK(r.error == RB_INVALID_INPUT);
    RB_CHECK_STR(r.message, "fact `order.items`: expected an array");
    r = rb_test_evaluate("{\"order\":{\"amount\":10}}", reads, "{\"review_at\":\"high\"}", NULL);
    RB_CHECK(r.error == RB_FAILED);
    return rb_test_done();
}
