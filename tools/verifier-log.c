// LD_PRELOAD shim: writes the verifier log of every BPF_PROG_LOAD of a program named $VLOG_PROG to
// $VLOG_DIR/<prog>.<n>.log, even when the load succeeds (aya asks for a log only after a failure).
// Level $VLOG_LEVEL, default 6 (2: every instruction walked with its state, which
// tools/verifier-profile.py reads; 4: the statistics). The buffer is the kernel's maximum (1 GiB,
// untouched pages cost nothing); 6.1 writes about 250 MB at level 2 for the program before issue 28.
// Build: gcc -shared -fPIC -o vlog.so tools/verifier-log.c -ldl (docs/DATAPLANE.md, "Verifier work").
#define _GNU_SOURCE
#include <dlfcn.h>
#include <linux/bpf.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

long syscall(long n, ...) {
    va_list ap; va_start(ap, n);
    long a1 = va_arg(ap, long), a2 = va_arg(ap, long), a3 = va_arg(ap, long),
         a4 = va_arg(ap, long), a5 = va_arg(ap, long);
    va_end(ap);
    static long (*real)(long, ...);
    if (!real) real = dlsym(RTLD_NEXT, "syscall");
    static int seq;
    const char *want = getenv("VLOG_PROG"), *dir = getenv("VLOG_DIR");
    if (n == SYS_bpf && a1 == BPF_PROG_LOAD && want && dir) {
        union bpf_attr *attr = (union bpf_attr *)a2;
        if (attr->log_size == 0 && strncmp(attr->prog_name, want, sizeof attr->prog_name) == 0) {
            size_t size = 0x3fffffff;
            char *buf = malloc(size);
            buf[0] = 0;
            const char *lv = getenv("VLOG_LEVEL"); attr->log_level = lv ? atoi(lv) : 2 | 4; attr->log_buf = (unsigned long)buf; attr->log_size = size;
            long r = real(n, a1, a2, a3, a4, a5);
            char path[512]; snprintf(path, sizeof path, "%s/%s.%d.log", dir, want, seq++);
            FILE *f = fopen(path, "w");
            if (f) { fputs(buf, f); fprintf(f, "\n@@ load returned %ld\n", r); fclose(f); }
            free(buf);
            attr->log_level = 0; attr->log_buf = 0; attr->log_size = 0;
            return r;
        }
    }
    return real(n, a1, a2, a3, a4, a5);
}
