/* The respawn fixture: writes "PID NANOSECONDS" (wall clock) to the file named by its
 * first argument, atomically (write then rename), then waits to be killed. */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    char temp[4096];
    snprintf(temp, sizeof temp, "%s.%d", argv[1], getpid());
    FILE *file = fopen(temp, "w");
    if (!file) return 1;
    fprintf(file, "%d %lld%09ld\n", getpid(), (long long)now.tv_sec, now.tv_nsec);
    fclose(file);
    rename(temp, argv[1]);
    for (;;) pause();
}
