/* Native unit tests of the C sanctions rule: sdk/c/build.sh --test plugins/c/sanctions_check
 * (runs in the rule's folder; the list is written to a temporary file). */
#include <stdio.h>
#include <stdlib.h>

#include "rulebox_test.h"

static const char *const reads[] = {"customer.country", "payment.beneficiary_country", NULL};

int main(void) {
    char path[] = "/tmp/rulebox-sanctions-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fputs("# sanctioned\nkp\n  IR  # Iran\n\n", f);
    fclose(f);
    char settings[128];
    snprintf(settings, sizeof settings, "{\"list\":\"%s\"}", path);

    /* Without init: read on the spot. */
    rb_result r = rb_test_evaluate("{\"customer\":{\"country\":\"ir\"}}", reads, settings, NULL);
    RB_CHECK(r.verdict == RB_DENY);
    RB_CHECK_STR(r.reasons[0], "customer.country IR is sanctioned");

    RB_CHECK(rb_test_init(settings) == NULL);
    r = rb_test_evaluate("{\"customer\":{\"country\":\"DE\"},\"payment\":{\"beneficiary_country\":\"KP\"}}",
                         reads, settings, NULL);
    RB_CHECK(r.verdict == RB_DENY);
    RB_CHECK(r.reasons_len == 1);
    RB_CHECK_STR(r.reasons[0], "payment.beneficiary_country KP is sanctioned");
    RB_CHECK_STR(r.output, "{\"sanctioned\":true}");
    /* After init the list is in memory: removing the file changes nothing. */
    remove(path);
    r = rb_test_evaluate("{\"customer\":{\"country\":\"FR\"}}", reads, settings, NULL);
    RB_CHECK(r.verdict == RB_ALLOW);
    RB_CHECK_STR(r.output, "{\"sanctioned\":false}");
    r = rb_test_evaluate("{\"payment\":{\"beneficiary_country\":\"FR\"}}", reads, settings, NULL);
    RB_CHECK_STR(r.message, "missing fact `customer.country`");

    /* A list over the 1 MiB cap is refused, not read whole. */
    char big[] = "/tmp/rulebox-sanctions-big-XXXXXX";
    FILE *b = fdopen(mkstemp(big), "w");
    for (int i = 0; i < (1 << 20) / 3 + 1; i++) fputs("KP\n", b);
    fclose(b);
    char big_settings[128];
    snprintf(big_settings, sizeof big_settings, "{\"list\":\"%s\"}", big);
    char want[160];
    snprintf(want, sizeof want, "cannot read sanctions list %s: larger than 1 MiB", big);
    RB_CHECK_STR(rb_test_init(big_settings), want);
    remove(big);

    const char *why = rb_test_init("{\"list\":\"/nonexistent/list.txt\"}");
    RB_CHECK_STR(why, "cannot read sanctions list /nonexistent/list.txt: not found or not readable");
    return rb_test_done();
}
