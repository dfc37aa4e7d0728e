/* The C kit's text and JSON handling, natively: sdk/c/build.sh --test sdk/c/test */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rulebox_test.h"

static const char *const reads[] = {"x", NULL};

/* The shortest %.*e text that reads back as x, written without an exponent: what Rust's
 * Display writes, computed with the C library's correctly rounded printf and strtod. */
static void reference(double x, char *out, size_t cap) {
    char sci[64];
    int p = 1;
    for (; p <= 17; p++) {
        snprintf(sci, sizeof sci, "%.*e", p - 1, x);
        if (strtod(sci, NULL) == x) break;
    }
    char digits[32];
    size_t nd = 0;
    const char *c = sci;
    bool neg = *c == '-';
    if (neg) c++;
    for (; *c && *c != 'e'; c++)
        if (*c != '.') digits[nd++] = *c;
    int exp = atoi(c + 1) - (int)(nd - 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--, exp++;
    digits[nd] = 0;
    size_t o = 0;
    if (neg) out[o++] = '-';
    if (exp >= 0) {
        o += (size_t)snprintf(out + o, cap - o, "%s", digits);
        for (int i = 0; i < exp; i++) out[o++] = '0';
    } else if ((size_t)-exp < nd) {
        memcpy(out + o, digits, nd + exp);
        o += nd + exp;
        out[o++] = '.';
        o += (size_t)snprintf(out + o, cap - o, "%s", digits + nd + exp);
    } else {
        o += (size_t)snprintf(out + o, cap - o, "0.");
        for (size_t i = 0; i < (size_t)-exp - nd; i++) out[o++] = '0';
        o += (size_t)snprintf(out + o, cap - o, "%s", digits);
    }
    out[o] = 0;
}

static void check_num(double x) {
    static char want[400], input[64];
    reference(x, want, sizeof want);
    snprintf(input, sizeof input, "{\"x\":%.17g}", x);
    rb_result r = rb_test_evaluate(input, reads, NULL, NULL);
    if (!r.reasons[0] || strcmp(r.reasons[0], want) != 0)
        fprintf(stderr, "rb_num(%.17g): \"%s\", expected \"%s\"\n", x, r.reasons[0], want);
    RB_CHECK(r.reasons[0] && strcmp(r.reasons[0], want) == 0);
}

int main(void) {
    double fixed[] = {1, 0.1, 0.1 + 0.2, 7250.5, 12000, 1e21, 1e22, 1.5e-7, 5e-324, 2.2250738585072014e-308,
                      1.7976931348623157e308, 1.0 / 3, 9007199254740993.0, 123456789.123, -0.5, 100, 1e15, 1e16, 1e17};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) check_num(fixed[i]);
    /* Random bit patterns: every exponent, every mantissa. */
    srand(7);
    for (int i = 0; i < 20000; i++) {
        uint64_t bits = ((uint64_t)rand() << 42) ^ ((uint64_t)rand() << 21) ^ (uint64_t)rand();
        double x;
        memcpy(&x, &bits, sizeof x);
        if (x != x || x - x != 0) continue; /* NaN and infinities are not JSON */
        check_num(x);
    }
    rb_result r = rb_test_evaluate("{\"x\":-0.0}", reads, NULL, NULL);
    RB_CHECK_STR(r.reasons[0], "-0");
    /* In JSON output, an exponent where serde_json writes one. */
    const char *json[][2] = {{"1.5e-7", "1.5e-7"}, {"1e21", "1e21"}, {"0.00001", "0.00001"},
                             {"1.7976931348623157e308", "1.7976931348623157e308"},
                             {"1234567890123456.5", "1234567890123456.5"}, {"12e15", "1.2e16"}};
    for (size_t i = 0; i < sizeof json / sizeof *json; i++) {
        char input[64], want[64];
        snprintf(input, sizeof input, "{\"x\":%s}", json[i][0]);
        snprintf(want, sizeof want, "{\"x\":%s,\"echo\":\"\"}", json[i][1]);
        RB_CHECK_STR(rb_test_evaluate(input, reads, NULL, NULL).output, want);
    }

    /* Settings: escapes, unicode, surrogate pairs decode; output strings re-escape. */
    r = rb_test_evaluate("{}", reads, "{\"echo\":\"a\\\"b\\\\c\\n\\u00e9\\ud83d\\ude00\"}", NULL);
    RB_CHECK_STR(r.reasons[1], "a\"b\\c\n\xc3\xa9\xf0\x9f\x98\x80");
    RB_CHECK_STR(r.output, "{\"x\":0,\"echo\":\"a\\\"b\\\\c\\n\xc3\xa9\xf0\x9f\x98\x80\"}");

    /* Broken or hostile settings are the rule's failure, named, in bounded time. */
    const char *bad[] = {"{\"echo\":\"\\ud800\"}", "{\"echo\":\"x\"", "{\"echo\" \"x\"}",
                         "{\"echo\":01}", "[1,]", "{\"echo\":\"x\"} x", "nul", "\"\\q\""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        r = rb_test_evaluate("{}", reads, bad[i], NULL);
        RB_CHECK(r.error == RB_FAILED);
        RB_CHECK(r.message && strncmp(r.message, "settings are not a JSON object", 30) == 0);
    }
    /* Nesting deeper than 128 is refused, not recursed into. */
    size_t depth = 100000;
    char *deep = malloc(depth * 2 + 16);
    strcpy(deep, "{\"a\":");
    size_t o = strlen(deep);
    for (size_t i = 0; i < depth; i++) deep[o++] = '[';
    for (size_t i = 0; i < depth; i++) deep[o++] = ']';
    deep[o++] = '}';
    deep[o] = 0;
    r = rb_test_evaluate("{}", reads, deep, NULL);
    free(deep);
    RB_CHECK_STR(r.message, "settings are not a JSON object: nested deeper than 128");
    /* A mistyped fact is the input's fault. */
    r = rb_test_evaluate("{\"x\":\"7\"}", reads, NULL, NULL);
    RB_CHECK(r.error == RB_INVALID_INPUT);
    RB_CHECK_STR(r.message, "fact `x`: expected a number, found text");
    return rb_test_done();
}
