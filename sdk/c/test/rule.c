/* The C kit's own test rule: writes the number fact `x` back with rb_num, and the settings'
 * `echo` string back as a reason, so test_kit.c can check the kit's text and JSON handling
 * through the same path a rule takes. */
#include "rulebox_rule.h"

void rule_evaluate(rb_ctx *cx) {
    double x = 0;
    const char *echo = NULL;
    if (rb_fact_number_opt(cx, "x", &x) == RB_ERROR || !rb_setting_string(cx, "echo", &echo))
        return;
    rb_allow(cx, rb_num(cx, x));
    if (echo) rb_reason(cx, echo);
    rb_output(cx, "{\"x\":", rb_json_num(cx, x), ",\"echo\":", rb_json_str(cx, echo ? echo : ""), "}");
}
