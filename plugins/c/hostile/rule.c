/*
 * A hostile C rule, for the host's containment tests: the `do` setting picks the attack.
 * `loop` spins forever, `hog` allocates and touches memory until it runs out, `trap` aborts
 * (C's closest thing to an uncaught exception), `smash` writes far outside its memory, and
 * `probe` tries to read host files and list the root.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rulebox_rule.h"

static volatile unsigned long sink;

static const char *probe_file(rb_ctx *cx, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return rb_str(cx, path, ": ", strerror(errno));
    char buf[65] = {0};
    size_t n = fread(buf, 1, 64, f);
    fclose(f);
    buf[n] = 0;
    return rb_str(cx, path, ": read ", buf);
}

void rule_evaluate(rb_ctx *cx) {
    const char *what = "loop";
    if (!rb_setting_string(cx, "do", &what)) return;
    if (strcmp(what, "loop") == 0) {
        for (unsigned long n = 0;; n++) sink = n;
    } else if (strcmp(what, "hog") == 0) {
        for (;;) {
            char *chunk = malloc(1 << 20);
            if (!chunk) abort();
            memset(chunk, 1, 1 << 20);
            sink += (unsigned long)chunk[4096];
        }
    } else if (strcmp(what, "trap") == 0) {
        abort();
    } else if (strcmp(what, "smash") == 0) {
        volatile char *far = (volatile char *)(uintptr_t)0xfffffff0u;
        *far = 1;
        rb_allow(cx);
    } else if (strcmp(what, "probe") == 0) {
        rb_deny(cx, probe_file(cx, "/etc/passwd"));
        rb_reason(cx, probe_file(cx, "/proc/self/environ"));
        rb_reason(cx, probe_file(cx, "../../../etc/hostname"));
        DIR *d = opendir("/");
        rb_reason(cx, d ? "/: listed" : rb_str(cx, "/: ", strerror(errno)));
        if (d) closedir(d);
    } else {
        rb_failed(cx, "unknown `do`: ", what);
    }
}
