/* The physical floor: what this machine can do at best, with no supervisor logic.
 *
 *   floor STAMP_BINARY WORK_DIR
 *
 * prints, one "name value unit" per line:
 *   spawn-true     median time to posix_spawn /bin/true and reap it (waitpid), 200 runs
 *   death-pidfd    median time from SIGKILL to a pidfd saying the child is gone, 200 runs
 *   boot-100       time to posix_spawn 100 `sleep` processes, median of 10
 *   respawn        SIGKILL of the stamp fixture, noticed by pidfd, fixture spawned again,
 *                  until its new stamp: median of 20 (kill time to the stamp it writes)
 *
 *   floor scale N
 *
 * prints the floor of the scale workload for N `sleep` processes:
 *   spawn-N        time to posix_spawn N `sleep`s, each with a pipe for its output (as a
 *                  supervisor gives them; this process holds the read ends), and until
 *                  each has exec'd (its /proc/PID/exe is no longer this program)
 *   down-N         time to SIGTERM them all and reap them all
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static long long now_ns(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int compare(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static long long median(long long *values, int count) {
    qsort(values, count, sizeof *values, compare);
    return values[count / 2];
}

static pid_t spawn(char *const argv[]) {
    pid_t pid;
    if (posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) != 0) {
        perror("posix_spawn");
        exit(1);
    }
    return pid;
}

static int pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

/* The stamp the fixture wrote: "PID NANOSECONDS". */
static long long read_stamp(const char *path, pid_t expect) {
    for (;;) {
        FILE *file = fopen(path, "r");
        if (file) {
            int pid = 0;
            long long ns = 0;
            int got = fscanf(file, "%d %lld", &pid, &ns);
            fclose(file);
            if (got == 2 && pid == expect) return ns;
        }
        struct timespec pause = {0, 50000};
        nanosleep(&pause, NULL);
    }
}

/* Whether `pid` still runs this program (it has not exec'd yet). */
static int not_yet_execd(pid_t pid, const char *self) {
    char path[64], target[4096];
    snprintf(path, sizeof path, "/proc/%d/exe", (int)pid);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n < 0) return 0;
    target[n] = 0;
    return strcmp(target, self) == 0;
}

static int scale(int count) {
    pid_t *pids = calloc(count, sizeof *pids);
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (!pids || n < 0) return 1;
    self[n] = 0;
    long long began = now_ns(CLOCK_MONOTONIC);
    for (int i = 0; i < count; i++) {
        int out[2];
        if (pipe2(out, O_CLOEXEC) != 0) {
            perror("pipe2");
            return 1;
        }
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, out[1], 1);
        posix_spawn_file_actions_adddup2(&actions, out[1], 2);
        char *const argv_sleep[] = {"/bin/sleep", "3600", NULL};
        if (posix_spawn(&pids[i], argv_sleep[0], &actions, NULL, argv_sleep, environ) != 0) {
            perror("posix_spawn");
            return 1;
        }
        posix_spawn_file_actions_destroy(&actions);
        close(out[1]);
    }
    for (int i = 0; i < count; i++) {
        while (not_yet_execd(pids[i], self)) {
            struct timespec pause = {0, 100000};
            nanosleep(&pause, NULL);
        }
    }
    printf("spawn-%d %.2f ms\n", count, (now_ns(CLOCK_MONOTONIC) - began) / 1e6);
    began = now_ns(CLOCK_MONOTONIC);
    for (int i = 0; i < count; i++) kill(pids[i], SIGTERM);
    for (int i = 0; i < count; i++) waitpid(pids[i], NULL, 0);
    printf("down-%d %.2f ms\n", count, (now_ns(CLOCK_MONOTONIC) - began) / 1e6);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "scale") == 0) return scale(atoi(argv[2]));
    if (argc < 3) {
        fprintf(stderr, "usage: floor STAMP_BINARY WORK_DIR\n");
        return 2;
    }
    long long samples[200];

    for (int i = 0; i < 200; i++) {
        char *const argv_true[] = {"/bin/true", NULL};
        long long began = now_ns(CLOCK_MONOTONIC);
        pid_t pid = spawn(argv_true);
        waitpid(pid, NULL, 0);
        samples[i] = now_ns(CLOCK_MONOTONIC) - began;
    }
    printf("spawn-true %.3f ms\n", median(samples, 200) / 1e6);

    for (int i = 0; i < 200; i++) {
        char *const argv_sleep[] = {"/bin/sleep", "1000", NULL};
        pid_t pid = spawn(argv_sleep);
        int fd = pidfd_open(pid);
        long long began = now_ns(CLOCK_MONOTONIC);
        kill(pid, SIGKILL);
        struct pollfd wait_for = {fd, POLLIN, 0};
        poll(&wait_for, 1, -1);
        samples[i] = now_ns(CLOCK_MONOTONIC) - began;
        waitpid(pid, NULL, 0);
        close(fd);
    }
    printf("death-pidfd %.1f us\n", median(samples, 200) / 1e3);

    for (int round = 0; round < 10; round++) {
        pid_t pids[100];
        long long began = now_ns(CLOCK_MONOTONIC);
        for (int i = 0; i < 100; i++) {
            char *const argv_sleep[] = {"/bin/sleep", "1000", NULL};
            pids[i] = spawn(argv_sleep);
        }
        samples[round] = now_ns(CLOCK_MONOTONIC) - began;
        for (int i = 0; i < 100; i++) {
            kill(pids[i], SIGKILL);
            waitpid(pids[i], NULL, 0);
        }
    }
    printf("boot-100 %.2f ms\n", median(samples, 10) / 1e6);

    char stamp_file[4096];
    snprintf(stamp_file, sizeof stamp_file, "%s/floor.stamp", argv[2]);
    char *const argv_stamp[] = {argv[1], stamp_file, NULL};
    pid_t pid = spawn(argv_stamp);
    read_stamp(stamp_file, pid);
    for (int i = 0; i < 20; i++) {
        int fd = pidfd_open(pid);
        long long killed = now_ns(CLOCK_REALTIME);
        kill(pid, SIGKILL);
        struct pollfd wait_for = {fd, POLLIN, 0};
        poll(&wait_for, 1, -1);
        waitpid(pid, NULL, 0);
        close(fd);
        pid = spawn(argv_stamp);
        samples[i] = read_stamp(stamp_file, pid) - killed;
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    printf("respawn %.3f ms\n", median(samples, 20) / 1e6);
    return 0;
}
