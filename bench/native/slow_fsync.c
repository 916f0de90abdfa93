/* A disk whose flushes take time: fsync and fdatasync as the C library has
 * them, then a sleep of SMDP_BENCH_FSYNC_DELAY_US microseconds (default 2000).
 *
 * bench/group_commit.py preloads it (LD_PRELOAD) into the servers it starts,
 * to show what group commit does on storage where a flush costs what it costs
 * on a disk without a battery-backed write cache (about 1 to 10 ms), on a
 * machine whose virtual disk answers an fsync in a quarter of a millisecond.
 * The sleep is in the thread that asked for the flush, as a real disk's wait
 * would be. Bench only: never built into the package.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static long delay_us(void) {
    static long cached = -1;
    if (cached < 0) {
        const char *s = getenv("SMDP_BENCH_FSYNC_DELAY_US");
        cached = s ? atol(s) : 2000;
    }
    return cached;
}

static void pause_for_disk(void) {
    long us = delay_us();
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int rc = real(fd);
    pause_for_disk();
    return rc;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int rc = real(fd);
    pause_for_disk();
    return rc;
}
